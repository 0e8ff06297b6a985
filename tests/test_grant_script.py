"""infra/grant-graph-permission.sh against a stand-in `az` that records what it is asked.

A grant to an identity Entra ID has not replicated yet is refused ("Not a valid reference
update", msgraph-bicep-types issue 193): the script tries again with a growing wait; any other
refusal ends it at once, and it never grants twice.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.stack import ROOT

SCRIPT = ROOT / "infra" / "grant-graph-permission.sh"
PRINCIPAL = "11111111-2222-3333-4444-555555555555"
REPLICATING = "Bad Request({'error': {'message': 'Not a valid reference update.'}})"
DENIED = "Forbidden({'error': {'code': 'Authorization_RequestDenied'}})"
NOT_FOUND = "Not Found({'error': {'code': 'Request_ResourceNotFound'}})"

# Answers the script's az calls. GETs fail FAKE_GET_FAILURES times with FAKE_ERROR, POSTs
# FAKE_FAILURES times, then succeed; every call warns on stderr, as az may.
FAKE_AZ = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
echo "WARNING: a notice az prints on stderr" >&2
fails() {
  count=$(( $(cat "$1" 2>/dev/null || echo 0) + 1 ))
  echo "$count" > "$1"
  if (( count <= $2 )); then echo "$FAKE_ERROR" >&2; exit 1; fi
}
case "$*" in
  "cloud show"*) echo "https://graph.microsoft.com/" ;;
  "ad sp show"*"appRoles"*) echo "role-id-1" ;;
  "ad sp show"*) echo "graph-sp-id" ;;
  "rest --method GET"*) fails "$FAKE_COUNT.get" "${FAKE_GET_FAILURES:-0}"; echo "${FAKE_EXISTING:-}" ;;
  "rest --method POST"*) fails "$FAKE_COUNT.post" "${FAKE_FAILURES:-0}" ;;
  *) echo "unexpected az call: $*" >&2; exit 2 ;;
esac
"""
# Records the waits instead of waiting.
FAKE_SLEEP = """#!/usr/bin/env bash
echo "$1" >> "$FAKE_SLEEPS"
"""


def run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for name, text in (("az", FAKE_AZ), ("sleep", FAKE_SLEEP)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    log = tmp_path / "az.log"
    environment = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_COUNT": str(tmp_path / "count"),
        "FAKE_SLEEPS": str(tmp_path / "sleeps"),
        **env,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), PRINCIPAL],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done, [call for call in calls if call.startswith("rest --method POST")]


def test_a_grant_to_an_identity_not_yet_replicated_is_tried_again(tmp_path: Path) -> None:
    done, posts = run(tmp_path, FAKE_FAILURES="2", FAKE_ERROR=REPLICATING)
    assert done.returncode == 0, done.stderr
    assert len(posts) == 3 and PRINCIPAL in posts[0] and "role-id-1" in posts[0]
    assert done.stderr.count("trying again") == 2 and sleeps(tmp_path) == [5, 10]
    assert "Granted DeviceManagementServiceConfig.ReadWrite.All" in done.stdout
    assert "restart the Function App" in done.stdout


def test_another_refusal_ends_it_at_once(tmp_path: Path) -> None:
    done, posts = run(tmp_path, FAKE_FAILURES="5", FAKE_ERROR=DENIED)
    assert done.returncode == 1 and len(posts) == 1 and sleeps(tmp_path) == []
    assert "Authorization_RequestDenied" in done.stderr and "attempt 1 of 8" in done.stderr


@pytest.mark.parametrize("attempts", ["1", "3"])
def test_it_gives_up_after_the_attempts(tmp_path: Path, attempts: str) -> None:
    done, posts = run(
        tmp_path, FAKE_FAILURES="99", FAKE_ERROR=REPLICATING, GRANT_RETRY_ATTEMPTS=attempts
    )
    assert done.returncode == 1 and len(posts) == int(attempts)
    assert "Not a valid reference update" in done.stderr


def test_an_existing_grant_is_not_made_again(tmp_path: Path) -> None:
    done, posts = run(tmp_path, FAKE_EXISTING="assignment-id")
    assert done.returncode == 0 and posts == []
    assert "already granted" in done.stdout
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    granted, posts = run(fresh)
    assert granted.returncode == 0 and len(posts) == 1  # the same probe sees a grant made


def sleeps(tmp_path: Path) -> list[int]:
    recorded = tmp_path / "sleeps"
    return [int(line) for line in recorded.read_text().split()] if recorded.exists() else []


def test_the_waits_grow_and_stay_bounded(tmp_path: Path) -> None:
    """5, 10, 20, 40, 60, 60, 60 s between 8 attempts: about 4 minutes."""
    done, posts = run(tmp_path, FAKE_FAILURES="99", FAKE_ERROR=REPLICATING)
    assert done.returncode == 1 and len(posts) == 8
    assert sleeps(tmp_path) == [5, 10, 20, 40, 60, 60, 60]


def test_an_identity_graph_cannot_see_yet_is_looked_up_again(tmp_path: Path) -> None:
    done, posts = run(tmp_path, FAKE_GET_FAILURES="2", FAKE_ERROR=NOT_FOUND)
    assert done.returncode == 0, done.stderr
    assert len(posts) == 1 and sleeps(tmp_path) == [5, 10]


def test_a_grant_to_a_principal_not_found_is_tried_again(tmp_path: Path) -> None:
    done, posts = run(tmp_path, FAKE_FAILURES="1", FAKE_ERROR=NOT_FOUND)
    assert done.returncode == 0 and len(posts) == 2 and sleeps(tmp_path) == [5]


def test_warnings_do_not_pass_for_an_existing_grant(tmp_path: Path) -> None:
    """az's notices on stderr stay there: an empty answer still means "not granted yet"."""
    done, posts = run(tmp_path)
    assert done.returncode == 0 and len(posts) == 1
    assert "WARNING: a notice az prints on stderr" in done.stderr
