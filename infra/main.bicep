// Autopilot unassign: everything `azd up` (or `az deployment sub create`) needs, least privilege.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; it seeds the unique names of all resources.')
param environmentName string

@minLength(1)
@description('Region for all resources; it must offer the Flex Consumption plan.')
param location string

@description('Resource group to create or reuse; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Grant the Graph application permission here. Set false when the deployer holds no Entra role that may grant it; an admin then runs infra/grant-graph-permission.sh.')
param grantGraphPermission bool = true

@description('Also create the API app registration with the app role, and require callers to present an Entra ID token carrying it (on top of the function key).')
param createApiRegistration bool = false

@description('Inbound access restrictions, e.g. [{"ipAddress": "203.0.113.0/24"}] or [{"serviceTag": "LogicApps"}]. Empty: any caller with a function key.')
param allowedInbound array = []

@description('Microsoft Graph base URL (sovereign clouds: https://graph.microsoft.us, https://dod-graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Time budget in seconds for one single-device request (UNASSIGN_DEADLINE_SECONDS).')
param unassignDeadlineSeconds string = '20'

@description('Time budget in seconds for one bulk request (BULK_DEADLINE_SECONDS).')
param bulkDeadlineSeconds string = '60'

@description('Client-side write pace: writes per window (GRAPH_WRITES_PER_WINDOW). Intune allows 100 per 20 s per app and tenant.')
param graphWritesPerWindow string = '100'

@description('Client-side write pace: the window in seconds (GRAPH_WRITE_WINDOW_SECONDS).')
param graphWriteWindowSeconds string = '20'

@description('Most instances the app may scale out to. Each has its own write pace, so keep it low.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
// The app role callers need when Entra ID tokens are required (CALLER_ROLE).
var callerRole = 'Autopilot.UnassignUser'
var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module apiRegistration 'api-registration.bicep' = if (createApiRegistration) {
  name: 'api-registration'
  scope: rg
  params: {
    uniqueName: 'autopilot-unassign-${resourceToken}'
    roleValue: callerRole
  }
}

module app 'app/resources.bicep' = {
  name: 'autopilot-unassign'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    allowedInbound: allowedInbound
    graphEndpoint: graphEndpoint
    unassignDeadlineSeconds: unassignDeadlineSeconds
    bulkDeadlineSeconds: bulkDeadlineSeconds
    graphWritesPerWindow: graphWritesPerWindow
    graphWriteWindowSeconds: graphWriteWindowSeconds
    maximumInstanceCount: maximumInstanceCount
    callerTenantId: createApiRegistration ? tenant().tenantId : ''
    callerRole: callerRole
    callerAudience: createApiRegistration ? '${apiRegistration.outputs.appId},${apiRegistration.outputs.identifierUri}' : ''
  }
}

// The Graph application permission, looked up by its value on the Graph service principal.
module graphPermission 'graph-permissions.bicep' = if (grantGraphPermission) {
  name: 'graph-permission'
  scope: rg
  params: {
    principalId: app.outputs.identityPrincipalId
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_CLIENT_ID string = app.outputs.identityClientId
output IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output UNASSIGN_USER_URL string = app.outputs.unassignUserUrl
output BULK_UNASSIGN_USER_URL string = app.outputs.bulkUnassignUserUrl
output API_APP_ID string = createApiRegistration ? apiRegistration.outputs.appId : ''
output API_IDENTIFIER_URI string = createApiRegistration ? apiRegistration.outputs.identifierUri : ''
