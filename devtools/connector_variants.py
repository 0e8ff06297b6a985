"""Generate the Entra ID variant of the Power Automate connector from the function-key one.

    python -m devtools.connector_variants           # rewrite connector/entra/
    python -m devtools.connector_variants --check   # exit 1 if connector/entra/ is stale

`connector/` (function key only) is the source of truth; `connector/entra/` is generated from it
and committed. The two differ only in authentication: the definition's `securityDefinitions` and
`security`, and the properties' `connectionParameters` and `policyTemplateInstances`. Everything
else (operations, schemas, certification metadata, the `hostName` connection parameter and its
`dynamichosturl` policy, the `setheader` policy asking for problems as `application/json`) is
copied unchanged.

Why two folders rather than one definition with `connectionParameterSets`: multi-auth can only be
created with the Power Platform Connectors CLI, not in the custom connector wizard
(https://learn.microsoft.com/connectors/custom-connectors/multi-auth), so a connector built that
way could no longer be imported or edited in the portal; and a deployment uses one mode at a time
(with `CALLER_TENANT_ID` set, a function-key-only connection gets 401 on every call), so offering
both in one connector would only offer a choice that fails.

Shapes, from Microsoft's documentation:
- a custom connector has one authentication type; OAuth 2.0 with identity provider `aad` is
  declared in `connectionParameters` as an `oauthSetting` (`oAuthSettings`: `identityProvider`,
  `clientId`, `scopes`, `redirectMode`, `redirectUrl`, `properties.IsFirstParty`,
  `customParameters` `loginUri` / `tenantId` / `resourceUri`), the schema that
  `connectionParameterSets.values[].parameters` reuses
  (https://learn.microsoft.com/connectors/custom-connectors/multi-auth). `GlobalPerConnector`
  makes Power Platform give the connector its own redirect URL,
  `https://global.consent.azure-apim.net/redirect/<connector id>`, shown once the connector is
  saved (microsoft/PowerPlatformConnectors discussion 3252); `redirectUrl` here is the generic
  form it replaces;
- the function key then travels as a `securestring` connection parameter, set on each request by
  the `setheader` policy template (`x-ms-apimTemplateParameter.name` / `.value` /
  `.existsAction`, `x-ms-apimTemplate-policySection` `Request`;
  https://learn.microsoft.com/connectors/custom-connectors/policy-templates/setheader/setheader);
- `dynamichosturl` replaces the host URL with `x-ms-apimTemplateParameter.urlTemplate`, which may
  use `@connectionParameters('…')`
  (https://learn.microsoft.com/connectors/custom-connectors/policy-templates/dynamichosturl/dynamichosturl);
  it replaces the definition's base path too, so the template ends with it
  (MicrosoftDocs/BusinessApplicationPlatform-Connectors-public issue 294).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "connector"
TARGET = SOURCE / "entra"
DEFINITION = "apiDefinition.swagger.json"
PROPERTIES = "apiProperties.json"

Document = dict[str, Any]

# Placeholders the guide (docs/power-automate.md, section 9) tells the maker to replace.
CLIENT_ID = "00000000-0000-0000-0000-000000000000"
APP_ID_URI = "api://<tenant id>/<unique name>"

# The parts of each file that carry authentication: the only parts the variants may differ in.
DEFINITION_AUTH_KEYS = ("securityDefinitions", "security")
PROPERTIES_AUTH_KEYS = ("connectionParameters", "policyTemplateInstances")

OAUTH_DEFINITION: Document = {
    "oauth2_auth": {
        "type": "oauth2",
        "flow": "accessCode",
        "authorizationUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
        "tokenUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
        "scopes": {},
    }
}

TOKEN_PARAMETER: Document = {
    "type": "oauthSetting",
    "oAuthSettings": {
        "identityProvider": "aad",
        "clientId": CLIENT_ID,
        "scopes": [],
        "redirectMode": "GlobalPerConnector",
        "redirectUrl": "https://global.consent.azure-apim.net/redirect",
        "properties": {"IsFirstParty": "False"},
        "customParameters": {
            "loginUri": {"value": "https://login.microsoftonline.com"},
            "tenantId": {"value": "common"},
            "resourceUri": {"value": APP_ID_URI},
        },
    },
    "uiDefinition": {
        "displayName": "Sign in with Microsoft Entra ID",
        "description": "The signed-in user needs the app role Autopilot.UnassignUser on the API.",
        "tooltip": "Provide your work account",
        "constraints": {"required": "true"},
    },
}

FUNCTION_KEY_PARAMETER: Document = {
    "type": "securestring",
    "uiDefinition": {
        "displayName": "Function key",
        "description": "A function key of the Autopilot unassign Function App (one named key per integration).",
        "tooltip": "Sent in the x-functions-key header, beside the Entra ID token.",
        "constraints": {"tabIndex": 2, "clearText": False, "required": "true"},
    },
}

SET_FUNCTION_KEY: Document = {
    "templateId": "setheader",
    "title": "Function key",
    "parameters": {
        "x-ms-apimTemplateParameter.name": "x-functions-key",
        "x-ms-apimTemplateParameter.value": "@connectionParameters('functionKey')",
        "x-ms-apimTemplateParameter.existsAction": "override",
        "x-ms-apimTemplate-policySection": "Request",
    },
}


def load(path: Path) -> Document:
    loaded: Document = json.loads(path.read_text())
    return loaded


def dump(document: Document) -> str:
    """The layout every connector file uses: two-space indent, a final newline."""
    return json.dumps(document, indent=2) + "\n"


def entra_definition(source: Document) -> Document:
    """The source definition with OAuth 2.0 (Entra ID) as its one security scheme."""
    out = copy.deepcopy(source)
    out["securityDefinitions"] = copy.deepcopy(OAUTH_DEFINITION)
    out["security"] = [{name: []} for name in OAUTH_DEFINITION]
    return out


def entra_properties(source: Document) -> Document:
    """The source properties with the token, the function key as a parameter, and its policy."""
    out = copy.deepcopy(source)
    properties = out["properties"]
    parameters: Document = {}
    for name, parameter in source["properties"]["connectionParameters"].items():
        if parameter.get("type") == "securestring":  # the source's function key (api_key)
            parameters["token"] = copy.deepcopy(TOKEN_PARAMETER)
            parameters["functionKey"] = copy.deepcopy(FUNCTION_KEY_PARAMETER)
        else:
            parameters[name] = copy.deepcopy(parameter)
    properties["connectionParameters"] = parameters
    policies = copy.deepcopy(source["properties"].get("policyTemplateInstances", []))
    properties["policyTemplateInstances"] = [*policies, copy.deepcopy(SET_FUNCTION_KEY)]
    return out


def render(source: Path = SOURCE) -> dict[str, str]:
    """File name -> text of each generated file."""
    return {
        DEFINITION: dump(entra_definition(load(source / DEFINITION))),
        PROPERTIES: dump(entra_properties(load(source / PROPERTIES))),
    }


def stale(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Generated files that are missing or differ from what the source gives."""
    return [
        name
        for name, text in render(source).items()
        if not (target / name).is_file() or (target / name).read_text() != text
    ]


def write(source: Path = SOURCE, target: Path = TARGET) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(source).items():
        (target / name).write_text(text)
        written.append(target / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate connector/entra/ from connector/.")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"stale: {(TARGET / name).relative_to(ROOT)}", file=sys.stderr)
        return 1 if names else 0
    for path in write():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
