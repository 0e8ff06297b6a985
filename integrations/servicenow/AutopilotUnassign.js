/*
 * AutopilotUnassign: a ServiceNow Script Include that calls the Autopilot unassign Azure Function
 * and hands back what a ticket needs. ES5 only, so it runs in the global scope's default ES5
 * Standards mode: no let, const, arrows, classes or template literals.
 * https://www.servicenow.com/docs/r/xanadu/api-reference/scripts/c_JS_modes.html
 *
 *     var result = new AutopilotUnassign().unassign({
 *         serialNumber: current.u_serial_number,
 *         ticketId: current.number,
 *         expectedUserPrincipalName: current.u_leaver_upn
 *     });
 *     current.work_notes = result.message;
 *
 * Settings: each from the constructor's options, else from a system property.
 *   options.credentialAlias  autopilot_unassign.credential_alias  sys_id of the Connection &
 *                            Credential alias whose API key credential holds the function key
 *   options.baseUrl          autopilot_unassign.base_url          https://<app>.azurewebsites.net;
 *                            when both are empty, the Connection URL of the alias's connection
 *   options.oauthProfile     autopilot_unassign.oauth_profile     sys_id of an OAuth Entity Profile;
 *                            set only when the function also requires Entra ID tokens
 *
 * Every call returns {status, ok, message, detail, correlationId, graphClientRequestId,
 * retryAfterSeconds, body, problem}; status 0 means no answer came in time. The bulk job methods
 * (startJob, getJob, cancelJob) add {jobId, statusUrl, jobStatus, done}. None of them waits for a
 * job: the wait between polls belongs to the flow (Wait for a duration of retryAfterSeconds), not
 * to a script inside a transaction. docs/servicenow.md explains the setup, each field and the flow.
 */
var AutopilotUnassign = Class.create();

