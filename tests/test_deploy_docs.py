"""docs/deploy.md and the README tell the truth about infra/: parameters, outputs, versions, roles."""

from __future__ import annotations

import json
import re

import pytest

from devtools.infra_checks import INFRA, parse_all

ROOT = INFRA.parent
# Versions the docs require, and why: azd honours .funcignore from 1.18.0 (older versions ship
# everything); the Graph extension's v1.0 types need Bicep 0.36.1 (azd and Bicep release notes,
# Microsoft Graph Bicep extension documentation).
VERSIONS = {"azd": "1.18.0", "Bicep": "0.36.1"}
# Built-in role ids (the same in every tenant) and the names the docs give them.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
ENV_VARIABLE = re.compile(r"\$\{([A-Z_]+)[=}]")


def doc_violations(readme: str, deploy: str) -> list[str]:
    readme, deploy = " ".join(readme.split()), " ".join(deploy.split())  # line breaks aside
    parsed = parse_all()
    main, app = parsed["main.bicep"], parsed["app/resources.bicep"]
    found = [f"parameter {n}" for n in main["parameters"] if f"`{n}`" not in deploy]
    found += [f"output {n}" for n in main["outputs"] if n not in deploy]
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, entry in parameters.items():
        for variable in ENV_VARIABLE.findall(json.dumps(entry)):
            if f"`{variable}`" not in deploy:
                found.append(f"azd variable {variable} ({name})")
    for tool, version in VERSIONS.items():
        for label, text in (("README", readme), ("docs/deploy.md", deploy)):
            if not re.search(rf"{tool}\b[^.]*?{re.escape(version)} or newer", text, re.S):
                found.append(f"{label}: {tool} {version}")
    values = [str(variable["value"]) for variable in app["variables"].values()]
    role_ids = {value for value in values if value in ROLES}
    if len(role_ids) != len(ROLES):
        found.append("a role assignment this test does not know")
    found += [f"role {ROLES[i]}" for i in sorted(role_ids) if ROLES[i] not in deploy]
    if "AZURE_CLIENT_ID` line" not in deploy:
        found.append("the old AZURE_CLIENT_ID output")
    if "azd provision` once more" not in deploy:
        found.append("a second azd provision after a replication refusal")
    if "restart" not in deploy or "24 hours" not in deploy:
        found.append("restarting the app after a grant")
    if "(docs/deploy.md)" not in readme:
        found.append("README link to docs/deploy.md")
    return found


def read() -> tuple[str, str]:
    return (ROOT / "README.md").read_text(), (ROOT / "docs" / "deploy.md").read_text()


def test_the_docs_match_the_templates() -> None:
    assert doc_violations(*read()) == []


@pytest.mark.parametrize(
    ("where", "old", "named"),
    [
        ("deploy", "`allowedDeployInbound`", "parameter allowedDeployInbound"),
        ("deploy", "`resourceGroupName`", "parameter resourceGroupName"),
        ("deploy", "GRAPH_IDENTITY_CLIENT_ID", "output GRAPH_IDENTITY_CLIENT_ID"),
        ("deploy", "`MAXIMUM_INSTANCE_COUNT`", "azd variable MAXIMUM_INSTANCE_COUNT"),
        ("deploy", "1.18.0", "docs/deploy.md: azd 1.18.0"),
        ("readme", "0.36.1", "README: Bicep 0.36.1"),
        ("deploy", "Storage Blob Data Owner", "role Storage Blob Data Owner"),
        ("deploy", "azd provision` once more", "a second azd provision"),
        ("readme", "(docs/deploy.md)", "README link"),
    ],
)
def test_a_doc_that_drifts_is_caught(where: str, old: str, named: str) -> None:
    readme, deploy = read()
    if where == "readme":
        assert old in readme
        readme = readme.replace(old, "")
    else:
        assert old in deploy
        deploy = deploy.replace(old, "")
    assert any(named in v for v in doc_violations(readme, deploy))
