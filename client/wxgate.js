/**
 * wxgate mini-program client: wx.request, wx.uploadFile, wx.downloadFile and wx.connectSocket with the
 * gateway's session token, and user-facing Chinese texts for the gateway's error codes.
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
 * - uploadFile / downloadFile: the same login and one retry on the gateway's 401;
 * - connectSocket: the token in the handshake's header; wx does not tell why a handshake failed (no
 *   status), so after a refused handshake the helper asks GET /session with that token: a gateway 401
 *   there means the session is gone: one fresh login and one new handshake;
 * - errorText(err): a short Chinese text for the user (ERROR_TEXTS: every gateway error code);
 * - never logs anything, so never the token.
 */
'use strict';

var DEFAULT_STORAGE_KEY = 'wxgate_token';
/** The gateway's 401 codes that a fresh login cures. An upstream's own 401 is passed through. */
var RELOGIN_ERRORS = { unauthorized: true, session_key_stale: true };
/** wx.request's own fields the helper sets itself. */
var OWN_FIELDS = { url: true, header: true, auth: true, success: true, fail: true, complete: true, onTask: true };

/**
 * Short texts for the user (简体中文), by the gateway's error code (src/base/errors.ts) and the
 * helper's own codes. Show these, not err.message (which is English and meant for developers).
 */
var ERROR_TEXTS = {
  bad_request: '请求有误，请稍后再试',
  invalid_json: '请求有误，请稍后再试',
  invalid_request: '请求有误，请稍后再试',
  unknown_appid: '小程序配置有误，请联系客服',
  bad_path: '请求地址有误',
  bad_host: '请求地址有误',
  decrypt_failed: '登录信息已过期，请重试',
  watermark_mismatch: '数据校验失败，请重试',
  phone_code_invalid: '获取手机号失败，请重新授权',
  signature_invalid: '数据校验失败，请重试',
  state_invalid: '登录链接已失效，请重新登录',
  state_used: '登录链接已使用过，请重新登录',
  redirect_not_allowed: '登录后的跳转地址无效',
  web_login_unavailable: '当前浏览器无法使用微信登录',
  mp_message_invalid: '公众号消息无效',
  unauthorized: '登录已失效，请重新登录',
  code_invalid: '登录失败，请重试',
  code_used: '登录失败，请重试',
  session_key_stale: '登录已过期，请重试',
  user_blocked: '账号暂时无法登录，请联系客服',
  app_not_allowed: '当前小程序无权使用此服务',
  login_denied: '你已取消授权登录',
  csrf_failed: '请求来源无效，请刷新页面后重试',
  mp_signature_invalid: '公众号消息签名无效',
  mp_replayed: '公众号消息已过期',
  not_found: '请求的内容不存在',
  ticket_not_found: '二维码无效，请在电脑上刷新二维码',
  method_not_allowed: '请求有误，请稍后再试',
  ticket_cancelled: '已取消登录',
  ticket_already_confirmed: '已确认过登录',
  ticket_used: '二维码已使用，请在电脑上刷新二维码',
  ticket_expired: '二维码已过期，请在电脑上刷新二维码',
  payload_too_large: '内容太大，请压缩后重试',
  unsupported_media_type: '请求格式有误',
  wechat_rate_limited: '操作太频繁，请一分钟后再试',
  rate_limited: '操作太频繁，请稍后再试',
  internal_error: '服务出错了，请稍后再试',
  wechat_error: '微信服务异常，请稍后再试',
  upstream_unavailable: '服务暂时不可用，请稍后再试',
  wechat_unavailable: '微信服务繁忙，请稍后再试',
  session_store_unavailable: '服务繁忙，请稍后再试',
  not_ready: '服务正在启动，请稍后再试',
  wechat_timeout: '微信服务响应超时，请稍后再试',
  upstream_timeout: '服务响应超时，请稍后再试',
  wechat_quota_exceeded: '微信服务繁忙，请稍后再试',
  // the helper's own codes (no answer from the gateway)
  request_failed: '网络不可用，请检查网络后重试',
  wx_login_failed: '微信登录失败，请重试',
  invalid_login_response: '登录失败，请稍后再试',
  socket_failed: '连接失败，请稍后再试',
};
var DEFAULT_TEXT = '出错了，请稍后再试';

/** The user-facing text of an error of this helper (or of a bare error code). */
function errorText(err) {
  var code = typeof err === 'string' ? err : err && err.error;
  if (typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_TEXTS, code)) return ERROR_TEXTS[code];
  return DEFAULT_TEXT;
}