AutopilotUnassign.prototype = {
    // executeAsync waits at most glide.http.outbound.max_timeout (30 s, also its maximum); the
    // function answers within UNASSIGN_DEADLINE_SECONDS (20) plus a cold start.
    // https://www.servicenow.com/docs/r/api-reference/web-services/r_HTTPConnectionManagementProps.html
    WAIT_SECONDS: 25,
    // The function's own rule for X-Correlation-Id; ticket numbers such as INC0012345 fit it.
    CORRELATION_ID: /^[A-Za-z0-9._:-]{1,64}$/,
    JSON_MEDIA_TYPE: /^application\/(problem\+)?json\s*(;|$)/i,
    PROBLEM_MEDIA_TYPE: /^application\/problem\+json\s*(;|$)/i,
    PROPERTY_PREFIX: 'autopilot_unassign.',
    // Bulk jobs, as the function checks them (shared/jobs/api.py and the connector definition).
    JOB_MAX_DEVICES: 10000,
    JOB_MAX_BODY_BYTES: 2 * 1024 * 1024,
    JOB_ID: /^[0-9a-f]{32}$/,
    // A status URL as the function makes it: https, its base (JOB_PUBLIC_BASE_URL, host and an
    // optional path), then the route, the job id and the 32-character read capability. Nothing
    // else (no user info, query or fragment) is ever fetched.
    STATUS_URL: /^(https:\/\/[A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?:\/[A-Za-z0-9._~-]+)*\/api\/BulkUnassignJobs\/([0-9a-f]{32})\/[A-Za-z0-9_-]{32}$/,
    JOB_FIELDS: ['devices', 'ticketId', 'dryRun', 'idempotencyKey'],
    JOB_DEVICE_FIELDS: ['deviceId', 'serialNumber', 'expectedUserPrincipalName'],
    // Answers after which the same call (or poll) may well succeed: none in time, 429, 5xx.
    TRANSIENT_STATUSES: [0, 429, 500, 502, 503, 504],

    initialize: function (options) {
        var given = options || {};
        this.credentialAlias = this._setting(given.credentialAlias, 'credential_alias');
        this.baseUrl = this._setting(given.baseUrl, 'base_url');
        this.oauthProfile = this._setting(given.oauthProfile, 'oauth_profile');
    },

    /* One device: {deviceId or serialNumber, ticketId, expectedUserPrincipalName, dryRun}. */
    unassign: function (params) {
        var given = params || {};
        var body = this._fields(given, ['deviceId', 'serialNumber', 'ticketId', 'expectedUserPrincipalName']);
        if (this._isTrue(given.dryRun)) {
            body.dryRun = true;
        }
        return this._call('POST', '/api/UnassignUser', body, given.ticketId);
    },

    /* A device's current assignment, changing nothing: {deviceId or serialNumber, ticketId}. */
    getAssignment: function (params) {
        var given = params || {};
        var deviceId = this._text(given.deviceId);
        var serialNumber = this._text(given.serialNumber);
        var path = '/api/UnassignUser';
        if (deviceId !== null) {
            path += '/' + encodeURIComponent(deviceId);
        }
        if (serialNumber !== null) {
            path += '?serialNumber=' + encodeURIComponent(serialNumber);
        }
        return this._call('GET', path, null, given.ticketId);
    },

    /* Several devices: {devices: [{deviceId or serialNumber, expectedUserPrincipalName}], ticketId, dryRun}. */
    bulkUnassign: function (params) {
        var given = params || {};
        var entries = given.devices || [];
        var devices = [];
        for (var i = 0; i < entries.length; i++) {
            devices.push(this._fields(entries[i] || {}, ['deviceId', 'serialNumber', 'expectedUserPrincipalName']));
        }
        var body = this._fields(given, ['ticketId']);
        body.devices = devices;
        if (this._isTrue(given.dryRun)) {
            body.dryRun = true;
        }
        return this._call('POST', '/api/BulkUnassignUser', body, given.ticketId);
    },

    /*
     * Starts a bulk job of 1 to 10,000 devices: {devices: [{deviceId or serialNumber,
     * expectedUserPrincipalName}], ticketId, dryRun, idempotencyKey}. POST /api/BulkUnassignJobs;
     * a 202 gives jobId and statusUrl (keep it like a credential: it reads the report without a key).
     * A bad input throws before anything is sent.
     */
    startJob: function (params) {
        var where = 'AutopilotUnassign.startJob';
        var given = this._object(params, where, 'its parameter', '{devices: [...], ticketId, dryRun, idempotencyKey}');
        this._knownFields(given, this.JOB_FIELDS, where, 'its parameter');
        var entries = given.devices;
        if (!Array.isArray(entries) || entries.length < 1 || entries.length > this.JOB_MAX_DEVICES) {
            throw new Error(where + ': devices must be an array of 1 to ' + this.JOB_MAX_DEVICES +
                ' entries such as {serialNumber: ...}; nothing was sent.');
        }
        var devices = [];
        for (var i = 0; i < entries.length; i++) {
            var name = 'devices[' + i + ']';
            var entry = this._object(entries[i], where, name, '{deviceId or serialNumber, expectedUserPrincipalName}');
            this._knownFields(entry, this.JOB_DEVICE_FIELDS, where, name);
            // An entry with neither id goes as {}: the function gives it its own 400 result in the
            // report and works the others.
            devices.push(this._fields(entry, this.JOB_DEVICE_FIELDS));
        }
        var ticketId = this._jobRuleText(given.ticketId, where, 'ticketId', '(such as INC0012345)');
        var idempotencyKey = this._jobRuleText(given.idempotencyKey, where, 'idempotencyKey', '(such as the ticket\'s sys_id)');
        var body = {devices: devices};
        if (ticketId !== null) {
            body.ticketId = ticketId;
        }
        if (this._dryRun(given.dryRun, where)) {
            body.dryRun = true;
        }
        var text = JSON.stringify(body);
        var size = this._utf8Bytes(text);
        if (size > this.JOB_MAX_BODY_BYTES) {
            throw new Error(where + ': the request would be ' + size + ' bytes of JSON; the function takes at most ' +
                this.JOB_MAX_BODY_BYTES + ' (2 MiB). Split the devices over several jobs; nothing was sent.');
        }
        var connection = this._connection();
        var headers = {};
        if (idempotencyKey !== null) {
            headers['Idempotency-Key'] = idempotencyKey;
        }
        return this._send({
            method: 'POST',
            url: connection.baseUrl + '/api/BulkUnassignJobs',
            text: text,
            headers: headers,
            functionKey: connection.functionKey,
            correlationId: ticketId,
            origin: connection.baseUrl,
            job: {kind: 'start', jobId: null, statusUrl: null}
        });
    },

    /*
     * Reads a job's progress (202) or its report once it has ended (200): the statusUrl that
     * startJob returned, as text, or {statusUrl, ticketId} (startJob's result itself will do).
     * The status URL needs no key, and none is sent: neither the function key nor an OAuth token
     * ever goes to it, whatever its host. Sending again later is safe; it never waits.
     */
    getJob: function (statusUrlOrParams) {
        var where = 'AutopilotUnassign.getJob';
        var given = statusUrlOrParams;
        var url = null;
        var ticketId = null;
        if (this._isParams(given)) {
            url = this._text(given.statusUrl);
            ticketId = this._jobRuleText(given.ticketId, where, 'ticketId', '(such as INC0012345)');
        } else {
            url = this._text(given);
        }
        var match = url !== null ? this.STATUS_URL.exec(url) : null;
        if (match === null) {
            throw new Error(where + ': give the statusUrl that startJob returned (https://<host>/api/BulkUnassignJobs/' +
                '<32 hex job id>/<32-character capability>, with no query), as text or as {statusUrl, ticketId}; nothing was sent.');
        }
        return this._send({
            method: 'GET',
            url: url,
            text: null,
            headers: {},
            functionKey: null,
            correlationId: ticketId,
            origin: match[1],
            job: {kind: 'status', jobId: match[2], statusUrl: url}
        });
    },

    /*
     * Cancels a job: {jobId, ticketId} (startJob's result will do). DELETE /api/BulkUnassignJobs/{jobId}
     * with the function key; 200 with the report so far (inputs not worked become cancelled), also
     * for a job already ended, so sending it again is safe.
     */
    cancelJob: function (params) {
        var where = 'AutopilotUnassign.cancelJob';
        var given = this._object(params, where, 'its parameter', '{jobId, ticketId}');
        var jobId = this._text(given.jobId);
        if (jobId === null || !this.JOB_ID.test(jobId)) {
            throw new Error(where + ': jobId must be the job id that startJob returned (32 lower-case hexadecimal ' +
                'characters); nothing was sent.');
        }
        var ticketId = this._jobRuleText(given.ticketId, where, 'ticketId', '(such as INC0012345)');
        var connection = this._connection();
        return this._send({
            method: 'DELETE',
            url: connection.baseUrl + '/api/BulkUnassignJobs/' + jobId,
            text: null,
            headers: {},
            functionKey: connection.functionKey,
            correlationId: ticketId,
            origin: connection.baseUrl,
            job: {kind: 'cancel', jobId: jobId, statusUrl: null}
        });
    },

    _call: function (method, path, body, ticketId) {
        var connection = this._connection();
        return this._send({
            method: method,
            url: connection.baseUrl + path,
            // JSON.stringify escapes quotes and line breaks; a ${} template in a REST message does not.
            text: body !== null ? JSON.stringify(body) : null,
            headers: {},
            functionKey: connection.functionKey,
            correlationId: this._correlationId(ticketId),
            origin: connection.baseUrl,
            job: null
        });
    },

    /*
     * One request: {method, url, text (the JSON body or null), headers, functionKey (null: none is
     * sent, nor the OAuth profile), correlationId, origin (named in messages), job (null, or
     * {kind, jobId, statusUrl} for the job methods' extra fields)}.
     */
    _send: function (call) {
        // RESTMessageV2 and RESTResponseV2:
        // https://www.servicenow.com/docs/r/xanadu/api-reference/server-api-reference/c_RESTMessageV2API.html
        // https://www.servicenow.com/docs/r/xanadu/api-reference/server-api-reference/c_RESTResponseV2API.html
        var request = new sn_ws.RESTMessageV2();
        request.setEndpoint(call.url);
        request.setHttpMethod(call.method);
        if (call.functionKey !== null) {
            request.setRequestHeader('x-functions-key', call.functionKey);
            if (this.oauthProfile !== null) {
                // An OAuth Entity Profile with the API's <App ID URI>/.default scope; the key still goes.
                request.setAuthenticationProfile('oauth2', this.oauthProfile);
            }
        }
        request.setRequestHeader('Accept', 'application/json, application/problem+json');
        if (call.correlationId !== null) {
            request.setRequestHeader('X-Correlation-Id', call.correlationId);
        }
        for (var name in call.headers) {
            if (Object.prototype.hasOwnProperty.call(call.headers, name)) {
                request.setRequestHeader(name, call.headers[name]);
            }
        }
        if (call.text !== null) {
            request.setRequestHeader('Content-Type', 'application/json');
            request.setRequestBody(call.text);
        }
        var response;
        var result;
        try {
            response = request.executeAsync();
            response.waitForResponse(this.WAIT_SECONDS);
        } catch (e) {
            result = this._noAnswer(e && e.message ? e.message : String(e), call.correlationId);
            return call.job !== null ? this._jobAnswer(result, null, call.job) : result;
        }
        result = this._answer(response, call.correlationId, call.origin, call.functionKey !== null);
        return call.job !== null ? this._jobAnswer(result, response, call.job) : result;
    },

    _answer: function (response, sentCorrelationId, baseUrl, keySent) {
        var status = Number(response.getStatusCode()) || 0;
        if (status === 0) {
            return this._noAnswer(response.haveError() ? String(response.getErrorMessage()) : 'no HTTP status', sentCorrelationId);
        }
        // A status of 400 or more also sets haveError(); the body is still the function's answer.
        var text = this._text(response.getBody());
        var contentType = this._header(response, 'Content-Type') || '';
        var doc = text !== null && this.JSON_MEDIA_TYPE.test(contentType) ? this._parse(text) : null;
        var problem = doc !== null && this.PROBLEM_MEDIA_TYPE.test(contentType) ? doc : null;
        var result = {
            status: status,
            ok: status >= 200 && status < 300,
            message: null,
            detail: problem !== null ? this._text(problem.detail) : null,
            correlationId: this._first(doc, 'correlationId') || this._header(response, 'X-Correlation-Id') || sentCorrelationId,
            graphClientRequestId: this._first(doc, 'graphClientRequestId'),
            retryAfterSeconds: this._retryAfter(doc, response),
            body: problem === null ? doc : null,
            problem: problem
        };
        if (doc !== null) {
            result.message = problem !== null ? result.detail : this._text(doc.message);
        } else if (text === null && status === 401 && keySent) {
            result.message = 'HTTP 401 with an empty body: the Functions host refused the function key. ' +
                'Check the API key credential of the connection alias (a function key of this Function App).';
        } else if (text === null) {
            result.message = 'HTTP ' + status + ' with an empty body from ' + baseUrl + '.';
        } else {
            result.message = 'HTTP ' + status + ' answered with ' + (contentType || 'no Content-Type') +
                ', not the function\'s JSON: is ' + baseUrl + ' the Function App?';
        }
        if (result.message === null) {
            result.message = 'HTTP ' + status + '.';
        }
        return result;
    },

    _noAnswer: function (reason, correlationId) {
        return {
            status: 0,
            ok: false,
            message: 'No answer from the Autopilot unassign function within ' + this.WAIT_SECONDS + ' s (' + reason +
                '). The outcome is unknown; sending the same call again is safe.',
            detail: null,
            correlationId: correlationId,
            graphClientRequestId: null,
            retryAfterSeconds: null,
            body: null,
            problem: null
        };
    },

    /* The job methods' extra fields, and a message for the answers that carry none. */
    _jobAnswer: function (result, response, job) {
        var body = result.body;
        var location = response !== null ? this._header(response, 'Location') : null;
        var statusUrl = job.statusUrl;
        if (body !== null && this._text(body.statusUrl) !== null && this.STATUS_URL.test(this._text(body.statusUrl))) {
            statusUrl = this._text(body.statusUrl);
        } else if (location !== null && this.STATUS_URL.test(location)) {
            statusUrl = location;
        }
        var jobId = body !== null && this._text(body.jobId) !== null ? this._text(body.jobId) : job.jobId;
        result.jobId = jobId;
        result.statusUrl = statusUrl;
        result.jobStatus = body !== null && typeof body.status === 'string' ? body.status : null;
        // Final unless the job still runs (202: read statusUrl after retryAfterSeconds) or the
        // answer is one that the same call, sent again later, may well change.
        result.done = result.status !== 202 && this.TRANSIENT_STATUSES.indexOf(result.status) < 0;
        if (body !== null && result.status === 202 && job.kind === 'start') {
            result.message = 'Bulk job ' + jobId + ' started for ' + this._count(body.total) + ' devices.';
        } else if (body !== null && result.status === 202) {
            result.message = 'Bulk job ' + jobId + ' running: ' + this._count(body.finished) + ' of ' +
                this._count(body.total) + ' devices finished (' + this._count(body.succeeded) + ' succeeded, ' +
                this._count(body.failed) + ' failed).';
        } else if (body !== null && result.status === 200 && result.jobStatus !== null) {
            var summary = this._text(body.message);
            result.message = 'Bulk job ' + jobId + ' ' + result.jobStatus + (summary !== null ? ': ' + summary : '.');
        }
        return result;
    },

    _count: function (value) {
        return typeof value === 'number' ? String(value) : '?';
    },

    /* A parameter object, or a clear error. */
    _object: function (value, where, subject, shape) {
        if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)) {
            throw new Error(where + ': ' + subject + ' must be an object such as ' + shape + '; nothing was sent.');
        }
        return value;
    },

    /* Unknown names are refused, as the function refuses them: a typo must not drop an option. */
    _knownFields: function (given, names, where, subject) {
        for (var name in given) {
            if (Object.prototype.hasOwnProperty.call(given, name) && names.indexOf(name) < 0) {
                throw new Error(where + ': ' + subject + ' has an unknown field ' + JSON.stringify(name) +
                    ' (known: ' + names.join(', ') + '); nothing was sent.');
            }
        }
    },

    /* An optional value under the function's rule of 1 to 64 of A-Z a-z 0-9 . _ : -; blank is none. */
    _jobRuleText: function (value, where, name, example) {
        var text = this._text(value);
        if (text !== null && !this.CORRELATION_ID.test(text)) {
            throw new Error(where + ': ' + name + ' must be 1 to 64 of A-Z a-z 0-9 . _ : - ' + example +
                ', or left empty; nothing was sent.');
        }
        return text;
    },

    /* true or 'true' is a dry run; false, 'false' or empty is not; anything else is refused. */
    _dryRun: function (value, where) {
        if (this._isTrue(value)) {
            return true;
        }
        var text = this._text(value);
        if (text === null || text === 'false') {
            return false;
        }
        throw new Error(where + ': dryRun must be true or false; nothing was sent.');
    },

    /* {statusUrl, ...} as opposed to the URL itself (a string, or a GlideElement holding it). */
    _isParams: function (value) {
        return value !== null && typeof value === 'object' &&
            (value.statusUrl !== undefined || value.ticketId !== undefined || String(value) === '[object Object]');
    },

    /* The UTF-8 length of a JSON text, which is what the function's 2 MiB limit counts. */
    _utf8Bytes: function (text) {
        var bytes = 0;
        for (var i = 0; i < text.length; i++) {
            var unit = text.charCodeAt(i);
            // A surrogate is half of a 4-byte character; others take 1, 2 or 3 bytes.
            bytes += unit < 0x80 ? 1 : unit < 0x800 ? 2 : unit >= 0xD800 && unit <= 0xDFFF ? 2 : 3;
        }
        return bytes;
    },

    _connection: function () {
        if (this.credentialAlias === null) {
            throw new Error('AutopilotUnassign: set the system property ' + this.PROPERTY_PREFIX +
                'credential_alias to the sys_id of the Connection & Credential alias holding the function key.');
        }
        // https://www.servicenow.com/docs/r/xanadu/api-reference/server-api-reference/connection-info-api.html
        var info = new sn_cc.ConnectionInfoProvider().getConnectionInfo(this.credentialAlias);
        var functionKey = info ? this._text(info.getCredentialAttribute('api_key')) : null;
        if (functionKey === null) {
            throw new Error('AutopilotUnassign: the alias ' + this.credentialAlias +
                ' has no active connection with an API key credential.');
        }
        var baseUrl = this.baseUrl !== null ? this.baseUrl : this._text(info.getAttribute('connection_url'));
        if (baseUrl === null) {
            throw new Error('AutopilotUnassign: set the Connection URL of the alias ' + this.credentialAlias +
                ' or the system property ' + this.PROPERTY_PREFIX + 'base_url.');
        }
        return {baseUrl: baseUrl.replace(/\/+$/, ''), functionKey: functionKey};
    },

    _setting: function (given, property) {
        var value = this._text(given);
        return value !== null ? value : this._text(gs.getProperty(this.PROPERTY_PREFIX + property, ''));
    },

    /* The named fields that hold text; empty or blank ones are left out, never sent as "". */
    _fields: function (source, names) {
        var fields = {};
        for (var i = 0; i < names.length; i++) {
            var value = this._text(source[names[i]]);
            if (value !== null) {
                fields[names[i]] = value;
            }
        }
        return fields;
    },

    /* A JavaScript string, or null when empty or blank. GlideElement and Java strings become text here. */
    _text: function (value) {
        if (value === null || value === undefined) {
            return null;
        }
        var text = String(value);
        return text.replace(/^\s+|\s+$/g, '') === '' ? null : text;
    },

    _isTrue: function (value) {
        return value === true || this._text(value) === 'true';
    },

    _correlationId: function (ticketId) {
        var value = this._text(ticketId);
        return value !== null && this.CORRELATION_ID.test(value) ? value : null;
    },

    /* getHeader's letter case handling is not documented: fall back to a case-blind search. */
    _header: function (response, name) {
        var value = this._text(response.getHeader(name));
        if (value !== null) {
            return value;
        }
        var headers = response.getHeaders() || {};
        for (var key in headers) {
            if (String(key).toLowerCase() === name.toLowerCase()) {
                return this._text(headers[key]);
            }
        }
        return null;
    },

    _first: function (doc, name) {
        return doc !== null ? this._text(doc[name]) : null;
    },

    /* From the problem's retryAfterSeconds (a bulk report's retryAfter), else the Retry-After header. */
    _retryAfter: function (doc, response) {
        var names = ['retryAfterSeconds', 'retryAfter'];
        for (var i = 0; doc !== null && i < names.length; i++) {
            if (typeof doc[names[i]] === 'number' && doc[names[i]] > 0) {
                return doc[names[i]];
            }
        }
        var header = this._header(response, 'Retry-After');
        return header !== null && /^\d+$/.test(header) ? parseInt(header, 10) : null;
    },

    _parse: function (text) {
        try {
            var doc = JSON.parse(text);
            return doc !== null && typeof doc === 'object' ? doc : null;
        } catch (e) {
            return null;
        }
    },

    type: 'AutopilotUnassign'
};
