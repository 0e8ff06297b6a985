// Optional: the API's app registration, so callers can be required to present an Entra ID token
// with the app role (CALLER_* settings). Needs an Entra role that may create applications
// (Application Administrator or Cloud Application Administrator).
extension microsoftGraphV1

@description('Unique name of the app registration; its App ID URI is api://<tenant id>/<uniqueName>.')
param uniqueName string

@description('The app role callers need (CALLER_ROLE).')
param roleValue string = 'Autopilot.UnassignUser'

// The tenant id in the URI keeps it within Entra ID's secure identifier URI patterns.
var identifierUri = 'api://${tenant().tenantId}/${uniqueName}'

resource api 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: 'Autopilot unassign API'
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    identifierUri
  ]
  api: {
    requestedAccessTokenVersion: 2
    // The Entra ID connector signs users in and asks for this delegated scope. The HTTP action's
    // client-credentials token carries the app role instead and needs no scope.
    oauth2PermissionScopes: [
      {
        id: guid(uniqueName, 'user_impersonation')
        value: 'user_impersonation'
        type: 'Admin'
        isEnabled: true
        adminConsentDisplayName: 'Call the Autopilot unassign API'
        adminConsentDescription: 'Lets the app call the Autopilot unassign API as the signed-in user; the user still needs the app role.'
      }
    ]
  }
  appRoles: [
    {
      id: guid(uniqueName, roleValue)
      value: roleValue
      displayName: 'Unassign users from Autopilot devices'
      description: 'Call the Autopilot unassign function app.'
      // Users and groups (Power Automate) as well as applications (ServiceNow).
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
  ]
}

// Tokens only for those assigned the role: nobody else in the tenant can even get one.
resource apiServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: api.appId
  appRoleAssignmentRequired: true
}

output appId string = api.appId
output identifierUri string = identifierUri
