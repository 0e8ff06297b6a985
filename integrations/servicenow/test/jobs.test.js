'use strict';
// Bulk jobs through the script include: startJob, getJob and cancelJob. What each sends, what it
// refuses to send, and what it makes of the function's answers. The answers are the function's
// own, recorded in fixtures/job_*.json from one run (a job started, read while it runs and once it
// has ended, a second start with the same Idempotency-Key and another body, an unknown status URL,
// a second job cancelled) and kept in step by tests/test_servicenow_fixtures.py.

const assert = require('node:assert/strict');
const test = require('node:test');

const { fixture, load, plain } = require('./standin');

const ALIAS = '9f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f';
const KEY = 'function-key-from-the-credential';
const APP = 'https://func-autopilot.azurewebsites.net';
const PROFILE = 'oauth-entity-profile-sys-id';
const PROPERTIES = { 'autopilot_unassign.credential_alias': ALIAS };
const ENTRA = { ...PROPERTIES, 'autopilot_unassign.oauth_profile': PROFILE };
const CONNECTIONS = { [ALIAS]: { credential: { api_key: KEY }, attributes: { connection_url: APP } } };
const TICKET = 'RITM0010001';
const IDEMPOTENCY_KEY = 'autopilot.RITM0010001.1';
const JOB = fixture('job_started').body.jobId;
const STATUS_URL = fixture('job_started').body.statusUrl;
const DEVICES = [
  { deviceId: '7c2e5a10-4b8d-4f3a-9e61-0d5b8c3a7f01' },
  { serialNumber: 'PF3ABC12', expectedUserPrincipalName: '' },
  { serialNumber: '5CG4003JOB', expectedUserPrincipalName: 'leaver3@contoso.example' },
];
const START = { devices: DEVICES, ticketId: TICKET, idempotencyKey: IDEMPOTENCY_KEY };
const ACCEPT = 'application/json, application/problem+json';

function servicenow(replies, { properties = PROPERTIES, connections = CONNECTIONS } = {}) {
  const loaded = load({ properties, connections, replies });
  return { client: new loaded.AutopilotUnassign(), requests: loaded.requests };
}

/** One call of `method` with one answer queued: the result and what was sent. */
function call(method, params, reply, options) {
  const { client, requests } = servicenow(reply === undefined ? [] : [reply], options);
  const result = plain(client[method](params));
  assert.equal(requests.length, 1);
  return { result, sent: requests[0] };
}

/** A copy of a fixture with another status, for the answers no run gives on demand. */
function answer(status, headers = {}, body = '') {
  return { status, headers, body };
}

/** Each case must throw `pattern` and send nothing; a valid call on the same stand-in sends one. */
function refusesEach(method, cases, pattern, valid, reply) {
  const { client, requests } = servicenow([reply]);
  for (const params of cases) {
    assert.throws(() => client[method](params), pattern, JSON.stringify(params)?.slice(0, 200));
    assert.throws(() => client[method](params), /nothing was sent/);
  }
  assert.equal(requests.length, 0);
  client[method](valid); // positive control: the stand-in records what is sent
  assert.equal(requests.length, 1);
}

// startJob: what is sent

test('startJob POSTs the devices to /api/BulkUnassignJobs with the key, the ticket and the Idempotency-Key', () => {
  const { sent } = call('startJob', START, fixture('job_started'));
  assert.equal(sent.method, 'POST');
  assert.equal(sent.endpoint, `${APP}/api/BulkUnassignJobs`);
  assert.deepEqual(sent.headers, {
    'x-functions-key': KEY,
    Accept: ACCEPT,
    'X-Correlation-Id': TICKET,
    'Idempotency-Key': IDEMPOTENCY_KEY,
    'Content-Type': 'application/json',
  });
  assert.deepEqual(JSON.parse(sent.body), {
    devices: [
      { deviceId: '7c2e5a10-4b8d-4f3a-9e61-0d5b8c3a7f01' },
      { serialNumber: 'PF3ABC12' },
      { serialNumber: '5CG4003JOB', expectedUserPrincipalName: 'leaver3@contoso.example' },
    ],
    ticketId: TICKET,
  });
  assert.deepEqual(sent.calls, ['executeAsync']);
  assert.equal(sent.waitedSeconds, 25);
  assert.equal(sent.authentication, null);
});

