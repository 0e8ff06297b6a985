"""infra/: the templates parse, their security properties hold, and both checks bite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from devtools.infra_checks import INFRA, checkov_problems, parse_all, security_violations


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    return copy


def edit(infra: Path, file: str, old: str, new: str) -> None:
    path = infra / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))


def test_every_template_parses() -> None:
    assert set(parse_all()) == {
        "main.bicep",
        "app/resources.bicep",
        "graph-permissions.bicep",
        "api-registration.bicep",
    }


def test_a_template_that_does_not_parse_is_named(infra_copy: Path) -> None:
    edit(infra_copy, "app/resources.bicep", "param location string", "param location string = {")
    with pytest.raises(ValueError, match=r"app/resources\.bicep does not parse"):
        parse_all(infra_copy)


def test_the_security_properties_hold() -> None:
    assert security_violations() == []


WEAKENINGS = [
    ("app/resources.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true", "allowSharedKeyAccess"),
    ("app/resources.bicep", "httpsOnly: true", "httpsOnly: false", "httpsOnly"),
    ("app/resources.bicep", "minTlsVersion: '1.2'", "minTlsVersion: '1.0'", "minTlsVersion"),
    ("app/resources.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'", "minimumTlsVersion"),
    ("app/resources.bicep", "type: 'UserAssigned'\n    userAssignedIdentities", "type: 'SystemAssigned, UserAssigned'\n    userAssignedIdentities", "identity type"),
    ("app/resources.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false", "DisableLocalAuth"),
    ("app/resources.bicep", "disableLocalAuth: true", "disableLocalAuth: false", "disableLocalAuth"),
    ("app/resources.bicep", "name: 'ftp'\n  properties: {\n    allow: false", "name: 'ftp'\n  properties: {\n    allow: true", "FTP basic publishing"),
    ("app/resources.bicep", "name: 'scm'\n  properties: {\n    allow: false", "name: 'scm'\n  properties: {\n    allow: true", "SCM basic publishing"),
    ("app/resources.bicep", "ftpsState: 'Disabled'", "ftpsState: 'AllAllowed'", "ftpsState"),
    ("graph-permissions.bicep", "= 'DeviceManagementServiceConfig.ReadWrite.All'", "= 'Directory.ReadWrite.All'", "Graph role value"),
    ("graph-permissions.bicep", "filter(graph.appRoles, role => role.value == appRoleValue)[0].id", "'5ac13192-7ace-4fcf-b828-1a26f28068ee'", "looked up by its value"),
    ("main.parameters.json", '"${GRANT_GRAPH_PERMISSION=true}"', '"false"', "Graph grant"),
    ("main.parameters.json", "https://graph.microsoft.com}", "http://graph.microsoft.com}", "graphEndpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "old", "new", "named"), WEAKENINGS)
def test_a_weakened_copy_fails_the_check(
    infra_copy: Path, file: str, old: str, new: str, named: str
) -> None:
    assert security_violations(infra_copy) == []  # the copy passes before it is weakened
    edit(infra_copy, file, old, new)
    violations = security_violations(infra_copy)
    assert any(named in v for v in violations), violations


def test_checkov_finds_nothing_unaccepted() -> None:
    assert checkov_problems() == []


def test_checkov_fails_on_a_new_finding_and_on_a_file_it_cannot_parse(infra_copy: Path) -> None:
    edit(
        infra_copy,
        "app/resources.bicep",
        "minimumTlsVersion: 'TLS1_2'",
        "minimumTlsVersion: 'TLS1_0'",
    )
    (infra_copy / "graph-extension-copy.bicep").write_text(
        (infra_copy / "graph-permissions.bicep").read_text()
    )
    problems = checkov_problems(infra_copy)
    assert any("fix it or accept it" in p for p in problems), problems
    assert any("could not parse" in p and "graph-extension-copy.bicep" in p for p in problems), (
        problems
    )


def test_host_json_is_ready_for_production() -> None:
    host = json.loads((INFRA.parent / "host.json").read_text())
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds <= 230  # the HTTP front end gives up at 230 s
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    excluded = sampling["excludedTypes"].split(";")
    assert {"Request", "Trace"} <= set(excluded)  # requests and audit records are never sampled
