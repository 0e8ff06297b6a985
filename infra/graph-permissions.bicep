// The one Graph application permission the function needs, granted to its managed identity.
// Deploying this needs an Entra role allowed to grant application permissions to Microsoft Graph
// (Privileged Role Administrator or Global Administrator); see the README.
extension microsoftGraphV1

@description('Object id of the managed identity service principal that receives the permission.')
param principalId string

@description('The permission: read and write Intune enrollment configuration, Autopilot devices included.')
param appRoleValue string = 'DeviceManagementServiceConfig.ReadWrite.All'

// Microsoft Graph's own service principal: its appId is the same in every tenant.
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

// Looked up by value, not a hard-coded GUID, so a typo fails the deployment instead of granting
// something else.
resource grant 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == appRoleValue)[0].id
  principalId: principalId
}

output appRoleId string = grant.appRoleId
