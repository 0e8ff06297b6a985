"""The two connectors: function key only (`connector/`) and Entra ID (`connector/entra/`).

- `connector/entra/` is exactly what `python -m devtools.connector_variants` generates from
  `connector/`, so the two never drift apart;
- they differ only in authentication, and each declares it the way Power Platform documents;
- both reach the Function App named by the connection (`hostName` + `dynamichosturl`), so one
  connector serves dev, test and production;
- both ask for problems as `application/json`, which flows are documented to parse;
- the Entra variant meets the same certification rules as the source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from devtools import connector_variants as variants
from devtools.package import ignore_patterns, ignored
from shared.media import JSON, problem_media_type
from tests.test_connector import RULES

Document = dict[str, Any]
SOURCE, ENTRA = variants.SOURCE, variants.TARGET
NAME = "x-ms-apimTemplateParameter.name"


def load(folder: Path, name: str) -> Document:
    loaded: Document = json.loads((folder / name).read_text())
    return loaded


def without(document: Document, keys: tuple[str, ...]) -> Document:
    return {k: v for k, v in document.items() if k not in keys}


def test_the_entra_variant_is_what_the_script_generates() -> None:
    """Regenerating gives exactly the committed files: edit connector/, then regenerate."""
    assert variants.stale() == []
    for name, text in variants.render().items():
        assert (ENTRA / name).read_text() == text, name
    assert variants.main(["--check"]) == 0


def test_the_check_notices_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "entra"
    assert sorted(variants.stale(SOURCE, target)) == [variants.DEFINITION, variants.PROPERTIES]
    variants.write(SOURCE, target)
    assert variants.stale(SOURCE, target) == []
    edited = load(target, variants.DEFINITION)
    edited["info"]["title"] = "Autopilot unassign (edited)"
    (target / variants.DEFINITION).write_text(variants.dump(edited))
    assert variants.stale(SOURCE, target) == [variants.DEFINITION]


def test_the_definitions_differ_only_in_authentication() -> None:
    keys = variants.DEFINITION_AUTH_KEYS
    source, entra = load(SOURCE, variants.DEFINITION), load(ENTRA, variants.DEFINITION)
    assert without(source, keys) == without(entra, keys)
    assert all(source[k] != entra[k] for k in keys)


def test_the_properties_differ_only_in_authentication() -> None:
    keys = variants.PROPERTIES_AUTH_KEYS
    source = load(SOURCE, variants.PROPERTIES)["properties"]
    entra = load(ENTRA, variants.PROPERTIES)["properties"]
    assert without(source, keys) == without(entra, keys)
    # Inside them, the host parameter and its policy are shared, unchanged.
    assert source["connectionParameters"]["hostName"] == entra["connectionParameters"]["hostName"]
    assert (
        entra["policyTemplateInstances"][: len(source["policyTemplateInstances"])]
        == (source["policyTemplateInstances"])
    )


def test_the_entra_definition_is_valid_swagger_2() -> None:
    validate(load(ENTRA, variants.DEFINITION))


@pytest.mark.parametrize("rule", RULES)
def test_the_entra_variant_meets_the_certification_rule(rule: str) -> None:
    assert RULES[rule](load(ENTRA, variants.DEFINITION), load(ENTRA, variants.PROPERTIES)) == []


# https://learn.microsoft.com/connectors/custom-connectors/policy-templates/dynamichosturl/dynamichosturl :
# `x-ms-apimTemplateParameter.urlTemplate` (required) replaces the host URL and may use
# `@connectionParameters('…')`; without `x-ms-apimTemplate-operationName` it applies to every
# operation.
@pytest.mark.parametrize("folder", [SOURCE, ENTRA], ids=["function key", "entra"])
def test_each_connector_calls_the_host_its_connection_names(folder: Path) -> None:
    properties = load(folder, variants.PROPERTIES)["properties"]
    host = properties["connectionParameters"]["hostName"]
    assert host["type"] == "string"
    assert host["uiDefinition"]["constraints"]["required"] == "true"
    [policy] = [
        p for p in properties["policyTemplateInstances"] if p["templateId"] == "dynamichosturl"
    ]
    assert policy["parameters"] == {
        "x-ms-apimTemplateParameter.urlTemplate": "https://@connectionParameters('hostName')/api"
    }
    # The policy replaces the base path as well as the host, so the template ends with the
    # definition's base path (MicrosoftDocs/BusinessApplicationPlatform-Connectors-public issue
    # 294: "you need" the base path in urlTemplate); certified connectors with basePath /api do
    # the same (cioplenu, Open Data Network in microsoft/PowerPlatformConnectors).
    assert load(folder, variants.DEFINITION)["basePath"] == "/api"


def test_the_function_key_connector_keeps_its_api_key() -> None:
    definition = load(SOURCE, variants.DEFINITION)
    assert definition["securityDefinitions"] == {
        "function_key": {"type": "apiKey", "in": "header", "name": "x-functions-key"}
    }
    assert definition["security"] == [{"function_key": []}]
    parameters = load(SOURCE, variants.PROPERTIES)["properties"]["connectionParameters"]
    assert parameters["api_key"]["type"] == "securestring"
    assert set(parameters) == {"hostName", "api_key"}


# Swagger 2.0 OAuth 2.0 authorization-code flow: `flow` "accessCode" needs `authorizationUrl`,
# `tokenUrl` and `scopes` (https://swagger.io/specification/v2/#security-scheme-object); Power
# Platform reads the identity provider from apiProperties.json, not from these URLs.
def test_the_entra_definition_declares_oauth2_only() -> None:
    definition = load(ENTRA, variants.DEFINITION)
    assert definition["securityDefinitions"] == {
        "oauth2_auth": {
            "type": "oauth2",
            "flow": "accessCode",
            "authorizationUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
            "tokenUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
            "scopes": {},
        }
    }
    assert definition["security"] == [{"oauth2_auth": []}]


# https://learn.microsoft.com/connectors/custom-connectors/multi-auth (the parameter schema, as
# in `connectionParameters`): an `oauthSetting` with `oAuthSettings`; one authentication type per
# connector, so the function key is a `securestring` parameter, not a second security scheme.
def test_the_entra_connection_signs_in_with_aad_for_the_api() -> None:
    parameters = load(ENTRA, variants.PROPERTIES)["properties"]["connectionParameters"]
    assert set(parameters) == {"hostName", "token", "functionKey"}
    token = parameters["token"]
    assert token["type"] == "oauthSetting"
    settings = token["oAuthSettings"]
    assert settings["identityProvider"] == "aad"
    assert settings["redirectMode"] == "GlobalPerConnector"
    assert settings["properties"]["IsFirstParty"] == "False"
    assert settings["customParameters"]["resourceUri"] == {"value": variants.APP_ID_URI}
    assert settings["customParameters"]["loginUri"] == {
        "value": "https://login.microsoftonline.com"
    }
    assert "clientSecret" not in settings  # never committed: given at import (paconn --secret)
    key = parameters["functionKey"]
    assert (
        key["type"] == "securestring" and key["uiDefinition"]["constraints"]["clearText"] is False
    )


def test_the_app_id_uri_placeholder_has_the_registrations_form() -> None:
    """infra/api-registration.bicep: identifierUri = 'api://${tenant().tenantId}/${uniqueName}'."""
    bicep = (variants.ROOT / "infra" / "api-registration.bicep").read_text()
    assert "api://${tenant().tenantId}/${uniqueName}" in bicep
    assert variants.APP_ID_URI == "api://<tenant id>/<unique name>"


# https://learn.microsoft.com/connectors/custom-connectors/policy-templates/setheader/setheader :
# name, value and policy section are required; existsAction "override" replaces a value already
# there; the value may be `@connectionParameters('…')`.
def test_the_entra_connector_sends_the_function_key_on_every_request() -> None:
    policies = load(ENTRA, variants.PROPERTIES)["properties"]["policyTemplateInstances"]
    [policy] = [p for p in policies if p["title"] == "Function key"]
    assert policy["templateId"] == "setheader"
    assert policy["parameters"] == {
        "x-ms-apimTemplateParameter.name": "x-functions-key",
        "x-ms-apimTemplateParameter.value": "@connectionParameters('functionKey')",
        "x-ms-apimTemplateParameter.existsAction": "override",
        "x-ms-apimTemplate-policySection": "Request",
    }
    assert "x-ms-apimTemplate-operationName" not in policy  # every operation


# Problems are sent as application/json when the request asks for it (shared/media.py): Microsoft
# documents that flows parse application/json bodies and is silent on application/problem+json.
@pytest.mark.parametrize("folder", [SOURCE, ENTRA], ids=["function key", "entra"])
def test_each_connector_asks_for_problems_as_plain_json(folder: Path) -> None:
    policies = load(folder, variants.PROPERTIES)["properties"]["policyTemplateInstances"]
    [policy] = [p for p in policies if p["parameters"].get(NAME) == "Accept"]
    assert policy["templateId"] == "setheader"
    assert policy["parameters"] == {
        NAME: "Accept",
        "x-ms-apimTemplateParameter.value": "application/json",
        "x-ms-apimTemplateParameter.existsAction": "override",
        "x-ms-apimTemplate-policySection": "Request",
    }
    assert "x-ms-apimTemplate-operationName" not in policy  # every operation
    assert problem_media_type("application/json") == JSON


def test_no_connector_file_is_deployed() -> None:
    patterns = ignore_patterns()
    for folder in (SOURCE, ENTRA):
        for name in (variants.DEFINITION, variants.PROPERTIES):
            assert ignored((folder / name).relative_to(variants.ROOT), patterns), folder / name


# --- apiProperties.json: the shape Power Platform reads. ------------------------------------------
# From the paconn apiProperties schema (microsoft/PowerPlatformConnectors,
# schemas/paconn-apiProperties.schema.json) and the connector submission rules in that repository's
# pull request template: a `properties` object (and optionally `$schema`), `iconBrandColor`
# required and not #007ee5 or #ffffff; connection parameter names of letters, digits and "_",
# each of a known type, its `uiDefinition` and `constraints` of known keys and types (`required`
# and `hidden` are the strings "true"/"false"); an `oauthSetting` names a known identity provider
# and `properties.IsFirstParty` as "True"/"False"; each policy is a template we know, with exactly
# its parameters (POLICY_PARAMETERS). Two keys beyond that schema: `publisher` and `stackOwner`,
# which certification requires (certification-submission on Learn, as tests/test_connector.py
# cites), and `redirectMode` "GlobalPerConnector", what Power Platform now asks OAuth connectors
# to use (microsoft/PowerPlatformConnectors discussion 3252).
PROPERTY_KEYS = {"iconBrandColor", "publisher", "stackOwner", "capabilities",
                 "connectionParameters", "policyTemplateInstances"}  # fmt: skip
OPERATIONS = "x-ms-apimTemplate-operationName"  # optional on every template: a list of operations
# templateId -> {parameter: the values it may take, or None for any string}; "required" lists
# those that must be there. setheader: learn.microsoft.com/connectors/custom-connectors/
# policy-templates/setheader/setheader; dynamichosturl: the same path under dynamichosturl.
POLICY_PARAMETERS: dict[str, dict[str, frozenset[str] | None]] = {
    "setheader": {
        NAME: None,
        "x-ms-apimTemplateParameter.value": None,
        "x-ms-apimTemplateParameter.existsAction": frozenset({"override", "skip", "append"}),
        "x-ms-apimTemplate-policySection": frozenset({"Request", "Response", "Failure"}),
    },
    "dynamichosturl": {"x-ms-apimTemplateParameter.urlTemplate": None},
}
REQUIRED_POLICY_PARAMETERS = {
    "setheader": {NAME, "x-ms-apimTemplateParameter.value"},
    "dynamichosturl": {"x-ms-apimTemplateParameter.urlTemplate"},
}
PARAMETER_TYPES = {"string", "securestring", "int", "bool", "oauthSetting", "gatewaySetting"}
UI_KEYS = {"displayName", "description", "tooltip", "tabIndex", "constraints"}
CONSTRAINT_TYPES = {"clearText": bool, "required": str, "tabIndex": int, "hidden": str,
                    "capability": list, "allowedValues": list, "dependencies": dict}  # fmt: skip
PROVIDERS = {"oauth2", "oauth2generic", "aad", "aadcertificate", "facebook"}
REDIRECT_MODES = {"Global", "GlobalPerConnector", "Direct"}
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
PARAMETER_NAME = re.compile(r"[0-9a-zA-Z_]+")


def _parameter_violations(name: str, parameter: Document) -> list[str]:
    found = []
    if not PARAMETER_NAME.fullmatch(name):
        found.append(f"{name} name")
    if parameter.get("type") not in PARAMETER_TYPES:
        found.append(f"{name} type")
    ui = parameter.get("uiDefinition", {})
    if set(ui) - UI_KEYS:
        found.append(f"{name} uiDefinition")
    for key, value in ui.get("constraints", {}).items():
        flag = key in ("required", "hidden")
        if type(value) is not CONSTRAINT_TYPES.get(key) or (
            flag and value not in ("true", "false")
        ):
            found.append(f"{name} constraints.{key}")
    if parameter.get("type") == "oauthSetting":
        settings = parameter.get("oAuthSettings", {})
        if settings.get("identityProvider") not in PROVIDERS:
            found.append(f"{name} identityProvider")
        if settings.get("properties", {}).get("IsFirstParty") not in ("True", "False"):
            found.append(f"{name} IsFirstParty")
        if settings.get("redirectMode", "Global") not in REDIRECT_MODES:
            found.append(f"{name} redirectMode")
        for key, custom in settings.get("customParameters", {}).items():
            if set(custom) != {"value"} or not isinstance(custom["value"], str):
                found.append(f"{name} customParameters.{key}")
    return found


def _policy_violations(index: int, policy: Document) -> list[str]:
    label = f"policy {index}"
    template = policy.get("templateId")
    allowed = POLICY_PARAMETERS.get(str(template))
    if allowed is None or set(policy) != {"templateId", "title", "parameters"}:
        return [label]
    parameters: Document = policy["parameters"]
    found = []
    if REQUIRED_POLICY_PARAMETERS[str(template)] - set(parameters):
        found.append(f"{label} required parameter")
    for name, value in parameters.items():
        if name == OPERATIONS:
            if not isinstance(value, list):
                found.append(f"{label} {name}")
            continue
        if name not in allowed or not isinstance(value, str):
            found.append(f"{label} {name}")
            continue
        values = allowed[name]
        if values is not None and value not in values:
            found.append(f"{label} {name}")
    return found


def properties_violations(document: Document) -> list[str]:
    if "properties" not in document or set(document) - {"properties", "$schema"}:
        return ["top level"]
    properties = document["properties"]
    found = [f"unknown {key}" for key in sorted(set(properties) - PROPERTY_KEYS)]
    colour = properties.get("iconBrandColor")
    if not HEX_COLOUR.fullmatch(str(colour)) or str(colour).lower() in ("#007ee5", "#ffffff"):
        found.append("iconBrandColor")
    for name, parameter in properties.get("connectionParameters", {}).items():
        found += _parameter_violations(name, parameter)
    for index, policy in enumerate(properties.get("policyTemplateInstances", [])):
        found += _policy_violations(index, policy)
    return found


@pytest.mark.parametrize("folder", [SOURCE, ENTRA], ids=["function key", "entra"])
def test_the_properties_have_the_shape_power_platform_reads(folder: Path) -> None:
    assert properties_violations(load(folder, variants.PROPERTIES)) == []


def _policy(document: Document, index: int) -> Document:
    found: Document = document["properties"]["policyTemplateInstances"][index]["parameters"]
    return found


def test_what_the_schema_allows_passes() -> None:
    document = load(SOURCE, variants.PROPERTIES)
    document["$schema"] = "https://example.invalid/paconn-apiProperties.schema.json#"
    _policy(document, 0)[OPERATIONS] = ["UnassignUserById"]
    assert properties_violations(document) == []


def _parameters(document: Document) -> Document:
    found: Document = document["properties"]["connectionParameters"]
    return found


PROPERTY_WEAKENINGS: list[tuple[str, Any, str]] = [
    ("function key", lambda d: d.update(swagger="2.0"), "top level"),
    ("function key", lambda d: d["properties"].update(brandColor="#123456"), "unknown brandColor"),
    ("function key", lambda d: d["properties"].pop("iconBrandColor"), "iconBrandColor"),
    ("function key", lambda d: d["properties"].update(iconBrandColor="#ffffff"), "iconBrandColor"),
    ("function key", lambda d: d["properties"].update(iconBrandColor="blue"), "iconBrandColor"),
    ("function key", lambda d: _parameters(d).update({"host-name": {"type": "string"}}), "host-name name"),
    ("function key", lambda d: _parameters(d)["api_key"].update(type="password"), "api_key type"),
    ("function key", lambda d: _parameters(d)["api_key"]["uiDefinition"].update(hint="x"), "api_key uiDefinition"),
    ("function key", lambda d: _parameters(d)["api_key"]["uiDefinition"]["constraints"].update(required=True), "api_key constraints.required"),
    ("function key", lambda d: _parameters(d)["hostName"]["uiDefinition"]["constraints"].update(required="yes"), "hostName constraints.required"),
    ("function key", lambda d: _parameters(d)["api_key"]["uiDefinition"]["constraints"].update(clearText="false"), "api_key constraints.clearText"),
    ("function key", lambda d: d["properties"]["policyTemplateInstances"][0].pop("title"), "policy 0"),
    ("function key", lambda d: d["properties"]["policyTemplateInstances"][0].update(templateId="dynamicHost"), "policy 0"),
    ("function key", lambda d: _policy(d, 0).update({OPERATIONS: "UnassignUser"}), f"policy 0 {OPERATIONS}"),
    ("function key", lambda d: _policy(d, 0).pop("x-ms-apimTemplateParameter.urlTemplate"), "policy 0 required parameter"),
    ("function key", lambda d: _policy(d, 1).update({"x-ms-apimTemplateParameter.existsAction": "replace"}), "policy 1 x-ms-apimTemplateParameter.existsAction"),
    ("function key", lambda d: _policy(d, 1).update({"x-ms-apimTemplate-policySection": "Body"}), "policy 1 x-ms-apimTemplate-policySection"),
    ("function key", lambda d: _policy(d, 1).pop("x-ms-apimTemplateParameter.value"), "policy 1 required parameter"),
    ("function key", lambda d: _policy(d, 1).update({"x-ms-apimTemplateParameter.headerName": "Accept"}), "policy 1 x-ms-apimTemplateParameter.headerName"),
    ("entra", lambda d: _parameters(d)["token"]["oAuthSettings"].update(identityProvider="entra"), "token identityProvider"),
    ("entra", lambda d: _parameters(d)["token"]["oAuthSettings"]["properties"].update(IsFirstParty=False), "token IsFirstParty"),
    ("entra", lambda d: _parameters(d)["token"]["oAuthSettings"].update(redirectMode="PerConnector"), "token redirectMode"),
    ("entra", lambda d: _parameters(d)["token"]["oAuthSettings"]["customParameters"].update(tenantId="common"), "token customParameters.tenantId"),
]  # fmt: skip


@pytest.mark.parametrize(("folder", "weaken", "named"), PROPERTY_WEAKENINGS)
def test_a_weakened_properties_file_is_caught(folder: str, weaken: Any, named: str) -> None:
    document = load(SOURCE if folder == "function key" else ENTRA, variants.PROPERTIES)
    weaken(document)
    assert named in properties_violations(document)