test('startJob leaves the Idempotency-Key out when none is given (the header test above is the control)', () => {
  for (const none of [undefined, null, '', '   ']) {
    const { sent } = call('startJob', { ...START, idempotencyKey: none }, fixture('job_started'));
    assert.equal('Idempotency-Key' in sent.headers, false, JSON.stringify(none));
    assert.equal(sent.headers['x-functions-key'], KEY);
  }
});

test('startJob sends values as text, GlideElements too, and an entry with no id as {} for the function to judge', () => {
  const element = (value) => ({ toString: () => value });
  const { sent } = call('startJob', {
    devices: [{ serialNumber: element('5CG4003JOB'), expectedUserPrincipalName: element('') }, { deviceId: '  ' }],
    ticketId: element(TICKET),
    idempotencyKey: element(IDEMPOTENCY_KEY),
  }, fixture('job_started'));
  assert.deepEqual(JSON.parse(sent.body), { devices: [{ serialNumber: '5CG4003JOB' }, {}], ticketId: TICKET });
  assert.equal(sent.headers['Idempotency-Key'], IDEMPOTENCY_KEY);
});

test('startJob sends dryRun only when true, and refuses what is neither true nor false', () => {
  for (const yes of [true, 'true']) {
    assert.equal(JSON.parse(call('startJob', { ...START, dryRun: yes }, fixture('job_started')).sent.body).dryRun, true);
  }
  for (const no of [false, 'false', '', null, undefined]) {
    assert.equal('dryRun' in JSON.parse(call('startJob', { ...START, dryRun: no }, fixture('job_started')).sent.body), false);
  }
  // A value that is meant as a dry run must never start a real one.
  refusesEach('startJob', ['yes', 'TRUE', 1, 0, 'on', {}].map((dryRun) => ({ ...START, dryRun })),
    /dryRun must be true or false/, START, fixture('job_started'));
});

test('in Entra ID mode startJob adds the OAuth profile and still sends the key', () => {
  const { sent } = call('startJob', START, fixture('job_started'), { properties: ENTRA });
  assert.deepEqual(plain(sent.authentication), { type: 'oauth2', profileId: PROFILE });
  assert.equal(sent.headers['x-functions-key'], KEY);
});

// startJob: bad inputs are refused before anything is sent

test('startJob refuses an Idempotency-Key outside the function\'s rule, naming the rule', () => {
  const bad = ['has space', 'k'.repeat(65), 'key\r\nX-Injected: 1', 'schlüssel', 'a/b', 'a,b'];
  refusesEach('startJob', bad.map((idempotencyKey) => ({ ...START, idempotencyKey })),
    /idempotencyKey must be 1 to 64 of A-Z a-z 0-9 \. _ : -/, START, fixture('job_started'));
  // The edges of the rule are sent.
  for (const idempotencyKey of ['k'.repeat(64), 'a', 'A-z.0_9:x']) {
    assert.equal(call('startJob', { ...START, idempotencyKey }, fixture('job_started')).sent.headers['Idempotency-Key'], idempotencyKey);
  }
});

test('startJob refuses a ticket id outside the function\'s rule (it would be a 400 with no job)', () => {
  refusesEach('startJob', ['INC 0012345', 't'.repeat(65), 'INC1\nX: 1'].map((ticketId) => ({ ...START, ticketId })),
    /ticketId must be 1 to 64 of A-Z a-z 0-9 \. _ : -/, START, fixture('job_started'));
});

