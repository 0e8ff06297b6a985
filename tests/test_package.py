"""The deployment package holds the function and nothing a production app must not carry."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from devtools.package import ROOT, build, ignore_patterns, ignored, package_files

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
# azd's environment folder and the virtual environments its restore step makes for Python.
AZD_LOCAL_FILES = (".azure/dev/.env", "api_env/lib/x.py", "autopilot-unassign_env/pyvenv.cfg")
# Local environments, tooling state and build output: not needed for a copy of the project.
SKIP_IN_COPY = shutil.ignore_patterns(
    ".venv*",
    "node_modules",
    ".git",
    "dist",
    "build",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)
# What keeps `pip install .` from packaging the function folders as a library.
NO_PACKAGES = ("packages = []", "py-modules = []")


def copy_project(destination: Path) -> Path:
    shutil.copytree(ROOT, destination, ignore=SKIP_IN_COPY)
    return destination


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
    assert top == {
        "host.json", "requirements.txt", "shared", "UnassignUser", "BulkUnassignUser",
        "BulkUnassignJobs", "BulkUnassignJobCancel", "BulkUnassignJobStatus",
        "BulkUnassignJobWorker", "BulkUnassignJobSweeper",
    }  # fmt: skip
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


def test_azd_environment_and_its_virtual_environments_never_ship(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "app")
    for relative in AZD_LOCAL_FILES:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("local\n")
    names = {path.as_posix() for path in package_files(root)}
    assert not names & set(AZD_LOCAL_FILES)
    planted = {relative.split("/")[0] for relative in AZD_LOCAL_FILES}
    assert not [name for name in names if name.split("/")[0] in planted]
    # Positive control: the same listing keeps the function's files beside them.
    assert {"UnassignUser/__init__.py", "host.json", "requirements.txt"} <= names
    # Git leaves them alone too.
    git_patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for relative in AZD_LOCAL_FILES:
        assert ignored(Path(relative), git_patterns), relative


def test_pip_can_install_the_project(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "app")
    result = pip("install", "--dry-run", "--quiet", "--no-deps", str(root))
    assert result.returncode == 0, result.stderr


def test_pip_install_fails_without_the_empty_package_list(tmp_path: Path) -> None:
    # Negative control for the test above: setuptools' discovery finds the function folders.
    root = copy_project(tmp_path / "app")
    pyproject = root / "pyproject.toml"
    lines = pyproject.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() not in NO_PACKAGES]
    assert len(lines) - len(kept) == len(NO_PACKAGES)
    pyproject.write_text("".join(kept))
    result = pip("install", "--dry-run", "--quiet", "--no-deps", str(root))
    assert result.returncode != 0
    assert "Multiple top-level packages" in result.stdout + result.stderr


def test_the_installed_project_holds_no_python_package_or_module(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "app")
    result = pip(
        "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(root)
    )
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read("autopilot_unassign-1.0.0.dist-info/METADATA").decode()
    assert not [
        name for name in names if not name.startswith("autopilot_unassign-1.0.0.dist-info/")
    ]
    # Positive control: the wheel is there and carries requirements.txt's pins as its dependencies.
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements
    for requirement in requirements:
        assert f"Requires-Dist: {requirement}" in metadata, requirement
