// Autopilot unassign: everything `azd up` (or `az deployment sub create`) needs, least privilege.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; it seeds the unique names of all resources.')
param environmentName string

// azd asks for a region with its own prompt; no @allowed list, which would refuse regions added
// later (`az functionapp list-flexconsumption-locations` lists them).
@minLength(1)
@description('Region for all resources; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Grant the Graph application permission here (Microsoft Graph Bicep extension: public cloud only). Set false when the deployer holds no Entra role that may grant it, or in a sovereign cloud; an admin then runs infra/grant-graph-permission.sh.')
param grantGraphPermission bool = true

@description('Also create the API app registration with the app role, and require callers to present an Entra ID token carrying it (on top of the function key). Microsoft Graph Bicep extension: public cloud only; set false in a sovereign cloud.')
param createApiRegistration bool = false

// The two lists are JSON text, not arrays: older azd versions cannot put an array into
// main.parameters.json from `azd env set`.
@description('Inbound access restrictions for the functions, as a JSON array: [{"serviceTag": "AzureConnectors"}] for a Power Automate custom connector, [{"serviceTag": "LogicApps"}] for its HTTP action (regional forms such as AzureConnectors.westeurope narrow it further), [{"ipAddress": "203.0.113.0/24"}] for a ServiceNow instance. A service tag is shared by every customer of that service: it narrows the network and authenticates nobody. The status URL of a bulk job is anonymous (its capability URL reads one report) and Power Automate polls it from the same tags: allow them. Empty ([]): any caller with a function key.')
param allowedInbound string = '[]'

@description('Inbound access restrictions for the deploy (SCM) host that azd and az functionapp deployment publish to, as a JSON array like allowedInbound. Empty ([]): reachable from anywhere, and accepting only Entra ID (basic publishing is off).')
param allowedDeployInbound string = '[]'

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

@description('Most instances the app may scale out to (MAXIMUM_INSTANCE_COUNT). The single and bulk calls pace their writes per instance, so keep it low while they are busy; bulk jobs share one write budget across all instances, so any count is safe for them.')
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
    allowedInbound: json(allowedInbound)
    allowedDeployInbound: json(allowedDeployInbound)
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
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output SERVICE_API_NAME string = app.outputs.functionAppName
// Not AZURE_CLIENT_ID: azd writes outputs into .azure/<env>/.env, and a shell that loads them
// would hand this id to every azure-identity credential on the workstation.
output GRAPH_IDENTITY_CLIENT_ID string = app.outputs.identityClientId
output IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output UNASSIGN_USER_URL string = app.outputs.unassignUserUrl
output BULK_UNASSIGN_USER_URL string = app.outputs.bulkUnassignUserUrl
output API_APP_ID string = createApiRegistration ? apiRegistration.outputs.appId : ''
output API_IDENTIFIER_URI string = createApiRegistration ? apiRegistration.outputs.identifierUri : ''
