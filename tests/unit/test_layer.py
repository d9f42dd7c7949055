"""The Lambda layer holds the service and what it imports, nothing people run, in at most 10 MiB.

The layer is built here exactly as `sam build` builds it (template.yaml: BuildMethod makefile, so
`make build-JobTriggersLayer` in layers/jobtriggers with ARTIFACTS_DIR set), into a temporary
directory. Needs python3.12 (PYENV_VERSION=3.11.7:3.12.1, as the Makefile sets for sam build) and
PyPI, like `sam build`.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from jobtriggers.local.template import load_template
from tests.conftest import ROOT

MAX_LAYER_BYTES = 10 * 2**20
LAYER_DIR = ROOT / "layers" / "jobtriggers"
# What people run: never in the layer (board: a tool to come; the rule holds for it already).
TOOLS = ("local", "cli", "client", "board")
# What the python3.12 runtime provides: the layer must not shadow it with copies of its own.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "urllib3")


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("JobTriggersLayer")
    env = dict(os.environ, PYENV_VERSION=os.environ.get("PYENV_VERSION", "3.11.7:3.12.1"))
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(LAYER_DIR),
            "build-JobTriggersLayer",
            f"ARTIFACTS_DIR={artifacts}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"the layer did not build:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return artifacts / "python"


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _handler_imports() -> set[str]:
    """Every jobtriggers module the handlers import, directly or through other modules (lazy imports
    inside functions included, TYPE_CHECKING ones not)."""
    graph = grimp.build_graph("jobtriggers", exclude_type_checking_imports=True)
    direct: set[str] = set()
    for app in (ROOT / "functions").glob("*/app.py"):
        for node in ast.walk(ast.parse(app.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jobtriggers"):
                direct.add(node.module)
                direct.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if f"{node.module}.{a.name}" in graph.modules
                )
            elif isinstance(node, ast.Import):
                direct.update(a.name for a in node.names if a.name.startswith("jobtriggers"))
    closure = set(direct)
    for module in direct:
        closure |= {m for m in graph.find_upstream_modules(module) if m.startswith("jobtriggers")}
    return closure


def _module_file(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_template_builds_the_layer_with_the_makefile() -> None:
    layer = load_template()["Resources"]["JobTriggersLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers/jobtriggers"
    assert (LAYER_DIR / "Makefile").is_file()


def test_the_layer_is_at_most_10_mib(layer: Path) -> None:
    size = _size(layer.parent)
    by_package = sorted(
        ((_size(p) if p.is_dir() else p.stat().st_size, p.name) for p in layer.iterdir()), reverse=True
    )
    assert size <= MAX_LAYER_BYTES, f"{size / 2**20:.1f} MiB; largest: {by_package[:6]}"


def test_the_layer_ships_no_tool_and_nothing_the_runtime_has(layer: Path) -> None:
    package = layer / "jobtriggers"
    shipped = {p.name.removesuffix(".py") for p in package.iterdir()}
    assert not shipped & set(TOOLS), f"tools in the layer: {sorted(shipped & set(TOOLS))}"
    assert not [p for p in package.rglob("*") if p.name in {f"{t}.py" for t in TOOLS} or p.name in TOOLS]
    present = {p.name for p in layer.iterdir()}
    assert not present & {*RUNTIME_PACKAGES, "aws_xray_sdk"}, sorted(present)


def test_every_module_a_handler_imports_is_in_the_layer(layer: Path) -> None:
    needed = _handler_imports()
    assert "jobtriggers.api.app" in needed and "jobtriggers.logic.triggering" in needed  # the walk works
    missing = sorted(m for m in needed if not _module_file(layer, m))
    assert not missing, f"handlers import these, the layer lacks them (add them to SERVICE): {missing}"


def test_every_package_the_service_imports_is_in_the_layer_or_the_runtime(layer: Path) -> None:
    graph = grimp.build_graph(
        "jobtriggers", include_external_packages=True, exclude_type_checking_imports=True
    )
    external: set[str] = set()
    for module in _handler_imports():
        external |= {
            m for m in graph.find_modules_directly_imported_by(module) if not m.startswith("jobtriggers")
        }
    third_party = {m for m in external if m not in sys.stdlib_module_names}
    available = {p.name.removesuffix(".py") for p in layer.iterdir()} | set(RUNTIME_PACKAGES)
    assert third_party, "the service imports no third-party package? the walk is broken"
    assert not third_party - available, (
        f"imported but neither in the layer nor the runtime: {third_party - available}"
    )


def test_what_the_build_trims_from_dependencies_is_not_needed_at_run_time(layer: Path) -> None:
    # To stay within 10 MiB the Makefile drops pytz's zone files (mongomock imports pytz, and only its
    # aggregation asks for a zone, never the filter matcher) and the long descriptions of METADATA,
    # whose headers still give each version.
    assert not (layer / "pytz" / "zoneinfo").exists()
    zone_users = [
        str(p.relative_to(layer))
        for p in layer.rglob("*.py")
        if "pytz.timezone(" in p.read_text() and not p.is_relative_to(layer / "pytz")
    ]
    assert set(zone_users) <= {"mongomock/aggregate.py"}, zone_users
    # And pydantic.v1: nothing imports it but pydantic itself, lazily, for pydantic 1 style types
    assert not (layer / "pydantic" / "v1").exists()
    v1_users = {
        str(p.relative_to(layer))
        for p in layer.rglob("*.py")
        if re.search(r"pydantic\.v1\b|from pydantic import v1\b", p.read_text())
    }
    assert v1_users <= {"pydantic/_migration.py", "pydantic/_internal/_generate_schema.py"}, v1_users
    for metadata in layer.glob("*.dist-info/METADATA"):
        headers = metadata.read_text()
        assert re.search(r"^Version: \S+$", headers, re.M), metadata
