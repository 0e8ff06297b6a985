"""Static checks of infra/ for machines without the Bicep CLI (`make infra-check`).

1. Every `.bicep` file parses with pycep-parser 0.7 (which understands `extension microsoftGraphV1`).
2. The security-relevant properties hold in the templates and their parameter file together.
3. What Azure Resource Manager, Flex Consumption and azd enforce, which no local tool checks, holds
   (platform_violations; each rule names its source).
4. checkov scans infra/ from its own virtual environment (it pins an older pycep); every finding
   must be accepted with a one-line reason in infra/checkov-accepted.json, and a file checkov
   could not parse fails the run (checkov itself reports those as passing).

The two Graph extension modules (the permission grant, the API app registration) are skipped by
checkov only: its pinned pycep cannot read the Graph extension; pycep 0.7 in step 1 does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_VERSION = "3.3.30"
# checkov's own pycep cannot parse `extension microsoftGraphV1`; pycep 0.7 above does.
CHECKOV_SKIPPED = ("graph-permissions.bicep", "api-registration.bicep")
GRAPH_ROLE = "DeviceManagementServiceConfig.ReadWrite.All"


def parse_all(infra: Path = INFRA) -> dict[str, dict[str, Any]]:
    """Every template, parsed, by its path relative to `infra`; a parse error names the file."""
    parser = BicepParser()
    parsed = {}
    for path in sorted(infra.rglob("*.bicep")):
        try:
            parsed[str(path.relative_to(infra))] = dict(parser.parse(file_path=path))
        except Exception as exc:  # pycep raises lark's many error types
            raise ValueError(f"{path.relative_to(infra)} does not parse: {exc}") from exc
    return parsed


def _resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    config: dict[str, Any] = template["resources"][name]["config"]
    return config


def _setting(site: dict[str, Any], name: str) -> Any:
    for entry in site["properties"]["siteConfig"]["appSettings"]:
        if entry["name"] == name:
            return entry["value"]
    return None


def security_violations(infra: Path = INFRA) -> list[str]:
    """What is weaker than it must be, read from the templates and main.parameters.json."""
    parsed = parse_all(infra)
    app, graph, main = (
        parsed["app/resources.bicep"],
        parsed["graph-permissions.bicep"],
        parsed["main.bicep"],
    )
    parameters = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    site, storage = _resource(app, "site"), _resource(app, "storage")
    config = site["properties"]["siteConfig"]
    expected: list[tuple[str, Any, Any]] = [
        ("function app identity type", site["identity"]["type"], "UserAssigned"),
        ("function app httpsOnly", site["properties"]["httpsOnly"], True),
        ("function app minTlsVersion", config["minTlsVersion"], "1.2"),
        ("function app plan tier", _resource(app, "plan")["sku"]["tier"], "FlexConsumption"),
        (
            "runtime",
            site["properties"]["functionAppConfig"]["runtime"],
            {"name": "python", "version": "3.11"},
        ),
        ("storage allowSharedKeyAccess", storage["properties"]["allowSharedKeyAccess"], False),
        ("storage minimumTlsVersion", storage["properties"]["minimumTlsVersion"], "TLS1_2"),
        ("storage allowBlobPublicAccess", storage["properties"]["allowBlobPublicAccess"], False),
        (
            "Application Insights DisableLocalAuth",
            _resource(app, "appInsights")["properties"]["DisableLocalAuth"],
            True,
        ),
        (
            "Log Analytics disableLocalAuth",
            _resource(app, "workspace")["properties"]["features"]["disableLocalAuth"],
            True,
        ),
        ("FTP basic publishing", _resource(app, "ftpCredentials")["properties"]["allow"], False),
        ("SCM basic publishing", _resource(app, "scmCredentials")["properties"]["allow"], False),
        (
            "host storage credential",
            _setting(site, "AzureWebJobsStorage__credential"),
            "managedidentity",
        ),
        ("AzureWebJobsStorage connection string", _setting(site, "AzureWebJobsStorage"), None),
        ("Graph credential", _setting(site, "GRAPH_CREDENTIAL"), "managed_identity"),
        ("Graph role value", graph["parameters"]["appRoleValue"].get("default"), GRAPH_ROLE),
        (
            "grantGraphPermission default",
            main["parameters"]["grantGraphPermission"].get("default"),
            True,
        ),
    ]
    problems = [
        f"{what} is {got!r}, must be {want!r}" for what, got, want in expected if got != want
    ]
    client_id = _setting(site, "AZURE_CLIENT_ID")
    if "identity" not in json.dumps(client_id):
        problems.append("AZURE_CLIENT_ID must be the user-assigned identity's client id")
    if "filter" not in json.dumps(_resource(graph, "grant")["appRoleId"]):
        problems.append("the Graph app role must be looked up by its value, not hard-coded")
    endpoint = str(parameters.get("graphEndpoint", {}).get("value", ""))
    if not endpoint.removeprefix("${GRAPH_ENDPOINT=").startswith("https://"):
        problems.append(f"main.parameters.json graphEndpoint {endpoint!r} must be https")
    if "false" in str(parameters.get("grantGraphPermission", {}).get("value", "")).lower():
        problems.append("main.parameters.json must not turn the Graph grant off by default")
    return problems


# Properties and app settings Flex Consumption refuses (ARM error 51021, "The following list of …
# site configuration properties (Site.SiteConfig.FtpsState, …) for Flex Consumption sites is
# invalid"), or that it no longer uses. Sources: Microsoft Learn, "Flex Consumption plan hosting",
# its deprecated properties and app settings; azure-cli issue 31414 and azure-pipelines-tasks issue
# 21032 (the error for ftpsState); Azure Verified Modules' web/site module, which asserts that
# ftpsState is absent on Flex.
FLEX_REJECTED_SITE_CONFIG = (
    "ftpsState", "linuxFxVersion", "netFrameworkVersion", "javaVersion", "powerShellVersion",
    "use32BitWorkerProcess", "alwaysOn", "functionAppScaleLimit", "preWarmedInstanceCount",
)  # fmt: skip
FLEX_REJECTED_APP_SETTINGS = (
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT", "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_NODE_DEFAULT_VERSION", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    # Also on the Flex deprecations list: the runtime version and scale-out limit, which
    # functionAppConfig now holds, and the content share settings of a plan Flex does not use.
    "FUNCTIONS_WORKER_RUNTIME_VERSION", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_CONTENTOVERVNET", "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
)  # fmt: skip
# azd's Flex Consumption template names these outputs (Azure-Samples functions-quickstart azd
# templates); azd writes every output into .azure/<env>/.env.
AZD_OUTPUTS = ("AZURE_FUNCTION_NAME", "AZURE_TENANT_ID", "SERVICE_API_NAME")
# Bicep parameter -> the `azd env set` variable main.parameters.json reads it from.
AZD_PARAMETERS = {
    "allowedInbound": "ALLOWED_INBOUND",
    "allowedDeployInbound": "ALLOWED_DEPLOY_INBOUND",
    "maximumInstanceCount": "MAXIMUM_INSTANCE_COUNT",
}
GRAPH_EXTENSION = re.compile(
    r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+"
)


def _sites(parsed: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{file} {name}", resource["config"])
        for file, template in parsed.items()
        for name, resource in template.get("resources", {}).items()
        if resource.get("type") == "Microsoft.Web/sites"
    ]


def flex_violations(parsed: dict[str, dict[str, Any]]) -> list[str]:
    """Site properties and app settings Flex Consumption refuses, wherever a site declares them."""
    problems = []
    for where, site in _sites(parsed):
        config = site.get("properties", {}).get("siteConfig", {})
        for name in FLEX_REJECTED_SITE_CONFIG:
            if name in config:
                problems.append(f"{where}: siteConfig.{name} is refused on Flex Consumption")
        for entry in config.get("appSettings", []):
            if isinstance(entry, dict) and entry.get("name") in FLEX_REJECTED_APP_SETTINGS:
                problems.append(
                    f"{where}: app setting {entry['name']} is refused on Flex Consumption"
                )
    return problems


def _diagnostics(app: dict[str, Any], scope: str) -> set[str]:
    """The log categories a diagnostic setting on `scope` sends to the workspace."""
    categories: set[str] = set()
    for resource in app["resources"].values():
        config = resource["config"]
        if resource["type"] != "Microsoft.Insights/diagnosticSettings" or config["scope"] != scope:
            continue
        if "workspace" in json.dumps(config["properties"].get("workspaceId")):
            logs = config["properties"].get("logs", [])
            categories |= {log["category"] for log in logs if log.get("enabled") is True}
    return categories


# Built-in roles the identity needs on the storage account (the same ids in every tenant). The
# jobs' queue trigger needs contributor: the documented reader and message-processor roles cannot
# release a failed message (azure-docs issue 120932), and the poison queue is made on demand.
STORAGE_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
}


def _jobs_storage_violations(infra: Path, app: dict[str, Any]) -> list[str]:
    """The jobs' queue, poison queue and table exist under the names the code uses, and the
    identity holds the storage roles they need."""
    problems = []
    variables = {name: v["value"] for name, v in app["variables"].items()}
    worker = json.loads((infra.parent / "BulkUnassignJobWorker" / "function.json").read_text())
    [trigger] = [b for b in worker["bindings"] if b["type"] == "queueTrigger"]
    if variables.get("jobsQueueName") != trigger["queueName"]:
        problems.append("the jobs' queue must be the worker's queueName")
    settings_text = (infra.parent / "shared" / "jobs" / "settings.py").read_text()
    if f'TABLE = "{variables.get("jobsTableName")}"' not in settings_text:
        problems.append("the jobs' table must be shared/jobs/settings.py's TABLE")
    names = {
        json.dumps(resource["config"]["name"])
        for resource in app["resources"].values()
        if resource["type"].endswith(("queueServices/queues", "tableServices/tables"))
    }
    for wanted in ('"jobsQueueName"', '"${jobsQueueName}-poison"', '"jobsTableName"'):
        if wanted not in names:
            problems.append(f"no storage resource named {wanted.strip(chr(34))}")
    role_ids = {str(v) for v in variables.values() if str(v) in STORAGE_ROLES}
    assigned = json.dumps([r["config"]["properties"]["roleDefinitionId"]
                           for r in app["resources"].values()
                           if r["type"] == "Microsoft.Authorization/roleAssignments"])  # fmt: skip
    for role_id, role in STORAGE_ROLES.items():
        variable = next((n for n, v in variables.items() if v == role_id), None)
        if role_id not in role_ids or variable is None or variable not in assigned:
            problems.append(f"the identity must hold {role}")
    return problems


def _description(parameter: dict[str, Any]) -> str:
    return " ".join(
        str(d["argument"]) for d in parameter["decorators"] if d["type"] == "description"
    )


def platform_violations(infra: Path = INFRA) -> list[str]:
    """What ARM, Flex Consumption and azd would refuse or get wrong, read from the templates."""
    parsed = parse_all(infra)
    app, main = parsed["app/resources.bicep"], parsed["main.bicep"]
    problems = flex_violations(parsed)
    site = _resource(app, "site")
    config = site["properties"]["siteConfig"]
    # An inbound list on the callers must not lock the deploy (SCM) host: it has its own list.
    if config.get("scmIpSecurityRestrictionsUseMain") is not False:
        problems.append("scmIpSecurityRestrictionsUseMain must be false")
    for key in ("scmIpSecurityRestrictions", "scmIpSecurityRestrictionsDefaultAction"):
        if "allowedDeployInbound" not in json.dumps(config.get(key)):
            problems.append(f"{key} must follow allowedDeployInbound")
    # Host storage by service URI: an account name alone is not valid in sovereign clouds.
    if _setting(site, "AzureWebJobsStorage__accountName") is not None:
        problems.append("AzureWebJobsStorage__accountName is not valid in sovereign clouds")
    for service in ("blob", "queue", "table"):
        name = f"AzureWebJobsStorage__{service}ServiceUri"
        uri = json.dumps(_setting(site, name))
        if "primaryEndpoints" not in uri or f'"{service}"' not in uri:
            problems.append(f"{name} must be primaryEndpoints.{service}")
    problems += _jobs_storage_violations(infra, app)
    # azd: its location prompt, no region list that would refuse regions added later.
    location = main["parameters"]["location"]["decorators"]
    if {"type": "metadata", "argument": {"azd": {"type": "location"}}} not in location:
        problems.append("location must carry azd's location metadata")
    if any(d["type"] == "allowed" for d in location):
        problems.append("location must not list allowed regions")
    parameters = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    for name, variable in AZD_PARAMETERS.items():
        value = str(parameters.get(name, {}).get("value", ""))
        if not value.startswith("${" + variable + "="):
            problems.append(f"main.parameters.json {name} must read {variable}")
    outputs = main["outputs"]
    problems += [f"output {name} is missing" for name in AZD_OUTPUTS if name not in outputs]
    if "AZURE_CLIENT_ID" in outputs:
        problems.append("output AZURE_CLIENT_ID would reach every azure-identity credential")
    # The Graph extension works in the public cloud only; the descriptions say so.
    for name in ("grantGraphPermission", "createApiRegistration"):
        if "public cloud only" not in _description(main["parameters"][name]):
            problems.append(f"{name} must say the Graph extension is public cloud only")
    # Custom connectors call from AzureConnectors, the HTTP action from LogicApps.
    inbound = _description(main["parameters"]["allowedInbound"])
    if "AzureConnectors" not in inbound or "LogicApps" not in inbound:
        problems.append("allowedInbound must name the AzureConnectors and LogicApps tags")
    # azd refuses to load a project outside its requiredVersions (Azure/azure-dev,
    # schemas/v1.0/azure.yaml.json); versions before 1.18.0 ignore .funcignore.
    azure_yaml = (infra.parent / "azure.yaml").read_text()
    if not re.search(r'^requiredVersions:\n  azd: ">= 1\.18\.0"$', azure_yaml, re.MULTILINE):
        problems.append('azure.yaml must require azd ">= 1.18.0"')
    bicepconfig = json.loads((infra / "bicepconfig.json").read_text())
    if not GRAPH_EXTENSION.fullmatch(str(bicepconfig["extensions"].get("microsoftGraphV1"))):
        problems.append("bicepconfig.json must pin the Graph extension's version")
    # What an auditor asks for: the app's logs, host storage reads and writes, soft delete.
    if "FunctionAppLogs" not in _diagnostics(app, "site"):
        problems.append("the Function App's logs must go to the workspace")
    if not {"StorageRead", "StorageWrite"} <= _diagnostics(app, "blobService"):
        problems.append("host storage reads and writes must be logged to the workspace")
    retention = _resource(app, "blobService").get("properties", {})
    if retention.get("deleteRetentionPolicy", {}).get("enabled") is not True:
        problems.append("host storage must have blob soft delete")
    return problems


def _checkov() -> Path:
    binary = CHECKOV_VENV / "bin" / "checkov"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
        pip = [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run(
            [*pip, "--disable-pip-version-check", f"checkov=={CHECKOV_VERSION}"],
            check=True,
            stderr=subprocess.DEVNULL,  # the index's per-package notices; errors still fail
        )
    return binary


def checkov_problems(infra: Path = INFRA) -> list[str]:
    accepted: dict[str, str] = json.loads((infra / "checkov-accepted.json").read_text())
    problems = [
        f"{check} is accepted without a reason"
        for check, why in accepted.items()
        if not why.strip()
    ]
    run = subprocess.run(
        [str(_checkov()), "-d", str(infra), "--framework", "bicep", "--skip-download",
         "--compact", "-o", "json", *(arg for p in CHECKOV_SKIPPED for arg in ("--skip-path", p))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        reports = json.loads(run.stdout)
    except ValueError:
        return [*problems, f"checkov did not report: {run.stderr.strip()[-400:]}"]
    for report in reports if isinstance(reports, list) else [reports]:
        results = report.get("results", {})
        for file in results.get("parsing_errors", []):
            problems.append(f"checkov could not parse {file}")
        if report.get("summary", {}).get("parsing_errors", 0) and not results.get("parsing_errors"):
            problems.append("checkov reports parsing errors")
        for failed in results.get("failed_checks", []):
            if failed["check_id"] not in accepted:
                problems.append(
                    f"{failed['check_id']} {failed['check_name']} ({failed['file_path']}, "
                    f"{failed['resource']}): fix it or accept it with a reason"
                )
        if not results.get("passed_checks"):
            problems.append("checkov passed no check at all: did it scan the templates?")
        summary = report.get("summary", {})
        print(
            f"checkov: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed "
            f"({len(accepted)} accepted with reasons), {summary.get('parsing_errors', 0)} parse errors"
        )
    return problems


def main() -> int:
    try:
        parsed = parse_all()
    except ValueError as exc:
        print(exc)
        return 1
    print(f"pycep: {len(parsed)} templates parse: {', '.join(parsed)}")
    problems = security_violations() + platform_violations() + checkov_problems()
    for problem in problems:
        print(f"infra: {problem}")
    print("infra checks: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
