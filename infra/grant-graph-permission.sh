#!/usr/bin/env bash
# Grant the function's managed identity the one Graph application permission it needs, for
# tenants where the deployer may not grant Graph roles (deploy with grantGraphPermission=false).
# Run by a Privileged Role Administrator or Global Administrator, signed in with `az login`:
#   infra/grant-graph-permission.sh <principal (object) id of the managed identity>
# The deployment prints the id as IDENTITY_PRINCIPAL_ID. Safe to run again.
set -euo pipefail

principal_id="${1:?usage: $0 <principal (object) id of the managed identity>}"
role="DeviceManagementServiceConfig.ReadWrite.All"
graph_app_id="00000003-0000-0000-c000-000000000000" # Microsoft Graph, the same in every tenant
# The Graph endpoint of the signed-in cloud (public, US Government, China).
graph="$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)"
graph="${graph%/}"

graph_sp_id="$(az ad sp show --id "$graph_app_id" --query id -o tsv)"
# Looked up by value, so a typo fails here instead of granting something else.
role_id="$(az ad sp show --id "$graph_app_id" \
  --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)"
if [ -z "$role_id" ]; then
  echo "The Graph app role $role was not found." >&2
  exit 1
fi

assignments="$graph/v1.0/servicePrincipals/$principal_id/appRoleAssignments"
body="{\"principalId\": \"$principal_id\", \"resourceId\": \"$graph_sp_id\", \"appRoleId\": \"$role_id\"}"

# A brand-new identity can be unknown to Graph until Entra ID has replicated it: the principal is
# not found, or the grant is "Not a valid reference update" (msgraph-bicep-types issue 193). Those
# are retried with a growing wait, about 4 minutes in all; any other refusal ends the script at
# once. Prints the command's output (its warnings stay on stderr); fails with its error.
delay="${GRANT_RETRY_DELAY_SECONDS:-5}"
attempts="${GRANT_RETRY_ATTEMPTS:-8}"
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
retrying() {
  local attempt output
  for ((attempt = 1; ; attempt++)); do
    if output="$("$@" 2>"$errors")"; then
      cat "$errors" >&2
      printf '%s' "$output"
      return 0
    fi
    if ! grep -qiE "not a valid reference update|does not exist|Request_ResourceNotFound" \
      "$errors" || ((attempt >= attempts)); then
      cat "$errors" >&2
      echo "Granting $role to $principal_id failed (attempt $attempt of $attempts)." >&2
      return 1
    fi
    echo "The identity is not visible to Graph yet; trying again in ${delay}s ($attempt of $attempts)." >&2
    sleep "$delay"
    delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}

existing="$(retrying az rest --method GET --uri "$assignments" \
  --query "value[?appRoleId=='$role_id'].id | [0]" -o tsv)"
if [ -n "$existing" ]; then
  echo "$role is already granted to $principal_id."
  exit 0
fi
retrying az rest --method POST --uri "$assignments" --headers "Content-Type=application/json" \
  --body "$body" --output none >/dev/null
echo "Granted $role to $principal_id. An app that already holds a Graph token keeps it for up to"
echo "about 24 hours: restart the Function App to make it fetch one with the new permission."