test('startJob refuses devices that are not an array of 1 to 10,000 objects', () => {
  const many = Array.from({ length: 10001 }, (_, n) => ({ serialNumber: `SN${n}` }));
  refusesEach('startJob', [
    { ticketId: TICKET },
    { devices: [] },
    { devices: '5CG4003JOB' },
    { devices: { 0: { serialNumber: '5CG4003JOB' }, length: 1 } },
    { devices: many },
  ], /devices must be an array of 1 to 10000 entries/, START, fixture('job_started'));
  refusesEach('startJob', [null, '5CG4003JOB', ['5CG4003JOB'], 42, undefined].map((entry) => ({ devices: [DEVICES[0], entry] })),
    /devices\[1\] must be an object/, START, fixture('job_started'));
  // Positive control at the edge: 10,000 devices are sent.
  const { sent } = call('startJob', { devices: many.slice(1) }, fixture('job_started'));
  assert.equal(JSON.parse(sent.body).devices.length, 10000);
});

test('startJob refuses unknown fields, so a typo cannot drop the dry run or the user guard', () => {
  refusesEach('startJob', [{ ...START, dryrun: true }, { ...START, idempotency_key: 'k' }],
    /its parameter has an unknown field "(dryrun|idempotency_key)"/, START, fixture('job_started'));
  refusesEach('startJob', [{ devices: [{ serialNumber: '5CG4003JOB', expectedUPN: 'leaver3@contoso.example' }] }, { devices: [{ deviceID: 'x' }] }],
    /devices\[0\] has an unknown field "(expectedUPN|deviceID)" \(known: deviceId, serialNumber, expectedUserPrincipalName\)/,
    START, fixture('job_started'));
  refusesEach('startJob', [undefined, null, 'devices', [DEVICES]], /its parameter must be an object/, START, fixture('job_started'));
});

test('startJob refuses a body over 2 MiB counted in UTF-8 bytes, as the function counts it', () => {
  const sized = (text) => ({ devices: Array.from({ length: 10000 }, () => ({ serialNumber: text })) });
  const accented = sized('é'.repeat(50) + '😀'.repeat(25)); // under 2 MiB in UTF-16 units, over in bytes
  const bytes = Buffer.byteLength(JSON.stringify(accented), 'utf8');
  assert.ok(JSON.stringify(accented).length < 2 * 1024 * 1024 && bytes > 2 * 1024 * 1024);
  refusesEach('startJob', [accented], new RegExp(`would be ${bytes} bytes of JSON; the function takes at most 2097152`),
    START, fixture('job_started'));
  // Positive control: as many characters in ASCII fit, and are sent.
  const ascii = sized('e'.repeat(50) + 'ab'.repeat(25));
  assert.equal(JSON.stringify(ascii).length, JSON.stringify(accented).length);
  const { sent } = call('startJob', ascii, fixture('job_started'));
  assert.equal(Buffer.byteLength(sent.body, 'utf8'), JSON.stringify(ascii).length);
});

test('startJob checks its inputs before the setup, and a missing alias still stops it before sending', () => {
  const { client, requests } = servicenow([], { properties: {} });
  assert.throws(() => client.startJob({ ...START, idempotencyKey: 'has space' }), /idempotencyKey/);
  assert.throws(() => client.startJob(START), /autopilot_unassign\.credential_alias/);
  assert.equal(requests.length, 0);
});

// getJob: what is sent

test('getJob GETs the status URL with no function key and no OAuth token; startJob sends both (the control)', () => {
  const { client, requests } = servicenow([fixture('job_started'), fixture('job_running')], { properties: ENTRA });
  const started = client.startJob(START);
  client.getJob(started.statusUrl);
  const [start, poll] = requests;
  assert.equal(start.headers['x-functions-key'], KEY);
  assert.equal(start.authentication.profileId, PROFILE);
  assert.equal(poll.method, 'GET');
  assert.equal(poll.endpoint, STATUS_URL);
  assert.deepEqual(poll.headers, { Accept: ACCEPT });
  assert.equal(poll.authentication, null);
  assert.equal(poll.body, null);
  assert.deepEqual(poll.calls, ['executeAsync']);
  assert.equal(poll.waitedSeconds, 25);
});