function parseJson(data) {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch (e) {
    return data;
  }
}

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

  /** The wx call's options: the caller's fields but ours, the gateway URL, the header with the token. */
  function wxOptions(opts, bearer) {
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
    return req;
  }

  /** One wx.request; resolves every 2xx, rejects other statuses and network failures. */
  function send(opts, bearer) {
    return new Promise(function (resolve, reject) {
      var req = wxOptions(opts, bearer);
      req.success = function (res) {
        var out = { statusCode: res.statusCode, data: res.data, header: res.header || {} };
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(out);
        else reject(gatewayError(out));
      };
      req.fail = function (reason) {
        reject(failError('request', reason, 'request_failed'));
      };
      var task = wxApi.request(req);
      if (typeof opts.onTask === 'function' && task) opts.onTask(task);
    });
  }

  /**
   * One wx.uploadFile. wx gives the answer's body as a string: kept so on success; an error answer's
   * JSON is parsed for its code.
   */
  function sendUpload(opts, bearer) {
    return new Promise(function (resolve, reject) {
      var req = wxOptions(opts, bearer);
      req.success = function (res) {
        var out = { statusCode: res.statusCode, data: res.data, header: res.header || {} };
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(out);
        else reject(gatewayError({ statusCode: res.statusCode, data: parseJson(res.data), header: out.header }));
      };
      req.fail = function (reason) {
        reject(failError('uploadFile', reason, 'request_failed'));
      };
      var task = wxApi.uploadFile(req);
      if (typeof opts.onTask === 'function' && task) opts.onTask(task);
    });
  }

  /** The body wx.downloadFile saved for an error answer (the gateway's JSON), if it can be read. */
  function savedBody(res) {
    var path = res.filePath || res.tempFilePath;
    if (!path || typeof wxApi.getFileSystemManager !== 'function') return undefined;
    try {
      return parseJson(wxApi.getFileSystemManager().readFileSync(path, 'utf8'));
    } catch (e) {
      return undefined;
    }
  }

  /**
   * One wx.downloadFile. wx saves any answer to a file, an error's body too: for a non-2xx status that
   * file is read back (wx.getFileSystemManager) for the gateway's code.
   */
  function sendDownload(opts, bearer) {
    return new Promise(function (resolve, reject) {
      var req = wxOptions(opts, bearer);
      req.success = function (res) {
        var out = { statusCode: res.statusCode, tempFilePath: res.tempFilePath, header: res.header || {} };
        if (res.filePath) out.filePath = res.filePath;
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(out);
        else reject(gatewayError({ statusCode: res.statusCode, data: savedBody(res), header: out.header }));
      };
      req.fail = function (reason) {
        reject(failError('downloadFile', reason, 'request_failed'));
      };
      var task = wxApi.downloadFile(req);
      if (typeof opts.onTask === 'function' && task) opts.onTask(task);
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

  /** A token other than `used`: someone else's fresher login, or a new one (the stale one dropped). */
  function freshToken(used) {
    if (token && token !== used) return Promise.resolve(token);
    if (token === used) store(null);
    return login().then(function () { return token; });
  }

  /** `attempt(token)` with the current token; after a gateway 401, once more after a fresh login. */
  function authed(opts, attempt) {
    opts = opts || {};
    try {
      urlOf(opts.url);
    } catch (e) {
      return Promise.reject(e);
    }
    if (opts.auth === false) return attempt(opts, null);
    return currentToken().then(function (used) {
      return attempt(opts, used).catch(function (err) {
        if (err.statusCode !== 401 || !RELOGIN_ERRORS[err.error]) throw err;
        return freshToken(used).then(function (next) {
          return attempt(opts, next); // the retry's own 401 is the caller's error
        });
      });
    });
  }

  /**
   * wx.request through the gateway: { url: '/path', method, data, header, timeout, ...other wx.request
   * fields, auth: false for a route that needs no session } -> { statusCode, data, header }.
   */
  function request(opts) {
    return authed(opts, send);
  }

  /** wx.uploadFile through the gateway: { url, filePath, name, formData, header, ... } -> { statusCode, data (a string), header }. */
  function uploadFile(opts) {
    return authed(opts, sendUpload);
  }

  /** wx.downloadFile through the gateway: { url, header, filePath?, ... } -> { statusCode, tempFilePath, filePath?, header }. */
  function downloadFile(opts) {
    return authed(opts, sendDownload);
  }

  /**
   * wx.connectSocket through the gateway. Returns at once a SocketTask-like object (onOpen, onMessage,
   * onError, onClose, send, close); the real wx SocketTask is made once a token is there (after a
   * login if needed), with `Authorization: Bearer <token>` in the handshake's header.
   *
   * wx reports a refused handshake only as onError/onClose, without the HTTP status. So when a
   * handshake fails before the socket opened, the helper asks GET /session with the same token: the
   * gateway's 401 there means the session is gone, and it logs in again and makes one more handshake
   * (the failed attempt's error and close are not passed on). Any other failure is passed on as it
   * came. Once open, a close with code 4401 ("session ended": revoked, logged out everywhere, expired)
   * drops the token, so the next connectSocket logs in first; the helper does not reconnect by itself.
   */
  function connectSocket(opts) {
    opts = opts || {};
    urlOf(opts.url); // throws at once for a URL that is not a path on the gateway
    var handlers = { open: [], message: [], error: [], close: [] };
    var current = null; // the wx SocketTask of the attempt in force
    var opened = false;
    var closedByApp = null; // close() before the socket was made: its options
    var retried = false;

    function emit(kind, res) {
      if (kind === 'error' && !(res && res.error)) {
        // wx's own error: a code for errorText(), wx's fields kept
        var copy = { error: 'socket_failed', errMsg: '' };
        if (res) Object.keys(res).forEach(function (k) { copy[k] = res[k]; });
        copy.error = 'socket_failed';
        res = copy;
      }
      handlers[kind].slice().forEach(function (fn) {
        fn(res);
      });
    }

    function gatewayUrl(url) {
      return urlOf(url).replace(/^http/, 'ws');
    }

    function attempt(bearer) {
      if (closedByApp) {
        emit('close', { code: closedByApp.code || 1000, reason: closedByApp.reason || '' });
        return;
      }
      var req = wxOptions(opts, bearer);
      req.url = gatewayUrl(opts.url);
      var task = wxApi.connectSocket(req);
      current = task;
      var pending = null; // events of a failed handshake, held while GET /session decides
      var dead = false; // this attempt was replaced by a new one
      function handshakeFailed(kind, res) {
        if (pending) {
          pending.push([kind, res]);
          return;
        }
        pending = [[kind, res]];
        var retry = !retried && bearer ? probe(bearer) : Promise.resolve(null);
        retry.then(function (next) {
          if (next && !closedByApp) {
            retried = true;
            dead = true;
            attempt(next);
            return;
          }
          var held = pending;
          pending = 'flushed';
          held.forEach(function (e) {
            emit(e[0], e[1]);
          });
        });
      }
      task.onOpen(function (res) {
        if (dead) return;
        opened = true;
        emit('open', res);
      });
      task.onMessage(function (res) {
        if (!dead) emit('message', res);
      });
      task.onError(function (res) {
        if (dead) return;
        if (!opened && pending !== 'flushed') handshakeFailed('error', res);
        else emit('error', res);
      });
      task.onClose(function (res) {
        if (dead) return;
        if (!opened && pending !== 'flushed') {
          handshakeFailed('close', res);
          return;
        }
        if (res && res.code === 4401 && bearer && token === bearer) store(null);
        emit('close', res);
      });
    }

    /** After a refused handshake: a fresh token if the gateway says the session is gone, else null. */
    function probe(used) {
      return send({ url: sessionPath, method: 'GET' }, used).then(
        function () {
          return null; // the session is fine: the refusal was something else
        },
        function (err) {
          if (err.statusCode !== 401 || !RELOGIN_ERRORS[err.error]) return null;
          return freshToken(used).catch(function (loginErr) {
            emit('error', { errMsg: loginErr.message, error: loginErr.error });
            return null;
          });
        }
      );
    }

    var socket = {
      onOpen: function (fn) { handlers.open.push(fn); },
      onMessage: function (fn) { handlers.message.push(fn); },
      onError: function (fn) { handlers.error.push(fn); },
      onClose: function (fn) { handlers.close.push(fn); },
      /** SocketTask.send({ data, success, fail }); fails while the socket is not open. */
      send: function (o) {
        if (!current || !opened) {
          var reason = { errMsg: 'sendSocketMessage:fail WebSocket is not connected' };
          if (o && typeof o.fail === 'function') o.fail(reason);
          if (o && typeof o.complete === 'function') o.complete(reason);
          return;
        }
        current.send(o);
      },
      /** SocketTask.close({ code, reason }) */
      close: function (o) {
        if (current) current.close(o || {});
        else closedByApp = o || {};
      },
    };

    if (opts.auth === false) {
      attempt(null);
    } else {
      currentToken().then(attempt, function (err) {
        emit('error', { errMsg: err.message, error: err.error });
        emit('close', { code: 1006, reason: '' });
      });
    }
    return socket;
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
    uploadFile: uploadFile,
    downloadFile: downloadFile,
    connectSocket: connectSocket,
    login: login,
    logout: logout,
    session: session,
    /** Scan to log in: the PC's ticket (decodeURIComponent(options.scene)) -> { status: 'confirmed' }. */
    /** Optional, at the scan page's onLoad: the PC page shows "scanned, confirm on your phone". */
    scannedScan: function (ticket) { return answerScan(ticket, 'scanned'); },
    confirmScan: function (ticket) { return answerScan(ticket, 'confirm'); },
    cancelScan: function (ticket) { return answerScan(ticket, 'cancel'); },
  };
}

/** The scan-to-login ticket of a page opened from the gateway's QR code (its onLoad options). */
function scanTicket(pageOptions) {
  var scene = pageOptions && pageOptions.scene;
  return typeof scene === 'string' && scene ? decodeURIComponent(scene) : null;
}

module.exports = { createClient: createClient, scanTicket: scanTicket, errorText: errorText, ERROR_TEXTS: ERROR_TEXTS };
