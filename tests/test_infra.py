"""infra/: the templates parse, their security properties hold, and both checks bite."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from devtools.infra_checks import (
    FLEX_REJECTED_APP_SETTINGS,
    FLEX_REJECTED_SITE_CONFIG,
    INFRA,
    checkov_problems,
    parse_all,
    platform_violations,
    security_violations,
)
from tests.bicep_eval import evaluate


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    # What the platform rules read beside infra/: azd's project file, the names the code uses.
    for name in ("azure.yaml", "BulkUnassignJobWorker/function.json", "shared/jobs/settings.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(INFRA.parent / name, tmp_path / name)
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


def test_the_platform_rules_hold() -> None:
    assert platform_violations() == []


SITE_CONFIG = "      minTlsVersion: '1.2'\n"
APP_SETTINGS = "      appSettings: [\n"
PLATFORM_WEAKENINGS = [
    # Flex Consumption's refused properties (the one list is in devtools/infra_checks.py).
    *[("app/resources.bicep", SITE_CONFIG, f"{SITE_CONFIG}      {name}: true\n", f"siteConfig.{name}")
      for name in FLEX_REJECTED_SITE_CONFIG],
    *[("app/resources.bicep", APP_SETTINGS, f"{APP_SETTINGS}        {{ name: '{name}', value: 'x' }}\n", f"app setting {name}")
      for name in FLEX_REJECTED_APP_SETTINGS],
    # The deploy host keeps its own list.
    ("app/resources.bicep", "scmIpSecurityRestrictionsUseMain: false", "scmIpSecurityRestrictionsUseMain: true", "scmIpSecurityRestrictionsUseMain"),
    ("app/resources.bicep", "scmIpSecurityRestrictionsDefaultAction: empty(allowedDeployInbound) ? 'Allow' : 'Deny'", "scmIpSecurityRestrictionsDefaultAction: 'Allow'", "scmIpSecurityRestrictionsDefaultAction"),
    ("app/resources.bicep", "for (rule, i) in allowedDeployInbound", "for (rule, i) in allowedInbound", "scmIpSecurityRestrictions must"),
    # Host storage by service URI.
    ("app/resources.bicep", "{ name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }", "{ name: 'AzureWebJobsStorage__accountName', value: storage.name }", "AzureWebJobsStorage__accountName"),
    ("app/resources.bicep", "value: storage.properties.primaryEndpoints.blob }", "value: 'https://${storage.name}.blob.core.windows.net' }", "blobServiceUri must"),
    # The jobs' storage: names the code uses, service URIs, roles.
    ("app/resources.bicep", "var jobsQueueName = 'bulk-unassign-jobs'", "var jobsQueueName = 'jobs'", "the worker's queueName"),
    ("app/resources.bicep", "var jobsTableName = 'BulkUnassignJobs'", "var jobsTableName = 'Jobs'", "settings.py's TABLE"),
    ("app/resources.bicep", "  name: '${jobsQueueName}-poison'", "  name: 'poison'", "jobsQueueName}-poison"),
    ("app/resources.bicep", "  name: jobsTableName", "  name: 'BulkUnassignJobs'", "named jobsTableName"),
    ("app/resources.bicep", "value: storage.properties.primaryEndpoints.queue }", "value: 'https://example.invalid' }", "queueServiceUri must"),
    ("app/resources.bicep", "{ name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }\n", "", "tableServiceUri must"),
    ("app/resources.bicep", "roleDefinitions', storageQueueDataContributor)", "roleDefinitions', storageBlobDataOwner)", "Storage Queue Data Contributor"),
    ("app/resources.bicep", "var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'", "var storageTableDataContributor = '76199698-9eea-4c19-bc75-cec21354c6b6'", "Storage Table Data Contributor"),
    # azd.
    ("main.bicep", "@metadata({\n  azd: {\n    type: 'location'\n  }\n})\n", "", "azd's location metadata"),
    ("main.bicep", "param location string", "@allowed([\n  'westeurope'\n])\nparam location string", "allowed regions"),
    ("main.parameters.json", "${ALLOWED_DEPLOY_INBOUND=[]}", "[]", "allowedDeployInbound must read ALLOWED_DEPLOY_INBOUND"),
    ("main.parameters.json", "${MAXIMUM_INSTANCE_COUNT=40}", "${INSTANCES=40}", "maximumInstanceCount must read"),
    ("main.bicep", "output SERVICE_API_NAME string", "output SERVICE_NAME string", "output SERVICE_API_NAME is missing"),
    ("main.bicep", "output GRAPH_IDENTITY_CLIENT_ID string", "output AZURE_CLIENT_ID string", "AZURE_CLIENT_ID"),
    # Clouds, service tags, versions.
    ("main.bicep", "(Microsoft Graph Bicep extension: public cloud only)", "", "grantGraphPermission must say"),
    ("main.bicep", "[{\"serviceTag\": \"AzureConnectors\"}] for a Power Automate custom connector, [{\"serviceTag\": \"LogicApps\"}] for its HTTP action (regional forms such as AzureConnectors.westeurope narrow it further)", "[{\"serviceTag\": \"LogicApps\"}]", "AzureConnectors and LogicApps"),
    ("bicepconfig.json", "microsoftgraph/v1.0:1.0.0", "microsoftgraph/v1.0:latest", "pin the Graph extension"),
    ("../azure.yaml", 'azd: ">= 1.18.0"', 'azd: ">= 1.10.0"', "require azd"),
    # What an auditor asks for.
    ("app/resources.bicep", "category: 'FunctionAppLogs'\n        enabled: true", "category: 'FunctionAppLogs'\n        enabled: false", "Function App's logs"),
    ("app/resources.bicep", "category: 'StorageRead'", "category: 'StorageDelete'", "reads and writes must be logged"),
    ("app/resources.bicep", "    deleteRetentionPolicy: {\n      enabled: true", "    deleteRetentionPolicy: {\n      enabled: false", "soft delete"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "old", "new", "named"), PLATFORM_WEAKENINGS)
def test_a_copy_the_platform_would_refuse_fails_the_check(
    infra_copy: Path, file: str, old: str, new: str, named: str
) -> None:
    assert platform_violations(infra_copy) == []  # the copy passes before it is weakened
    edit(infra_copy, file, old, new)
    violations = platform_violations(infra_copy)
    assert any(named in v for v in violations), violations


# --- What the templates give for the values a user sets with `azd env set`. ----------------------
# azd substitutes ${NAME=default} in each parameter's JSON text of main.parameters.json and turns a
# "true" or "40" into the bool or int the template declares (Azure/azure-dev,
# cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go: loadParameters, armParameterFileValue).
# A string parameter is substituted as JSON text, so the quotes of a JSON array must be escaped in
# the value; json() in the template then reads it. (Since azure-dev pull request 6694, azd also
# parses JSON for array parameters; the string form works with every version.)
SUBSTITUTION = re.compile(r"\$\{([A-Z_]+)=([^}]*)\}")


def azd_parameter(name: str, env: dict[str, str]) -> Any:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    text = json.dumps(parameters[name])
    substituted = SUBSTITUTION.sub(lambda m: env.get(m[1], m[2]), text)
    value = json.loads(substituted)["value"]
    kind = parse_all()["main.bicep"]["parameters"][name]["type"]
    return int(value) if kind == "int" else value


def site_config(allowed: str, deploy: str) -> dict[str, Any]:
    """siteConfig's restrictions for these two main.bicep parameter values."""
    main, app = parse_all()["main.bicep"], parse_all()["app/resources.bicep"]
    module = main["modules"]["app"]["config"]["params"]
    scope = {"allowedInbound": allowed, "allowedDeployInbound": deploy}
    app_scope = {name: evaluate(module[name], scope) for name in scope}
    config = app["resources"]["site"]["config"]["properties"]["siteConfig"]
    keys = [k for k in config if "SecurityRestrictions" in k]
    return {key: evaluate(config[key], app_scope) for key in keys}


