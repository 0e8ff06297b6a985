"""Build the zip Azure deploys (what `.funcignore` lets through), and show what is in it.

    python -m devtools.package [--output dist/autopilot-unassign.zip]

Flex Consumption builds remotely: the package is source only and Azure installs
requirements.txt. `.funcignore` is the one list of what stays out, read here as azd reads it
(`dist` and `.git` are added only in case it ever lost them), so this zip and a deployment never
disagree. Its patterns are matched like the Functions tooling does: a pattern names a file or
folder at any depth, `*` and `?` match within one name.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "dist" / "autopilot-unassign.zip"


def ignore_patterns(root: Path = ROOT) -> list[str]:
    lines = (root / ".funcignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: Path, patterns: list[str]) -> bool:
    text = relative.as_posix()
    for pattern in patterns:
        if fnmatch.fnmatch(text, pattern) or any(
            fnmatch.fnmatch(p, pattern) for p in relative.parts
        ):
            return True
    return False


def package_files(root: Path = ROOT) -> list[Path]:
    patterns = [*ignore_patterns(root), "dist", ".git"]
    files = []
    for folder, subfolders, names in os.walk(root):
        base = Path(folder).relative_to(root)
        # An ignored folder is not walked at all (node_modules alone holds ~20,000 files).
        subfolders[:] = [d for d in subfolders if not ignored(base / d, patterns)]
        files += [base / n for n in names if not ignored(base / n, patterns)]
    return sorted(files)


def build(output: Path = DEFAULT_OUTPUT, root: Path = ROOT) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    files = package_files(root)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            archive.write(root / relative, relative.as_posix())
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the deployment zip.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    files = build(args.output)
    for relative in files:
        print(f"  {(ROOT / relative).stat().st_size:>8}  {relative.as_posix()}")
    print(f"{args.output}: {len(files)} files, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
