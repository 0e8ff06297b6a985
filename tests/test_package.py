"""The deployment package holds the function and nothing a production app must not carry."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from devtools.package import ROOT, build, ignore_patterns, ignored

# The ServiceNow script include, its Node tests and their tooling: development only.
NODE_FILES = (
    "package.json",
    "package-lock.json",
    "node_modules/acorn/package.json",
    "node_modules/acorn/dist/acorn.js",
    "integrations/servicenow/AutopilotUnassign.js",
    "integrations/servicenow/test/fixtures/unassigned.json",
)
FUNCTION_FILES = ("host.json", "shared/graph.py", "UnassignUser/__init__.py")


def is_node_file(name: str) -> bool:
    parts = name.split("/")
    return (
        parts[-1].endswith((".js", ".cjs", ".mjs"))
        or parts[-1] in {"package.json", "package-lock.json"}
        or "node_modules" in parts
        or parts[0] == "integrations"
    )


def test_the_package_holds_the_functions_and_their_code(tmp_path: Path) -> None:
    output = tmp_path / "app.zip"
    build(output)
    names = set(zipfile.ZipFile(output).namelist())
    assert {
        "host.json",
        "requirements.txt",
        "UnassignUser/function.json",
        "UnassignUser/__init__.py",
        "BulkUnassignUser/function.json",
        "BulkUnassignUser/__init__.py",
        "shared/handler.py",
    } <= names
    top = {name.split("/")[0] for name in names}
    assert top == {"host.json", "requirements.txt", "UnassignUser", "BulkUnassignUser", "shared"}
    assert not [name for name in names if is_node_file(name)]


def test_tests_infra_tooling_and_local_settings_are_left_out() -> None:
    patterns = ignore_patterns()
    for path in (
        "tests/test_package.py",
        "infra/main.bicep",
        "devtools/host.py",
        "local.settings.json",
        "local.settings.example.json",
        "connector/apiDefinition.swagger.json",
        ".venv/bin/python",
        "shared/__pycache__/graph.cpython-311.pyc",
        *NODE_FILES,
    ):
        assert ignored(Path(path), patterns), path
    # Positive control: the same probe lets the function's own files through.
    for path in ("shared/graph.py", "UnassignUser/__init__.py", "host.json"):
        assert not ignored(Path(path), patterns), path


def test_no_node_file_ships_even_where_node_tooling_is_installed(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for relative in (*NODE_FILES, *FUNCTION_FILES):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("{}")
    shutil.copy(ROOT / ".funcignore", root / ".funcignore")
    output = tmp_path / "app.zip"
    build(output, root)
    names = set(zipfile.ZipFile(output).namelist())
    assert not [name for name in names if is_node_file(name)]
    # Positive controls: the same build keeps the function's files beside them, and the probe
    # recognises every Node file planted.
    assert set(FUNCTION_FILES) <= names
    assert all(is_node_file(name) for name in NODE_FILES)
    assert not any(is_node_file(name) for name in FUNCTION_FILES)
