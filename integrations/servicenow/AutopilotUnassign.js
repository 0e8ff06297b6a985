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
 * retryAfterSeconds, body, problem}; status 0 means no answer came in time. docs/servicenow.md
 * explains the setup and each field.
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

    _call: function (method, path, body, ticketId) {
        var connection = this._connection();
        // RESTMessageV2 and RESTResponseV2:
        // https://www.servicenow.com/docs/r/xanadu/api-reference/server-api-reference/c_RESTMessageV2API.html
        // https://www.servicenow.com/docs/r/xanadu/api-reference/server-api-reference/c_RESTResponseV2API.html
        var request = new sn_ws.RESTMessageV2();
        request.setEndpoint(connection.baseUrl + path);
        request.setHttpMethod(method);
        request.setRequestHeader('x-functions-key', connection.functionKey);
        request.setRequestHeader('Accept', 'application/json, application/problem+json');
        if (this.oauthProfile !== null) {
            // An OAuth Entity Profile with the API's <App ID URI>/.default scope; the key still goes.
            request.setAuthenticationProfile('oauth2', this.oauthProfile);
        }
        var correlationId = this._correlationId(ticketId);
        if (correlationId !== null) {
            request.setRequestHeader('X-Correlation-Id', correlationId);
        }
        if (body !== null) {
            request.setRequestHeader('Content-Type', 'application/json');
            // JSON.stringify escapes quotes and line breaks; a ${} template in a REST message does not.
            request.setRequestBody(JSON.stringify(body));
        }
        var response;
        try {
            response = request.executeAsync();
            response.waitForResponse(this.WAIT_SECONDS);
        } catch (e) {
            return this._noAnswer(e && e.message ? e.message : String(e), correlationId);
        }
        return this._answer(response, correlationId, connection.baseUrl);
    },

    _answer: function (response, sentCorrelationId, baseUrl) {
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
        } else if (text === null && status === 401) {
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
