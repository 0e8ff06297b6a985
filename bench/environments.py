"""The benchmark's Python environments: msgraph-sdk's (.venv-sdk, kept) and one holding only
requirements.txt (temporary), as Azure installs it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, say

SDK_VENV = ROOT / ".venv-sdk"
SDK_REQUIREMENTS = ROOT / "bench" / "requirements-sdk.txt"
RUNTIME_REQUIREMENTS = ROOT / "requirements.txt"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip_install(venv: Path, requirements: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own venv's pip, our own requirements file
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    if done.returncode != 0:
        sys.exit(f"pip install -r {requirements} failed:\n{done.stdout}\n{done.stderr}")


def make_venv(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)  # noqa: S603


def ensure_sdk_env() -> Path:
    """.venv-sdk with bench/requirements-sdk.txt, made again only when that file changes."""
    stamp = SDK_VENV / ".installed"
    wanted = hashlib.sha256(SDK_REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return venv_python(SDK_VENV)
    say(f"Creating {SDK_VENV.name} for msgraph-sdk (once; again only when its requirements change)")
    make_venv(SDK_VENV)
    pip_install(SDK_VENV, SDK_REQUIREMENTS)
    stamp.write_text(wanted + "\n")
    return venv_python(SDK_VENV)


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise RuntimeError(f"expected one site-packages in {venv}, found {found}")
    return found[0]


def sdk_versions(python: Path) -> str:
    listing = subprocess.run(  # noqa: S603 - our own interpreter
        [str(python), "-m", "pip", "list", "--disable-pip-version-check", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    versions = {p["name"].lower(): p["version"] for p in json.loads(listing)}
    names = ("msgraph-sdk", "msgraph-core", "azure-identity", "aiohttp", "httpx")
    return ", ".join(f"{name} {versions.get(name, '?')}" for name in names)