test('getJob sends no key to a status URL on another host either (JOB_PUBLIC_BASE_URL may differ)', () => {
  const elsewhere = `https://autopilot.contoso.example/jobs/api/BulkUnassignJobs/${JOB}/${'C'.repeat(32)}`;
  const { sent } = call('getJob', { statusUrl: elsewhere, ticketId: TICKET }, fixture('job_running'));
  assert.equal(sent.endpoint, elsewhere);
  assert.deepEqual(sent.headers, { Accept: ACCEPT, 'X-Correlation-Id': TICKET });
  assert.equal(sent.authentication, null);
});

test('getJob needs no alias or key at all: it reads nothing from the credential', () => {
  const none = servicenow([fixture('job_running')], { properties: {}, connections: {} });
  assert.throws(() => none.client.startJob(START), /credential_alias/); // control: the setup is missing
  assert.equal(plain(none.client.getJob(STATUS_URL)).status, 202);
  assert.equal(none.requests.length, 1);
});

test('getJob takes the URL as text, a GlideElement, {statusUrl, ticketId}, or startJob\'s result', () => {
  const element = { toString: () => STATUS_URL };
  const started = plain(call('startJob', START, fixture('job_started')).result);
  for (const given of [STATUS_URL, element, { statusUrl: STATUS_URL }, { statusUrl: element, ticketId: TICKET }, started]) {
    const { sent } = call('getJob', given, fixture('job_running'));
    assert.equal(sent.endpoint, STATUS_URL);
  }
  assert.equal(call('getJob', { statusUrl: STATUS_URL, ticketId: TICKET }, fixture('job_running')).sent.headers['X-Correlation-Id'], TICKET);
});

test('getJob refuses anything but a status URL as the function makes it, and sends nothing', () => {
  const capability = STATUS_URL.split('/').pop();
  const bad = [
    undefined, null, '', {}, { statusUrl: '' }, { ticketId: TICKET },
    STATUS_URL.replace('https:', 'http:'),
    `${STATUS_URL}?code=x`,
    `${STATUS_URL}#x`,
    `${STATUS_URL}/`,
    ` ${STATUS_URL}`,
    STATUS_URL.replace('https://', 'https://user:pass@'),
    STATUS_URL.replace('/api/BulkUnassignJobs/', '/api/UnassignUser/'),
    STATUS_URL.replace(JOB, JOB.toUpperCase()),
    STATUS_URL.replace(capability, capability.slice(1)),
    STATUS_URL.replace(capability, `${capability}A`),
    STATUS_URL.replace(capability, `${capability.slice(1)}=`),
    `${APP}/api/BulkUnassignJobs/${JOB}`,
    `${APP}/api/BulkUnassignJobs/../UnassignUser/${JOB}/${capability}`,
    `javascript:${STATUS_URL}`,
  ];
  refusesEach('getJob', bad, /give the statusUrl that startJob returned/, STATUS_URL, fixture('job_running'));
  refusesEach('getJob', [{ statusUrl: STATUS_URL, ticketId: 'INC 1' }], /ticketId must be 1 to 64/, STATUS_URL, fixture('job_running'));
});

// cancelJob: what is sent

