'use strict';
// What the script include sends, and what it makes of the function's answers. The answers are
// the function's own, recorded in fixtures/ and kept in step with the connector definition and
// the running function by tests/test_servicenow_fixtures.py.

const assert = require('node:assert/strict');
const test = require('node:test');

const { fixture, load, plain } = require('./standin');

const ALIAS = '9f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f';
const KEY = 'function-key-from-the-credential';
const APP = 'https://func-autopilot.azurewebsites.net';
const PROPERTIES = { 'autopilot_unassign.credential_alias': ALIAS };
const CONNECTIONS = { [ALIAS]: { credential: { api_key: KEY }, attributes: { connection_url: APP } } };
const TICKET = { serialNumber: '5CG1234XYZ', ticketId: 'INC0012345', expectedUserPrincipalName: 'alex.wilber@contoso.example' };

function servicenow(replies, { properties = PROPERTIES, connections = CONNECTIONS } = {}) {
  return load({ properties, connections, replies });
}

function unassignWith(params, reply = fixture('unassigned')) {
  const { AutopilotUnassign, requests } = servicenow([reply]);
  const result = plain(new AutopilotUnassign().unassign(params));
  assert.equal(requests.length, 1);
  return { result, sent: requests[0] };
}

// What is sent

test('the body is JSON.stringify output: quotes and line breaks arrive escaped', () => {
  const ticketId = 'INC"001\n2345';
  const upn = 'o"brien\r\n@contoso.example';
  const { sent } = unassignWith({ serialNumber: 'MXL "44"\t11', ticketId, expectedUserPrincipalName: upn });
  assert.deepEqual(JSON.parse(sent.body), { serialNumber: 'MXL "44"\t11', ticketId, expectedUserPrincipalName: upn });
  assert.doesNotMatch(sent.body, /[\r\n\t]/);
  assert.match(sent.body, /INC\\"001\\n2345/);
});

test('empty and blank optional fields are left out, never sent as ""', () => {
  for (const blank of ['', '   ', '\n', null, undefined]) {
    const { sent } = unassignWith({ serialNumber: '5CG1234XYZ', ticketId: blank, expectedUserPrincipalName: blank, deviceId: blank });
    assert.deepEqual(JSON.parse(sent.body), { serialNumber: '5CG1234XYZ' }, JSON.stringify(blank));
  }
});

test('a non-empty optional field is sent (the control for the test above)', () => {
  const { sent } = unassignWith(TICKET);
  assert.deepEqual(JSON.parse(sent.body), TICKET);
});

test('GlideElement-like values are sent as their text', () => {
  const element = (value) => ({ toString: () => value });
  const { sent } = unassignWith({ serialNumber: element('5CG1234XYZ'), ticketId: element('INC0012345'), expectedUserPrincipalName: element('') });
  assert.deepEqual(JSON.parse(sent.body), { serialNumber: '5CG1234XYZ', ticketId: 'INC0012345' });
});

test('dryRun is sent only when true', () => {
  assert.equal(JSON.parse(unassignWith({ ...TICKET, dryRun: true }).sent.body).dryRun, true);
  assert.equal(JSON.parse(unassignWith({ ...TICKET, dryRun: 'true' }).sent.body).dryRun, true);
  for (const no of [false, 'false', '', undefined]) {
    assert.equal('dryRun' in JSON.parse(unassignWith({ ...TICKET, dryRun: no }).sent.body), false);
  }
});

test('headers: the function key from the alias, JSON both ways, the ticket number as correlation id', () => {
  const { sent } = unassignWith(TICKET);
  assert.equal(sent.method, 'POST');
  assert.equal(sent.endpoint, `${APP}/api/UnassignUser`);
  assert.deepEqual(sent.headers, {
    'x-functions-key': KEY,
    Accept: 'application/json, application/problem+json',
    'X-Correlation-Id': 'INC0012345',
    'Content-Type': 'application/json',
  });
  assert.equal(sent.authentication, null);
});

test('a ticket number outside the correlation id rule is not put in a header', () => {
  const { sent } = unassignWith({ ...TICKET, ticketId: 'INC 1\r\nX-Injected: 1' });
  assert.equal('X-Correlation-Id' in sent.headers, false);
  assert.equal(JSON.parse(sent.body).ticketId, 'INC 1\r\nX-Injected: 1'); // the function rejects it, named
});

test('Entra ID mode adds the OAuth profile and still sends the function key', () => {
  const { AutopilotUnassign, requests } = servicenow([fixture('unassigned')], {
    properties: { ...PROPERTIES, 'autopilot_unassign.oauth_profile': 'oauth-entity-profile-sys-id' },
  });
  new AutopilotUnassign().unassign(TICKET);
  assert.deepEqual(plain(requests[0].authentication), { type: 'oauth2', profileId: 'oauth-entity-profile-sys-id' });
  assert.equal(requests[0].headers['x-functions-key'], KEY);
});

test('options take precedence over system properties and the connection URL', () => {
  const other = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
  const { AutopilotUnassign, requests } = servicenow([fixture('unassigned')], {
    properties: { ...PROPERTIES, 'autopilot_unassign.base_url': 'https://from-property.example' },
    connections: { ...CONNECTIONS, [other]: { credential: { api_key: 'other-key' } } },
  });
  new AutopilotUnassign({ credentialAlias: other, baseUrl: 'https://from-options.example/', oauthProfile: 'p' }).unassign(TICKET);
  assert.equal(requests[0].endpoint, 'https://from-options.example/api/UnassignUser');
  assert.equal(requests[0].headers['x-functions-key'], 'other-key');
  assert.equal(requests[0].authentication.profileId, 'p');
});

test('the base URL property is used before the connection URL', () => {
  const { AutopilotUnassign, requests } = servicenow([fixture('unassigned')], {
    properties: { ...PROPERTIES, 'autopilot_unassign.base_url': 'https://from-property.example' },
  });
  new AutopilotUnassign().unassign(TICKET);
  assert.equal(requests[0].endpoint, 'https://from-property.example/api/UnassignUser');
});

test('it calls with executeAsync and waits 25 s, within ServiceNow\'s 30 s', () => {
  const { sent } = unassignWith(TICKET);
  assert.deepEqual(sent.calls, ['executeAsync']);
  assert.equal(sent.waitedSeconds, 25);
});

test('a missing alias or connection stops before anything is sent, naming what to set', () => {
  const none = servicenow([], { properties: {} });
  assert.throws(() => new none.AutopilotUnassign().unassign(TICKET), /autopilot_unassign\.credential_alias/);
  const noKey = servicenow([], { connections: { [ALIAS]: { credential: {}, attributes: { connection_url: APP } } } });
  assert.throws(() => new noKey.AutopilotUnassign().unassign(TICKET), /API key credential/);
  const noUrl = servicenow([], { connections: { [ALIAS]: { credential: { api_key: KEY } } } });
  assert.throws(() => new noUrl.AutopilotUnassign().unassign(TICKET), /autopilot_unassign\.base_url/);
  assert.equal(none.requests.length + noKey.requests.length + noUrl.requests.length, 0);
});

test('the status check is a GET with the id or serial number encoded, and no body', () => {
  const { AutopilotUnassign, requests } = servicenow([fixture('unassigned'), fixture('unassigned')]);
  const client = new AutopilotUnassign();
  client.getAssignment({ serialNumber: 'MXL 4411 22X', ticketId: 'INC0012345' });
  client.getAssignment({ deviceId: '3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31' });
  assert.equal(requests[0].method, 'GET');
  assert.equal(requests[0].endpoint, `${APP}/api/UnassignUser?serialNumber=MXL%204411%2022X`);
  assert.equal(requests[0].body, null);
  assert.equal('Content-Type' in requests[0].headers, false);
  assert.equal(requests[0].headers['X-Correlation-Id'], 'INC0012345');
  assert.equal(requests[1].endpoint, `${APP}/api/UnassignUser/3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31`);
});

test('bulk sends each device without its empty fields', () => {
  const { AutopilotUnassign, requests } = servicenow([fixture('unassigned')]);
  new AutopilotUnassign().bulkUnassign({
    ticketId: 'RITM0010001',
    devices: [{ deviceId: '3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31', expectedUserPrincipalName: '' }, { serialNumber: 'PF3ABC12', expectedUserPrincipalName: 'leaver@contoso.com' }],
  });
  assert.equal(requests[0].endpoint, `${APP}/api/BulkUnassignUser`);
  assert.deepEqual(JSON.parse(requests[0].body), {
    ticketId: 'RITM0010001',
    devices: [{ deviceId: '3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31' }, { serialNumber: 'PF3ABC12', expectedUserPrincipalName: 'leaver@contoso.com' }],
  });
});

// What it makes of the function's answers

test('the recorded answers are to the request unassign() sends', () => {
  for (const name of ['unassigned', 'user_mismatch', 'throttled', 'host_unauthorized']) {
    const answer = fixture(name);
    const { sent } = unassignWith(TICKET, answer);
    assert.equal(sent.method, answer.method, name);
    assert.equal(new URL(sent.endpoint).pathname, answer.path, name);
  }
});

test('success: status, the one-line message and the ids', () => {
  const answer = fixture('unassigned');
  const { result } = unassignWith(TICKET, answer);
  assert.deepEqual(result, {
    status: 200,
    ok: true,
    message: answer.body.message,
    detail: null,
    correlationId: 'INC0012345',
    graphClientRequestId: answer.body.graphClientRequestId,
    retryAfterSeconds: null,
    body: answer.body,
    problem: null,
  });
  assert.equal(result.body.status, 'unassigned');
});

test('409: the problem\'s detail is the message, and who is assigned instead', () => {
  const answer = fixture('user_mismatch');
  const { result } = unassignWith(TICKET, answer);
  assert.equal(result.status, 409);
  assert.equal(result.ok, false);
  assert.equal(result.message, answer.body.detail);
  assert.equal(result.detail, answer.body.detail);
  assert.equal(result.problem.type, answer.body.type);
  assert.match(result.problem.type, /:user-mismatch$/);
  assert.equal(result.problem.currentUserPrincipalName, answer.body.currentUserPrincipalName);
  assert.equal(result.body, null);
  assert.equal(result.correlationId, 'INC0012345');
  assert.equal(result.graphClientRequestId, answer.body.graphClientRequestId);
  assert.equal(result.retryAfterSeconds, null);
});

test('503: retryAfterSeconds from the problem, and from Retry-After when the body lacks it', () => {
  const answer = fixture('throttled');
  const { result } = unassignWith(TICKET, answer);
  assert.equal(result.status, 503);
  assert.equal(result.retryAfterSeconds, answer.body.retryAfterSeconds);
  assert.equal(result.message, answer.body.detail);
  const headerOnly = structuredClone(answer);
  delete headerOnly.body.retryAfterSeconds;
  assert.equal(unassignWith(TICKET, headerOnly).result.retryAfterSeconds, Number(answer.headers['retry-after']));
});

test('host 401 with an empty body: status 401 and a message pointing at the function key', () => {
  const answer = fixture('host_unauthorized');
  assert.equal(answer.body, '');
  const { result } = unassignWith(TICKET, answer);
  assert.equal(result.status, 401);
  assert.equal(result.ok, false);
  assert.match(result.message, /function key/);
  assert.match(result.message, /connection alias/);
  assert.equal(result.problem, null);
  assert.equal(result.body, null);
  assert.equal(result.correlationId, 'INC0012345'); // what was sent: the host's answer has none
});

test('a body that is not the function\'s JSON is not parsed, and is described', () => {
  const page = { status: 502, headers: { 'Content-Type': 'text/html' }, body: '<html>Bad gateway</html>' };
  const { result } = unassignWith(TICKET, page);
  assert.equal(result.status, 502);
  assert.equal(result.body, null);
  assert.equal(result.problem, null);
  assert.match(result.message, /text\/html/);
});

test('no answer in time: status 0, and a repeat is safe', () => {
  const { result } = unassignWith(TICKET, { timeout: true });
  assert.equal(result.status, 0);
  assert.equal(result.ok, false);
  assert.match(result.message, /within 25 s/);
  assert.match(result.message, /safe/);
  assert.equal(result.correlationId, 'INC0012345');
});
