'use strict';
// A small stand-in for the ServiceNow server APIs the script include uses (sn_ws.RESTMessageV2,
// its RESTResponseV2, sn_cc.ConnectionInfoProvider, gs, Class), recording what is sent and
// replaying answers. It follows the documented behaviour and, where the documentation is silent,
// the stricter reading: getHeader matches a header name exactly as written.

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const SCRIPT = path.join(__dirname, '..', 'AutopilotUnassign.js');
const FIXTURES = path.join(__dirname, 'fixtures');

/** An answer of the function as recorded in fixtures/: {method, path, status, headers, body}. */
function fixture(name) {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
}

class RESTResponseV2 {
  constructor(reply, sent) {
    this.reply = reply;
    this.sent = sent;
  }

  waitForResponse(seconds) {
    this.sent.waitedSeconds = seconds;
    if (this.reply.timeout) {
      throw new Error('Timed out waiting for the response');
    }
  }

  getStatusCode() {
    return this.reply.status || 0;
  }

  getBody() {
    const body = this.reply.body;
    return typeof body === 'string' ? body : JSON.stringify(body);
  }

  getHeader(name) {
    const headers = this.reply.headers || {};
    return Object.hasOwn(headers, name) ? headers[name] : null;
  }

  getHeaders() {
    return { ...(this.reply.headers || {}) };
  }

  haveError() {
    return !this.reply.status || this.reply.status >= 400;
  }

  getErrorMessage() {
    return this.reply.status ? `Method failed: with code: ${this.reply.status}` : 'Request not sent to uri';
  }
}

/**
 * Loads the script include into a fresh context the way ServiceNow would run it.
 *   properties:  system properties for gs.getProperty
 *   connections: alias sys_id -> {credential: {api_key}, attributes: {connection_url}}
 *   replies:     answers to give, in order: a fixture, or {timeout: true}
 * Returns the AutopilotUnassign class and `requests`, one record per RESTMessageV2.
 */
function load({ properties = {}, connections = {}, replies = [] } = {}) {
  const requests = [];
  const queue = [...replies];

  class RESTMessageV2 {
    constructor(...args) {
      if (args.length > 0) {
        throw new Error('stand-in: the script include builds its messages, it names no REST message record');
      }
      this.sent = { endpoint: null, method: null, headers: {}, body: null, authentication: null, calls: [] };
      requests.push(this.sent);
    }

    setEndpoint(endpoint) {
      this.sent.endpoint = endpoint;
    }

    setHttpMethod(method) {
      this.sent.method = method;
    }

    setRequestHeader(name, value) {
      this.sent.headers[name] = value;
    }

    setRequestBody(body) {
      this.sent.body = body;
    }

    setAuthenticationProfile(type, profileId) {
      this.sent.authentication = { type, profileId };
    }

    execute() {
      this.sent.calls.push('execute');
      throw new Error('stand-in: execute() waits on setHttpTimeout, not the bounded executeAsync wait');
    }

    executeAsync() {
      this.sent.calls.push('executeAsync');
      if (queue.length === 0) {
        throw new Error('stand-in: no answer queued for this request');
      }
      return new RESTResponseV2(queue.shift(), this.sent);
    }
  }

  class ConnectionInfoProvider {
    getConnectionInfo(aliasId) {
      const connection = connections[aliasId];
      if (!connection) {
        return null;
      }
      return {
        getCredentialAttribute: (name) => (connection.credential || {})[name] ?? null,
        getAttribute: (name) => (connection.attributes || {})[name] ?? null,
      };
    }
  }

  const context = vm.createContext({
    Class: {
      create() {
        return function () {
          this.initialize.apply(this, arguments);
        };
      },
    },
    gs: {
      getProperty: (name, fallback) => (Object.hasOwn(properties, name) ? properties[name] : fallback),
      info() {},
      warn() {},
      error() {},
    },
    sn_ws: { RESTMessageV2 },
    sn_cc: { ConnectionInfoProvider },
  });
  vm.runInContext(fs.readFileSync(SCRIPT, 'utf8'), context, { filename: SCRIPT });
  return { AutopilotUnassign: context.AutopilotUnassign, requests };
}

/** Objects made inside the context have that context's prototypes: compare their JSON form. */
function plain(value) {
  return JSON.parse(JSON.stringify(value));
}

module.exports = { SCRIPT, fixture, load, plain };
