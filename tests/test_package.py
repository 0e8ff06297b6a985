"""The deployment package holds the function and nothing a production app must not carry."""

from __future__ import annotations

import zipfile
from pathlib import Path

from devtools.package import build, ignore_patterns, ignored


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
    ):
        assert ignored(Path(path), patterns), path
    # Positive control: the same probe lets the function's own files through.
    for path in ("shared/graph.py", "UnassignUser/__init__.py", "host.json"):
        assert not ignored(Path(path), patterns), path
