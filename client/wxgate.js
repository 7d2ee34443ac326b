/**
 * wxgate mini-program client: wx.request with the gateway's session token.
 *
 * Plain JavaScript (ES5 syntax, no dependencies, CommonJS): copy this file into the mini-program
 * and `require()` it. It also runs in node with a `wx` object given (the tests do so).
 *
 *   const { createClient } = require('./wxgate.js');
 *   const api = createClient({ baseUrl: 'https://gw.example.com' });
 *   api.request({ url: '/api/orders', method: 'POST', data: { item: 1 } }).then(res => res.data);
 *
 * - logs in on first use (wx.login -> POST /login) and keeps the token in storage across launches;
 * - at the first request after launch with a stored token, asks wx.checkSession; if WeChat's session
 *   has expired it logs in again first (the gateway's session_key would be stale);
 * - a 401 from the gateway (`unauthorized`: the token is unknown, expired or revoked, or
 *   `session_key_stale`) is retried once after a fresh login, never more; other errors are not retried;
 * - concurrent requests share one login;
 * - never logs anything, so never the token.
 */
'use strict';

var DEFAULT_STORAGE_KEY = 'wxgate_token';
/** The gateway's 401 codes that a fresh login cures. An upstream's own 401 is passed through. */
var RELOGIN_ERRORS = { unauthorized: true, session_key_stale: true };
/** wx.request's own fields the helper sets itself. */
var OWN_FIELDS = { url: true, header: true, auth: true, success: true, fail: true, complete: true };

function gatewayError(res) {
  var body = res.data && typeof res.data === 'object' ? res.data : {};
  var message = typeof body.message === 'string' && body.message ? body.message : 'HTTP ' + res.statusCode;
  var err = new Error(message);
  err.statusCode = res.statusCode;
  err.error = typeof body.error === 'string' ? body.error : 'http_' + res.statusCode;
  err.data = res.data;
  err.header = res.header;
  return err;
}

function failError(api, reason, code) {
  var errMsg = reason && reason.errMsg ? String(reason.errMsg) : api + ':fail';
  var err = new Error(errMsg);
  err.error = code;
  err.errMsg = errMsg;
  if (reason && reason.errno !== undefined) err.errno = reason.errno;
  return err;
}

