"""The JVM pieces the job loads: the Kafka connector jars and the project's helper classes.

``lib/`` holds them (``python -m job.dev.jars`` fetches and builds them; under ``flink run``
they come merged in ``--jarfile``). Every lookup of the helper classes (package
``io.inboxflow.flink``) goes through :func:`helper_classes`, which is written against the
py4j gateway of PyFlink 2.0.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name in lib/ -> (member inside the wheel, sha256)
CONNECTOR_JARS = {
    "flink-connector-kafka-4.0.1-2.0.jar": (
        "pyflink/lib/flink-connector-kafka.jar",
        "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
    ),
    "kafka-clients-3.9.1.jar": (
        "pyflink/lib/kafka-clients.jar",
        "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
    ),
    "lz4-java.jar": (
        "pyflink/lib/lz4-java.jar",
        "d74a3334fb35195009b338a951f918203d6bbca3d1d359033dc33edd1cadc9ef",
    ),
    "snappy-java-1.1.10.7.jar": (
        "pyflink/lib/snappy-java.jar",
        "4c766cb3f855415ee734b2392949a0b6f12a60879334a74518deaf6270d32e36",
    ),
    "zstd-jni-1.5.6-4.jar": (
        "pyflink/lib/zstd-jni.jar",
        "793ca8734aa15687e7e64564eab8b6ae9ee2720eae27aa663074682144b1c386",
    ),
}
HELPER_JAR = "inboxflow-flink-helpers.jar"


def jar_paths(lib_dir: Path) -> list[Path]:
    """Every jar the job loads through ``pipeline.jars``, in a stable order."""
    return [lib_dir / name for name in sorted(CONNECTOR_JARS)] + [lib_dir / HELPER_JAR]


def loaded_helper_classes():
    """The JVM package ``io.inboxflow.flink`` when the gateway thread's class loader can see
    the helper classes (probed with ``OutputRouter``), else None."""
    from py4j.java_gateway import JavaClass
    from pyflink.java_gateway import get_gateway

    package = get_gateway().jvm.io.inboxflow.flink
    return package if isinstance(package.OutputRouter, JavaClass) else None


def helper_classes(lib_dir: Path = ROOT / "lib"):
    """The JVM package ``io.inboxflow.flink`` of the PyFlink gateway, for building the job.

    py4j resolves a Java class through the context class loader of the gateway thread that
    serves the call, and PyFlink adds ``pipeline.jars`` to that loader, which has lacked them
    (docs/DESIGN.md#helper-classes): when they are missing, the jars are added to the
    serving thread's loader again before giving up. Under ``flink run`` they come with
    ``--jarfile`` and nothing is added."""
    package = loaded_helper_classes()
    if package is not None:
        return package
    if "PYFLINK_GATEWAY_PORT" not in os.environ:
        import logging

        from pyflink.util.java_utils import add_jars_to_context_class_loader

        logging.getLogger("inboxflow").warning(
            "the gateway's class loader lacked %s: adding the jars of %s again", HELPER_JAR, lib_dir
        )
        add_jars_to_context_class_loader([j.as_uri() for j in jar_paths(lib_dir)])
        package = loaded_helper_classes()
        if package is not None:
            return package
    raise SystemExit(
        f"the job's Java helper classes (io.inboxflow.flink) are not on the "
        f"classpath: run `make install` (lib/{HELPER_JAR}), or pass "
        f"`--jarfile var/package/inboxflow-job.jar` to flink run"
    )
