"""The package boundaries docs/DESIGN.md describes, checked on the source (imports anywhere in a
module count, function-level ones included):

- ``udfs/core`` and ``udfs/clickhouse`` are plain Python: no pyflink, so they are unit-tested
  without a JVM;
- ``udfs`` never imports ``job`` (what runs in the TaskManagers does not need the entry point);
- production ``job/`` modules never import ``job/dev`` (the development tools are left out of
  ``make package``); the CLI is the one exception, for its developer commands;
- no import cycle between the project's modules;
- only ``job/flink_bridge.py`` touches PyFlink's private and JVM-side APIs (and ``job/jvm.py``,
  which loads the helper jar through the gateway), in ``job/``, ``udfs/`` and ``bench/``
  (``job/dev`` and the tests are left out).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("job", "udfs")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(p): p
    for package in PACKAGES
    for p in sorted((ROOT / package).rglob("*.py"))
    if "__pycache__" not in p.parts
}

# What only the bridge may use: private fields of PyFlink's wrappers (``_j_data_stream``,
# ``_j_builder``, ...), the py4j gateway, the function-info builder and its protobuf enum.
PYFLINK_INTERNALS = (
    "._j_",
    "get_gateway",
    "_create_j_data_stream_python_function_info",
    "flink_fn_execution_pb2",
)
BRIDGE_FILES = {"job/flink_bridge.py", "job/jvm.py"}
BRIDGE_SCAN = {
    p.relative_to(ROOT).as_posix(): p
    for package in (*PACKAGES, "bench")
    for p in sorted((ROOT / package).rglob("*.py"))
    if "__pycache__" not in p.parts and p.relative_to(ROOT).parts[:2] != ("job", "dev")
}


def imports_of(module: str) -> set[str]:
    """Every absolute module name ``module`` imports, wherever the import statement stands."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from udfs.core import journey` imports the module udfs.core.journey
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in MODULES
            )
    return found


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_layout_scan_sees_every_package():
    assert {"udfs.core.journey", "udfs.flink.customer_function", "udfs.clickhouse.client"} <= set(
        MODULES
    )
    assert {"job.main", "job.dev.broker", "job.submit"} <= set(MODULES)


@pytest.mark.parametrize(
    "module", [m for m in MODULES if _inside(m, "udfs.core") or _inside(m, "udfs.clickhouse")]
)
def test_pure_packages_never_import_pyflink(module):
    assert not {name for name in imports_of(module) if _inside(name, "pyflink")}


@pytest.mark.parametrize("module", [m for m in MODULES if _inside(m, "udfs")])
def test_udfs_never_import_the_job_package(module):
    assert not {name for name in imports_of(module) if _inside(name, "job")}


@pytest.mark.parametrize(
    "module", [m for m in MODULES if _inside(m, "job") and not _inside(m, "job.dev")]
)
def test_production_modules_never_import_the_dev_tools(module):
    dev = {name for name in imports_of(module) if _inside(name, "job.dev")}
    if (
        module == "job.cli"
    ):  # `inboxflow gen`, `demo` and `demo-shop`, imported when the parser is built
        assert dev == {"job.dev", "job.dev.demo", "job.dev.demo_shop", "job.dev.gen"}
    else:
        assert not dev


def test_no_import_cycles_between_project_modules():
    graph = {
        module: {name for name in imports_of(module) if name in MODULES and name != module}
        for module in MODULES
    }
    # a package's __init__ is not an edge of its own: importing a.b runs a/__init__ first,
    # and none of ours imports anything
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            assert not graph[module], f"{module} imports {graph[module]}"
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def pyflink_internals_in(path: Path) -> set[str]:
    """Which of :data:`PYFLINK_INTERNALS` the source of ``path`` names, comments included."""
    source = path.read_text(encoding="utf-8")
    return {name for name in PYFLINK_INTERNALS if name in source}


def test_the_bridge_scan_sees_every_package_and_the_bridge():
    expected = {"job/main.py", "job/pipeline.py", "udfs/flink/customer_function.py", "bench/run.py"}
    assert expected <= set(BRIDGE_SCAN)
    assert not {path for path in BRIDGE_SCAN if path.startswith("job/dev/")}
    assert pyflink_internals_in(BRIDGE_SCAN["job/flink_bridge.py"]) == set(PYFLINK_INTERNALS)


@pytest.mark.parametrize("path", sorted(set(BRIDGE_SCAN) - BRIDGE_FILES))
def test_only_the_bridge_touches_pyflink_internals(path):
    found = pyflink_internals_in(BRIDGE_SCAN[path])
    assert not found, f"{path} uses {sorted(found)}: move it into job/flink_bridge.py"