function createClient(options) {
  options = options || {};
  var wxApi = options.wx || (typeof wx !== 'undefined' ? wx : undefined); // eslint-disable-line no-undef
  if (!wxApi || typeof wxApi.request !== 'function' || typeof wxApi.login !== 'function') {
    throw new TypeError('wxgate: options.wx (or the global wx) with request() and login() is required');
  }
  if (typeof options.baseUrl !== 'string' || !/^https?:\/\/[^/]+/.test(options.baseUrl)) {
    throw new TypeError('wxgate: options.baseUrl must be the gateway\'s http(s) origin');
  }
  var baseUrl = options.baseUrl.replace(/\/+$/, '');
  var storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
  var appid = options.appid;
  var defaultTimeout = options.timeout;
  var loginPath = options.loginPath || '/login';
  var sessionPath = options.sessionPath || '/session';
  var logoutPath = options.logoutPath || '/logout';

  var token = null; // the token in memory, once read from storage or got from a login
  var started = null; // the start-up check (once per client, i.e. per app launch)
  var loginInFlight = null; // the one login that concurrent callers share

  function readStored() {
    try {
      var value = wxApi.getStorageSync ? wxApi.getStorageSync(storageKey) : '';
      return typeof value === 'string' && value ? value : null;
    } catch (e) {
      return null;
    }
  }

  function store(value) {
    token = value;
    try {
      if (value) {
        if (wxApi.setStorageSync) wxApi.setStorageSync(storageKey, value);
      } else if (wxApi.removeStorageSync) {
        wxApi.removeStorageSync(storageKey);
      }
    } catch (e) {
      /* storage full or unavailable: the token still works for this launch */
    }
  }

  function urlOf(path) {
    if (typeof path !== 'string' || path.charAt(0) !== '/') {
      throw new TypeError('wxgate: url must be a path on the gateway, starting with "/"');
    }
    return baseUrl + path;
  }

  /** One wx.request; resolves every 2xx, rejects other statuses and network failures. */
  function send(opts, bearer) {
    return new Promise(function (resolve, reject) {
      var req = {};
      Object.keys(opts).forEach(function (k) {
        if (!OWN_FIELDS[k]) req[k] = opts[k];
      });
      var header = {};
      var given = opts.header || {};
      Object.keys(given).forEach(function (k) {
        if (k.toLowerCase() !== 'authorization' || !bearer) header[k] = given[k];
      });
      if (bearer) header.Authorization = 'Bearer ' + bearer;
      req.url = urlOf(opts.url);
      req.header = header;
      if (req.timeout === undefined && defaultTimeout !== undefined) req.timeout = defaultTimeout;
      req.success = function (res) {
        var out = { statusCode: res.statusCode, data: res.data, header: res.header || {} };
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(out);
        else reject(gatewayError(out));
      };
      req.fail = function (reason) {
        reject(failError('request', reason, 'request_failed'));
      };
      wxApi.request(req);
    });
  }

  function wxCall(name) {
    return new Promise(function (resolve, reject) {
      wxApi[name]({
        success: resolve,
        fail: function (reason) {
          reject(failError(name, reason, name === 'login' ? 'wx_login_failed' : 'wx_' + name + '_failed'));
        },
      });
    });
  }

  function doLogin() {
    return wxCall('login')
      .then(function (res) {
        if (!res || !res.code) throw failError('login', res, 'wx_login_failed');
        var data = { code: res.code };
        if (appid) data.appid = appid;
        return send({ url: loginPath, method: 'POST', data: data, header: { 'content-type': 'application/json' } });
      })
      .then(function (res) {
        var body = res.data || {};
        if (typeof body.token !== 'string' || !body.token) {
          var err = new Error('the gateway answered the login without a token');
          err.statusCode = res.statusCode;
          err.error = 'invalid_login_response';
          throw err;
        }
        store(body.token);
        return { token: body.token, expires_in: body.expires_in };
      });
  }

  /** A fresh login, shared by everyone who asks while it runs. */
  function login() {
    if (!started) started = Promise.resolve(); // a fresh login needs no start-up check
    if (!loginInFlight) {
      loginInFlight = doLogin().then(
        function (result) {
          loginInFlight = null;
          return result;
        },
        function (err) {
          loginInFlight = null;
          throw err;
        }
      );
    }
    return loginInFlight;
  }

  /**
   * Once per launch: a stored token is trusted only while WeChat's own session (and so the
   * session_key the gateway holds) is still valid. Never rejects; a failed check drops the token.
   */
  function startUp() {
    var stored = readStored();
    if (!stored) return Promise.resolve();
    if (typeof wxApi.checkSession !== 'function') {
      if (!token) token = stored;
      return Promise.resolve();
    }
    return wxCall('checkSession').then(
      function () {
        if (!token) token = stored;
      },
      function () {
        if (!token) store(null);
      }
    );
  }

  function currentToken() {
    if (!started) started = startUp();
    return started.then(function () {
      if (loginInFlight) return loginInFlight.then(function () { return token; });
      if (token) return token;
      return login().then(function () { return token; });
    });
  }

  /**
   * wx.request through the gateway: { url: '/path', method, data, header, timeout, ...other wx.request
   * fields, auth: false for a route that needs no session } -> { statusCode, data, header }.
   */
  function request(opts) {
    opts = opts || {};
    try {
      urlOf(opts.url);
    } catch (e) {
      return Promise.reject(e);
    }
    if (opts.auth === false) return send(opts, null);
    return currentToken().then(function (used) {
      return send(opts, used).catch(function (err) {
        if (err.statusCode !== 401 || !RELOGIN_ERRORS[err.error]) throw err;
        // Someone else may have logged in meanwhile: retry with that token; else log in now.
        var fresh;
        if (token && token !== used) {
          fresh = Promise.resolve(token);
        } else {
          if (token === used) store(null);
          fresh = login().then(function () { return token; });
        }
        return fresh.then(function (next) {
          return send(opts, next); // the retry's own 401 is the caller's error
        });
      });
    });
  }

  /** GET /session: { openid, appid, unionid?, expires_in } (logs in first if needed). */
  function session() {
    return request({ url: sessionPath, method: 'GET' }).then(function (res) {
      return res.data;
    });
  }

  /** POST /logout ({ all: true }: every session of the user). The token is forgotten either way. */
  function logout(opts) {
    var pending = loginInFlight ? loginInFlight.catch(function () {}) : Promise.resolve();
    return pending.then(function () {
      var current = token || readStored();
      store(null);
      if (!current) return undefined;
      var req = { url: logoutPath, method: 'POST' };
      if (opts && opts.all) {
        req.data = { all: true };
        req.header = { 'content-type': 'application/json' };
      }
      return send(req, current).then(
        function () { return undefined; },
        function (err) {
          if (err.statusCode === 401) return undefined; // already dead
          throw err;
        }
      );
    });
  }

  function ticketPath(ticket, what) {
    if (typeof ticket !== 'string' || !ticket) throw new TypeError('wxgate: a scan ticket is required');
    return '/scan/tickets/' + encodeURIComponent(ticket) + '/' + what;
  }

  function answerScan(ticket, what) {
    var url;
    try {
      url = ticketPath(ticket, what);
    } catch (e) {
      return Promise.reject(e);
    }
    return request({ url: url, method: 'POST' }).then(function (res) {
      return res.data;
    });
  }

  return {
    request: request,
    login: login,
    logout: logout,
    session: session,
    /** Scan to log in: the PC's ticket (decodeURIComponent(options.scene)) -> { status: 'confirmed' }. */
    confirmScan: function (ticket) { return answerScan(ticket, 'confirm'); },
    cancelScan: function (ticket) { return answerScan(ticket, 'cancel'); },
  };
}

/** The scan-to-login ticket of a page opened from the gateway's QR code (its onLoad options). */
function scanTicket(pageOptions) {
  var scene = pageOptions && pageOptions.scene;
  return typeof scene === 'string' && scene ? decodeURIComponent(scene) : null;
}

module.exports = { createClient: createClient, scanTicket: scanTicket };