test('cancelJob DELETEs /api/BulkUnassignJobs/{jobId} with the key, and no body', () => {
  const jobId = fixture('job_cancelled').body.jobId;
  const { sent } = call('cancelJob', { jobId, ticketId: TICKET }, fixture('job_cancelled'), { properties: ENTRA });
  assert.equal(sent.method, 'DELETE');
  assert.equal(sent.endpoint, `${APP}/api/BulkUnassignJobs/${jobId}`);
  assert.deepEqual(sent.headers, { 'x-functions-key': KEY, Accept: ACCEPT, 'X-Correlation-Id': TICKET });
  assert.deepEqual(plain(sent.authentication), { type: 'oauth2', profileId: PROFILE });
  assert.equal(sent.body, null);
  // startJob's result will do as the parameter.
  const started = plain(call('startJob', START, fixture('job_started')).result);
  assert.equal(call('cancelJob', started, fixture('job_cancelled')).sent.endpoint, `${APP}/api/BulkUnassignJobs/${JOB}`);
});

test('cancelJob refuses a job id that is not 32 lower-case hex characters, and sends nothing', () => {
  const bad = [undefined, null, 'job', {}, { jobId: '' }, { jobId: JOB.toUpperCase() }, { jobId: JOB.slice(1) },
    { jobId: `${JOB}0` }, { jobId: '3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31' }, { jobId: `../${JOB.slice(3)}` }, { jobId: `${JOB}/x` }];
  refusesEach('cancelJob', bad.slice(3), /jobId must be the job id that startJob returned/, { jobId: JOB }, fixture('job_cancelled'));
  refusesEach('cancelJob', bad.slice(0, 3), /its parameter must be an object/, { jobId: JOB }, fixture('job_cancelled'));
  refusesEach('cancelJob', [{ jobId: JOB, ticketId: 'INC 1' }], /ticketId must be 1 to 64/, { jobId: JOB }, fixture('job_cancelled'));
});

// What the job methods make of the function's answers

test('the recorded answers are to the requests the job methods send', () => {
  const cases = [
    ['startJob', START, 'job_started'],
    ['startJob', START, 'job_idempotency_conflict'],
    ['getJob', STATUS_URL, 'job_running'],
    ['getJob', STATUS_URL, 'job_report'],
    ['getJob', APP + fixture('job_not_found').path, 'job_not_found'],
    ['cancelJob', { jobId: fixture('job_cancelled').body.jobId }, 'job_cancelled'],
  ];
  for (const [method, params, name] of cases) {
    const recorded = fixture(name);
    const { sent } = call(method, params, recorded);
    assert.equal(sent.method, recorded.method, name);
    assert.equal(new URL(sent.endpoint).pathname, recorded.path, name);
  }
});

test('202 from startJob: the job id, its status URL, not done, and Retry-After', () => {
  const recorded = fixture('job_started');
  const { result } = call('startJob', START, recorded);
  assert.deepEqual(result, {
    status: 202,
    ok: true,
    message: `Bulk job ${JOB} started for ${recorded.body.total} devices.`,
    detail: null,
    correlationId: TICKET,
    graphClientRequestId: null,
    retryAfterSeconds: Number(recorded.headers['retry-after']),
    body: recorded.body,
    problem: null,
    jobId: JOB,
    statusUrl: recorded.body.statusUrl,
    jobStatus: 'running',
    done: false,
  });
  assert.equal(result.statusUrl, recorded.headers.location);
  assert.doesNotMatch(result.message, /https:/); // the message is for the work notes: no status URL in it
});

test('202 from getJob: progress, the same status URL, not done, and retryAfterSeconds from Retry-After', () => {
  const recorded = fixture('job_running');
  const { result } = call('getJob', STATUS_URL, recorded);
  const body = recorded.body;
  assert.equal(result.status, 202);
  assert.equal(result.done, false);
  assert.equal(result.jobStatus, 'running');
  assert.equal(result.jobId, JOB);
  assert.equal(result.statusUrl, recorded.headers.location);
  assert.equal(result.retryAfterSeconds, Number(recorded.headers['retry-after']));
  assert.equal(result.message, `Bulk job ${JOB} running: ${body.finished} of ${body.total} devices finished (${body.succeeded} succeeded, ${body.failed} failed).`);
  assert.equal(result.correlationId, body.correlationId); // the job's: the start's correlation id
  // Retry-After is read as sent (5 to 60), and only as whole seconds.
  const later = structuredClone(recorded);
  later.headers['retry-after'] = '37';
  assert.equal(call('getJob', STATUS_URL, later).result.retryAfterSeconds, 37);
  later.headers['retry-after'] = 'Wed, 21 Oct 2026 07:28:00 GMT';
  assert.equal(call('getJob', STATUS_URL, later).result.retryAfterSeconds, null);
});