def test_empty_lists_leave_both_hosts_open_to_any_key_holder() -> None:
    config = site_config(
        azd_parameter("allowedInbound", {}), azd_parameter("allowedDeployInbound", {})
    )
    assert config == {
        "ipSecurityRestrictions": [],
        "ipSecurityRestrictionsDefaultAction": "Allow",
        "scmIpSecurityRestrictionsUseMain": False,
        "scmIpSecurityRestrictions": [],
        "scmIpSecurityRestrictionsDefaultAction": "Allow",
    }


def test_a_caller_list_does_not_lock_the_deploy_host() -> None:
    env = {
        "ALLOWED_INBOUND": '[{\\"serviceTag\\": \\"AzureConnectors\\"}, {\\"ipAddress\\": \\"203.0.113.0/24\\"}]'
    }
    config = site_config(
        azd_parameter("allowedInbound", env), azd_parameter("allowedDeployInbound", env)
    )
    assert config["ipSecurityRestrictions"] == [
        {"name": "allow-0", "action": "Allow", "priority": 100, "ipAddress": "AzureConnectors", "tag": "ServiceTag"},
        {"name": "allow-1", "action": "Allow", "priority": 101, "ipAddress": "203.0.113.0/24", "tag": "Default"},
    ]  # fmt: skip
    assert config["ipSecurityRestrictionsDefaultAction"] == "Deny"
    assert config["scmIpSecurityRestrictionsUseMain"] is False
    assert config["scmIpSecurityRestrictions"] == []
    assert config["scmIpSecurityRestrictionsDefaultAction"] == "Allow"


def test_a_deploy_list_restricts_only_the_deploy_host() -> None:
    env = {"ALLOWED_DEPLOY_INBOUND": '[{\\"ipAddress\\": \\"198.51.100.7/32\\"}]'}
    config = site_config(
        azd_parameter("allowedInbound", env), azd_parameter("allowedDeployInbound", env)
    )
    assert config["ipSecurityRestrictionsDefaultAction"] == "Allow"
    assert config["scmIpSecurityRestrictions"] == [
        {"name": "deploy-0", "action": "Allow", "priority": 100, "ipAddress": "198.51.100.7/32", "tag": "Default"}
    ]  # fmt: skip
    assert config["scmIpSecurityRestrictionsDefaultAction"] == "Deny"


def test_an_unescaped_json_value_breaks_the_parameters_file() -> None:
    """Why the docs escape the quotes: azd substitutes into JSON text."""
    with pytest.raises(json.JSONDecodeError):
        azd_parameter("allowedInbound", {"ALLOWED_INBOUND": '[{"serviceTag": "AzureConnectors"}]'})


def test_the_instance_count_is_set_with_azd_env_set() -> None:
    declared = parse_all()["main.bicep"]["parameters"]["maximumInstanceCount"]
    bounds = {d["type"]: d["argument"] for d in declared["decorators"]}
    assert azd_parameter("maximumInstanceCount", {}) == declared["default"] == 40
    assert azd_parameter("maximumInstanceCount", {"MAXIMUM_INSTANCE_COUNT": "100"}) == 100
    assert bounds["min_value"] <= 100 <= bounds["max_value"]


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
