"""What a Flink cluster needs to run the job, and ``flink run`` around it.

``make package`` (``python -m job.submit``) builds ``var/package/inboxflow-job.zip`` (for
``-pyfs``) and ``var/package/inboxflow-job.jar`` (for ``--jarfile``); ``inboxflow submit``
runs ``flink run`` with them against any cluster's REST address.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / "var" / "flink"
PACKAGE_DIR = ROOT / "var" / "package"
JOB_ZIP = "inboxflow-job.zip"
JOB_JAR = "inboxflow-job.jar"
DEFAULT_PORT = 8081
# what the packaged archive holds: the job's code, its templates, conf (schemas, DDL) and the
# Flink settings job/main.py applies
PACKAGE_TREES = ("job", "udfs", "templates", "conf")
# development tools stay home: nothing the job runs imports them
PACKAGE_EXCLUDE = ("job/dev",)
PACKAGE_FILES = ("flink-conf.yaml",)
# the environment a standalone script must not inherit: it would point it at another
# installation (e.g. the wheel's own folder)
_FLINK_ENV = (
    "FLINK_HOME",
    "_FLINK_HOME_DETERMINED",
    "FLINK_CONF_DIR",
    "FLINK_LIB_DIR",
    "FLINK_OPT_DIR",
    "FLINK_PLUGINS_DIR",
    "FLINK_LOG_DIR",
    "FLINK_PID_DIR",
    "FLINK_BIN_DIR",
    "PYFLINK_GATEWAY_PORT",
)


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or used; the message says what to do."""