test('200 from getJob: the report, done, and its summary line for the ticket', () => {
  const recorded = fixture('job_report');
  const { result } = call('getJob', STATUS_URL, recorded);
  assert.equal(result.status, 200);
  assert.equal(result.ok, true);
  assert.equal(result.done, true);
  assert.equal(result.jobStatus, 'done');
  assert.equal(result.jobId, JOB);
  assert.equal(result.statusUrl, STATUS_URL);
  assert.equal(result.retryAfterSeconds, null);
  assert.equal(result.message, `Bulk job ${JOB} done: ${recorded.body.message}`);
  assert.deepEqual(result.body, recorded.body);
  assert.equal(result.body.summary.total, result.body.results.length);
  assert.equal(result.problem, null);
});

test('404 from getJob: done, not ok, job-not-found, and the job id and URL that were asked for', () => {
  const recorded = fixture('job_not_found');
  const url = APP + recorded.path;
  const { result } = call('getJob', url, recorded);
  assert.equal(result.status, 404);
  assert.equal(result.ok, false);
  assert.equal(result.done, true);
  assert.match(result.problem.type, /:job-not-found$/);
  assert.equal(result.message, recorded.body.detail);
  assert.equal(result.jobId, recorded.path.split('/')[3]);
  assert.equal(result.statusUrl, url);
  assert.equal(result.jobStatus, null);
  assert.equal(result.body, null);
});

test('409 from startJob: the Idempotency-Key was used for another body; done, no job, nothing to poll', () => {
  const recorded = fixture('job_idempotency_conflict');
  const { result } = call('startJob', START, recorded);
  assert.equal(result.status, 409);
  assert.equal(result.ok, false);
  assert.equal(result.done, true);
  assert.match(result.problem.type, /:idempotency-conflict$/);
  assert.equal(result.message, recorded.body.detail);
  assert.equal(result.jobId, null);
  assert.equal(result.statusUrl, null);
  assert.equal(result.jobStatus, null);
  assert.equal(result.correlationId, TICKET);
});

test('200 from cancelJob: the report so far, done, with what was cancelled', () => {
  const recorded = fixture('job_cancelled');
  const { result } = call('cancelJob', { jobId: recorded.body.jobId }, recorded);
  assert.equal(result.status, 200);
  assert.equal(result.done, true);
  assert.equal(result.jobStatus, 'cancelled');
  assert.equal(result.jobId, recorded.body.jobId);
  assert.equal(result.statusUrl, null);
  assert.equal(result.message, `Bulk job ${recorded.body.jobId} cancelled: ${recorded.body.message}`);
  assert.equal(result.body.summary.cancelled, recorded.body.summary.cancelled);
});

test('done is false while the job runs and after an answer worth sending again; true for every final answer', () => {
  const problem = (status) => answer(status, { 'Content-Type': 'application/problem+json' },
    { type: 'tag:autopilot-unassign,2026:problem:x', title: 't', status, detail: 'd', correlationId: 'c', graphClientRequestId: 'g' });
  const notDone = [fixture('job_running'), { timeout: true }, answer(0), problem(429), problem(500), answer(502, { 'Content-Type': 'text/html' }, '<html/>'), fixture('throttled'), answer(504)];
  const final = [fixture('job_report'), fixture('job_not_found'), problem(400), fixture('host_unauthorized'), problem(403), problem(413), problem(415)];
  for (const reply of notDone) {
    assert.equal(call('getJob', STATUS_URL, reply).result.done, false, JSON.stringify(reply).slice(0, 80));
  }
  for (const reply of final) {
    assert.equal(call('getJob', STATUS_URL, reply).result.done, true, JSON.stringify(reply).slice(0, 80));
  }
});

