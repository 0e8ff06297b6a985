"""5. Footprint: installed size of requirements.txt and of msgraph-sdk; peak RSS of the cold starts."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.common import Results, heading, mib, say
from bench.environments import make_venv, site_packages

# Target from the issue.
SIZE_VS_SDK_MAX = 1 / 8


def tree_size(path: Path) -> int:
    """Bytes of every file under ``path`` (apparent sizes, byte-compiled files included)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def distribution_sizes(packages: Path) -> dict[str, int]:
    """Installed bytes per distribution, from each one's RECORD."""
    sizes: dict[str, int] = {}
    for record in packages.glob("*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0].lower().replace("_", "-")
        total = 0
        for line in record.read_text().splitlines():
            relative = line.rsplit(",", 2)[0]
            with contextlib.suppress(OSError):
                total += os.lstat(packages / relative).st_size
        sizes[name] = total
    return sizes


@dataclass(frozen=True)
class Footprint:
    bare: int  # site-packages of a new venv: pip and setuptools only
    installed: int  # site-packages after the install
    by_distribution: dict[str, int]

    @property
    def added(self) -> int:
        return self.installed - self.bare


def bare_site_packages_size(scratch: Path) -> int:
    bare = scratch / "bare"
    make_venv(bare)
    return tree_size(site_packages(bare))


def footprint(venv: Path, bare: int) -> Footprint:
    packages = site_packages(venv)
    sizes = distribution_sizes(packages)
    for tool in ("pip", "setuptools"):
        sizes.pop(tool, None)
    return Footprint(bare, tree_size(packages), sizes)


def footprints(ours: Footprint, sdk: Footprint, results: Results) -> None:
    heading("5. Footprint: installed size (site-packages less a new venv's pip and setuptools)")
    say(f"   ours (requirements.txt)        {mib(ours.added):>10}")
    say(f"   msgraph-sdk (.venv-sdk)         {mib(sdk.added):>10}")
    ratio = ours.added / sdk.added
    say(f"   ratio ours/msgraph-sdk = {ratio:.3f} (1/{1 / ratio:.1f})")
    for label, print_ in (("ours", ours), ("msgraph-sdk", sdk)):
        largest = sorted(print_.by_distribution.items(), key=lambda kv: -kv[1])[:6]
        say(f"   largest in {label}: " + ", ".join(f"{n} {mib(s)}" for n, s in largest))
    say("   peak RSS of the cold-start processes (median):")
    for name, rss in results.rss_kib.items():
        say(f"   {name:<12} {rss / 1024:.1f} MiB")
    results.add(
        "installed size under 1/8 of msgraph-sdk's",
        f"{mib(ours.added)} vs {mib(sdk.added)} = 1/{1 / ratio:.1f}",
        ratio < SIZE_VS_SDK_MAX,
    )