def script_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FLINK_ENV}
    env["FLINK_CONF_DIR"] = str(home / "conf")
    # the venv's bin first: `flink run -py` and the daemons find this Python
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def package(out_dir: Path = PACKAGE_DIR, lib_dir: Path = ROOT / "lib") -> dict[str, Path]:
    """``inboxflow-job.zip`` (for ``-pyfs``: job/, udfs/, templates/, conf/ with the schemas
    and the ClickHouse DDL, flink-conf.yaml) and ``inboxflow-job.jar`` (for ``--jarfile``:
    the Kafka connector, kafka-clients and its compression libraries, and the project's
    helper classes, merged into one jar)."""
    from job.jvm import jar_paths

    out_dir.mkdir(parents=True, exist_ok=True)
    jars = jar_paths(lib_dir)
    missing = [j.name for j in jars if not j.is_file()]
    if missing:
        raise ClusterError(
            f"missing jars in {lib_dir}: {', '.join(missing)} "
            f"(run `make install` or `python -m job.dev.jars`)"
        )
    archive = out_dir / JOB_ZIP
    tmp = archive.with_suffix(f".zip.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for tree in PACKAGE_TREES:
            for path in sorted((ROOT / tree).rglob("*")):
                name = path.relative_to(ROOT).as_posix()
                if (
                    path.is_file()
                    and "__pycache__" not in path.parts
                    and path.suffix not in (".pyc", ".pyo")
                    and not name.startswith(tuple(f"{d}/" for d in PACKAGE_EXCLUDE))
                ):
                    zf.write(path, name)
        for name in PACKAGE_FILES:
            zf.write(ROOT / name, name)
    tmp.replace(archive)
    jar = out_dir / JOB_JAR
    merge_jars(jars, jar)
    return {"pyfs": archive, "jarfile": jar}


def merge_jars(jars: list[Path], target: Path) -> None:
    """One jar holding every class and resource of ``jars`` (first one wins), with the
    service files under ``META-INF/services`` concatenated and signatures dropped."""
    seen: set[str] = set()
    services: dict[str, list[bytes]] = {}
    tmp = target.with_suffix(f".jar.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: inboxflow\n")
        seen.add("META-INF/MANIFEST.MF")
        for jar in jars:
            with zipfile.ZipFile(jar) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if info.is_dir() or name in seen:
                        continue
                    upper = name.upper()
                    if upper.startswith("META-INF/") and upper.endswith(
                        (".SF", ".RSA", ".DSA", ".EC")
                    ):
                        continue
                    if name.startswith("META-INF/services/"):
                        services.setdefault(name, []).append(zf.read(name).rstrip(b"\n"))
                        continue
                    seen.add(name)
                    out.writestr(info, zf.read(name))
        for name, parts in services.items():
            out.writestr(name, b"\n".join(parts) + b"\n")
    tmp.replace(target)


def flink_run_command(
    config: Path,
    *,
    cluster: str,
    home: Path = DEFAULT_HOME,
    package_dir: Path = PACKAGE_DIR,
    parallelism: int | None = None,
    savepoint: str | None = None,
    detached: bool = True,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The plain ``flink run`` command line ``inboxflow submit`` runs."""
    cmd = [str(home / "bin" / "flink"), "run", "-m", cluster]
    if detached:
        cmd.append("-d")
    if parallelism:
        cmd += ["-p", str(parallelism)]
    if savepoint:
        cmd += ["-s", savepoint]
    cmd += [
        "-pyfs",
        str(package_dir / JOB_ZIP),
        "--jarfile",
        str(package_dir / JOB_JAR),
        "-py",
        str(ROOT / "job" / "main.py"),
        *(extra_args or []),
        "--config",
        str(Path(config).resolve()),
    ]
    return cmd


_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


def submit(
    config: Path,
    *,
    cluster: str = f"127.0.0.1:{DEFAULT_PORT}",
    parallelism: int | None = None,
    savepoint: str | None = None,
    detached: bool = True,
    home: Path = DEFAULT_HOME,
    package_dir: Path = PACKAGE_DIR,
    extra_args: list[str] | None = None,
    timeout_s: float = 300,
) -> str:
    """Submits the packaged job with ``flink run``; returns the Flink job id."""
    for artifact in (package_dir / JOB_ZIP, package_dir / JOB_JAR):
        if not artifact.is_file():
            raise ClusterError(f"{artifact} is missing: run `make package` first")
    if not (home / "bin" / "flink").is_file():
        raise ClusterError(f"no Flink distribution in {home}: run `make cluster-up` first")
    cmd = flink_run_command(
        config,
        cluster=cluster,
        home=home,
        package_dir=package_dir,
        parallelism=parallelism,
        savepoint=savepoint,
        detached=detached,
        extra_args=extra_args,
    )
    if not detached:
        return _follow(cmd, home)
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        env=script_env(home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    match = _JOB_ID.search(done.stdout + done.stderr)
    if done.returncode != 0 or not match:
        raise ClusterError(
            f"flink run failed (exit {done.returncode}): {(done.stdout + done.stderr)[-4000:]}"
        )
    return match.group(1)


def _follow(cmd: list[str], home: Path) -> str:
    """Attached ``flink run``: its output goes to the terminal (the job id first) until the
    job ends."""
    job_id = ""
    tail: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=script_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail = (tail + [line])[-50:]
            match = _JOB_ID.search(line)
            if match and not job_id:
                job_id = match.group(1)
                print(job_id, flush=True)
        code = proc.wait()
    if code != 0 or not job_id:
        raise ClusterError(f"flink run failed (exit {code}): {''.join(tail)[-4000:]}")
    return job_id


# --- CLI --------------------------------------------------------------------------------
def register_submit(sub) -> None:
    """``inboxflow submit``."""
    from job.config import DEFAULT_CONFIG

    p = sub.add_parser("submit", help="submit the packaged job to a Flink cluster (flink run)")
    p.add_argument(
        "--cluster",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        help="the JobManager's REST address HOST:PORT (default 127.0.0.1:8081)",
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="job config (default conf/job.yaml)"
    )
    p.add_argument("--savepoint", help="start from this savepoint or retained checkpoint")
    p.add_argument("--parallelism", type=int, help="job parallelism (default: flink-conf.yaml)")
    p.add_argument(
        "--detached",
        action="store_true",
        help="return once the job is submitted (else follow it until it ends)",
    )
    p.add_argument(
        "--flink-home",
        type=Path,
        default=DEFAULT_HOME,
        help="the Flink distribution whose bin/flink submits (default var/flink)",
    )
    p.add_argument(
        "--package-dir",
        type=Path,
        default=PACKAGE_DIR,
        help="where `make package` put the job archive and jar (var/package)",
    )
    p.add_argument(
        "job_args",
        nargs=argparse.REMAINDER,
        metavar="-- ARGS",
        help="further arguments for job/main.py, e.g. -- --flink-conf FILE",
    )
    p.set_defaults(func=_submit_from_args)


def _submit_from_args(args: argparse.Namespace) -> int:
    try:
        job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
        job_id = submit(
            args.config,
            cluster=args.cluster,
            parallelism=args.parallelism,
            savepoint=args.savepoint,
            detached=args.detached,
            home=args.flink_home,
            package_dir=args.package_dir,
            extra_args=job_args,
        )
    except ClusterError as exc:
        print(f"inboxflow submit: {exc}", file=sys.stderr)
        return 1
    if args.detached:  # attached, it was printed as soon as the job was submitted
        print(job_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m job.submit", description="build var/package/ (job archive and jar)"
    )
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR)
    args = parser.parse_args(argv)
    try:
        for kind, path in package(args.out).items():
            print(f"{kind}: {path}")
    except ClusterError as exc:
        print(f"job.submit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