test('no answer in time: status 0, not done, the job id and status URL kept for the next poll', () => {
  const { result } = call('getJob', { statusUrl: STATUS_URL, ticketId: TICKET }, { timeout: true });
  assert.equal(result.status, 0);
  assert.equal(result.done, false);
  assert.equal(result.jobId, JOB);
  assert.equal(result.statusUrl, STATUS_URL);
  assert.equal(result.correlationId, TICKET);
  assert.match(result.message, /safe/);
  const start = call('startJob', START, { timeout: true }).result;
  assert.equal(start.done, false);
  assert.equal(start.statusUrl, null);
});

test('503 from startJob: not done, retryAfterSeconds from the problem, nothing to poll yet', () => {
  const { result } = call('startJob', START, fixture('throttled'));
  assert.equal(result.status, 503);
  assert.equal(result.done, false);
  assert.equal(result.statusUrl, null);
  assert.equal(result.retryAfterSeconds, fixture('throttled').body.retryAfterSeconds);
});

test('a Location or statusUrl that is not a status URL is never taken as the next one to poll', () => {
  const running = structuredClone(fixture('job_running'));
  running.headers.location = 'https://attacker.example/collect';
  assert.equal(call('getJob', STATUS_URL, running).result.statusUrl, STATUS_URL);
  const started = structuredClone(fixture('job_started'));
  started.body.statusUrl = `http://${STATUS_URL.slice('https://'.length)}`;
  started.headers.location = started.body.statusUrl;
  assert.equal(call('startJob', START, started).result.statusUrl, null);
  // Control: the recorded ones are taken.
  assert.equal(call('startJob', START, fixture('job_started')).result.statusUrl, STATUS_URL);
});

test('an empty 401 at the status URL is not blamed on the function key, which was not sent', () => {
  const { result } = call('getJob', STATUS_URL, fixture('host_unauthorized'));
  assert.equal(result.status, 401);
  assert.doesNotMatch(result.message, /function key/);
  assert.match(result.message, /empty body from https:\/\/func-autopilot\.azurewebsites\.net/);
  // Control: from startJob, which sends the key, it is.
  assert.match(call('startJob', START, fixture('host_unauthorized')).result.message, /refused the function key/);
});

test('a whole run: start, poll while 202 after retryAfterSeconds, stop at done with the report', () => {
  const { client, requests } = servicenow([fixture('job_started'), fixture('job_running'), fixture('job_running'), fixture('job_report')]);
  let result = plain(client.startJob(START));
  const waits = [];
  for (let round = 0; !result.done && round < 10; round++) {
    waits.push(result.retryAfterSeconds); // the flow's Wait for a duration
    result = plain(client.getJob({ statusUrl: result.statusUrl, ticketId: TICKET }));
  }
  assert.equal(result.done, true);
  assert.equal(result.jobStatus, 'done');
  assert.deepEqual(waits, [5, 5, 5]);
  assert.deepEqual(requests.map((r) => `${r.method} ${new URL(r.endpoint).pathname}`), [
    'POST /api/BulkUnassignJobs',
    ...Array(3).fill(`GET ${new URL(STATUS_URL).pathname}`),
  ]);
  assert.deepEqual(requests.map((r) => 'x-functions-key' in r.headers), [true, false, false, false]);
});

test('the single-device methods keep their result fields: the job fields are the job methods\' own', () => {
  const { client } = servicenow([fixture('unassigned')]);
  const result = plain(client.unassign({ serialNumber: '5CG1234XYZ', ticketId: 'INC0012345' }));
  for (const field of ['jobId', 'statusUrl', 'jobStatus', 'done']) {
    assert.equal(field in result, false, field);
  }
});
