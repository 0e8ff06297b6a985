// The Function App and what it runs on: identity, storage, monitoring. Identity-based access only.
param location string
param tags object
param resourceToken string
@description('Inbound access restrictions for the function endpoints; empty: any caller with a key.')
param allowedInbound array
@description('Inbound access restrictions for the deploy (SCM) host; empty: reachable from anywhere, Entra ID only.')
param allowedDeployInbound array
param graphEndpoint string
param unassignDeadlineSeconds string
param bulkDeadlineSeconds string
param graphWritesPerWindow string
param graphWriteWindowSeconds string
param maximumInstanceCount int
@description('Tenant whose Entra ID tokens callers must present; empty: function keys only.')
param callerTenantId string = ''
@description('The API app registration\'s client id and App ID URI, comma-separated.')
param callerAudience string = ''
@description('The app role callers need.')
param callerRole string

var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'
// Built-in role ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Bulk jobs: the trigger's documented reader and message-processor roles cannot release a failed
// message (azure-docs issue 120932), and the poison queue is created on demand: contributor.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// The names shared/jobs/settings.py and BulkUnassignJobWorker/function.json use.
var jobsQueueName = 'bulk-unassign-jobs'
var jobsTableName = 'BulkUnassignJobs'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// User-assigned: it survives re-creating the app, so the Graph grant is not lost with it.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-autopilot-${resourceToken}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Identity only: no account keys, so there is no connection string to leak.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted package, host key or container can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption deploys from a blob container.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Bulk jobs' work, and where the trigger moves a message that failed maxDequeueCount times.
resource jobsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: jobsQueueName
}

resource jobsPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${jobsQueueName}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Bulk jobs, their inputs, the shared write budget and idempotency keys.
resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: jobsTableName
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    retentionInDays: 90
    sku: {
      name: 'PerGB2018'
    }
    features: {
      // Local auth disabled: identity only.
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    // Local auth disabled: telemetry is accepted only from the app's identity.
    DisableLocalAuth: true
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      // No ftpsState: Flex Consumption has no FTP and refuses the property (ARM error 51021);
      // basic publishing credentials are off below.
      http20Enabled: true
      // Each entry is {ipAddress: 'CIDR'} or {serviceTag: 'Name'}; everything else is denied.
      ipSecurityRestrictions: [
        for (rule, i) in allowedInbound: {
          name: 'allow-${i}'
          action: 'Allow'
          priority: 100 + i
          ipAddress: contains(rule, 'serviceTag') ? rule.serviceTag : rule.ipAddress
          tag: contains(rule, 'serviceTag') ? 'ServiceTag' : 'Default'
        }
      ]
      ipSecurityRestrictionsDefaultAction: empty(allowedInbound) ? 'Allow' : 'Deny'
      // The deploy host has its own list: the callers' list would lock out azd and
      // `az functionapp deployment` from anywhere else (403).
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictions: [
        for (rule, i) in allowedDeployInbound: {
          name: 'deploy-${i}'
          action: 'Allow'
          priority: 100 + i
          ipAddress: contains(rule, 'serviceTag') ? rule.serviceTag : rule.ipAddress
          tag: contains(rule, 'serviceTag') ? 'ServiceTag' : 'Default'
        }
      ]
      scmIpSecurityRestrictionsDefaultAction: empty(allowedDeployInbound) ? 'Allow' : 'Deny'
      appSettings: [
        // Host storage through the user-assigned identity (no connection string), by service URI:
        // an account name alone is not valid in sovereign clouds.
        { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        // The jobs' queue trigger and the job functions' own clients use these two.
        { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        // Telemetry sent with the identity, since the component accepts nothing else.
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        // The function's own settings (see the README's configuration table).
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'GRAPH_ENDPOINT', value: graphEndpoint }
        { name: 'GRAPH_CREDENTIAL', value: 'managed_identity' }
        { name: 'UNASSIGN_DEADLINE_SECONDS', value: unassignDeadlineSeconds }
        { name: 'BULK_DEADLINE_SECONDS', value: bulkDeadlineSeconds }
        { name: 'GRAPH_WRITES_PER_WINDOW', value: graphWritesPerWindow }
        { name: 'GRAPH_WRITE_WINDOW_SECONDS', value: graphWriteWindowSeconds }
        // Caller tokens: empty tenant means function keys only (see the README).
        { name: 'CALLER_TENANT_ID', value: callerTenantId }
        { name: 'CALLER_AUDIENCE', value: callerAudience }
        { name: 'CALLER_ROLE', value: callerRole }
        // Token issuers and signing keys follow the cloud (public, US Government, China).
        { name: 'AZURE_AUTHORITY_HOST', value: environment().authentication.loginEndpoint }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
        // The function is async: one instance serves many requests at once, sharing one token
        // and one write pace (Flex's default for Python is a single request per instance).
        triggers: {
          http: {
            perInstanceConcurrency: 16
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Publishing only through Entra ID: no FTP or basic-auth (user name and password) deployments.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// For an auditor: the app's logs, and who read or wrote host storage (host keys, the package).
resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource storageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = site.name
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output unassignUserUrl string = 'https://${site.properties.defaultHostName}/api/UnassignUser'
output bulkUnassignUserUrl string = 'https://${site.properties.defaultHostName}/api/BulkUnassignUser'
