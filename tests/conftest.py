"""Shared test set-up: hypothesis profiles that cannot flake on a busy machine."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Derandomized and without per-example deadlines: the same examples on every run, however loaded
# the machine is. `HYPOTHESIS_PROFILE=explore` searches afresh with more examples.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, max_examples=10000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
