/** Types of client/wxgate.js (for TypeScript mini-programs and the tests). */

/** The part of the mini-program's `wx` the helper uses (callback style, as WeChat's API is). */
export interface WxLike {
  request(opts: {
    url: string;
    method?: string;
    data?: unknown;
    header?: Record<string, string>;
    timeout?: number;
    success(res: { statusCode: number; data: unknown; header: Record<string, unknown>; errMsg?: string }): void;
    fail(res: { errMsg: string; errno?: number }): void;
    [key: string]: unknown;
  }): unknown;
  login(opts: { success(res: { code: string; errMsg?: string }): void; fail(res: { errMsg: string }): void }): void;
  checkSession?(opts: { success(res?: unknown): void; fail(res: { errMsg: string }): void }): void;
  getStorageSync?(key: string): unknown;
  setStorageSync?(key: string, value: unknown): void;
  removeStorageSync?(key: string): void;
}

export interface ClientOptions {
  /** The gateway's origin, e.g. https://gw.example.com (a request domain of the mini-program). */
  baseUrl: string;
  /** Default: the global `wx`. */
  wx?: WxLike;
  /** Storage key of the token; default `wxgate_token`. */
  storageKey?: string;
  /** Sent with each login when the gateway serves several mini-programs. */
  appid?: string;
  /** Default wx.request timeout (ms) of every request that does not give its own. */
  timeout?: number;
  /** The gateway's endpoint paths when `endpoints.*` were changed; defaults /login, /session, /logout. */
  loginPath?: string;
  sessionPath?: string;
  logoutPath?: string;
}

export interface RequestOptions {
  /** A path on the gateway, starting with "/". */
  url: string;
  method?: string;
  data?: unknown;
  header?: Record<string, string>;
  timeout?: number;
  /** false: no token and no login (routes with `auth: none`). */
  auth?: boolean;
  /** Any other wx.request field (dataType, responseType, enableHttp2, ...) is passed through. */
  [key: string]: unknown;
}

export interface Response<T = any> {
  statusCode: number;
  data: T;
  header: Record<string, unknown>;
}

/** How every failure rejects. */
export interface ClientError extends Error {
  /** The HTTP status; undefined when the request never got an answer. */
  statusCode?: number;
  /**
   * The gateway's stable code (`unauthorized`, `not_found`, ...), `http_<status>` for an answer without
   * one, `request_failed` (network, timeout), `wx_login_failed`.
   */
  error: string;
  /** wx's fail reason (`request:fail timeout`, ...) when the request or wx.login failed. */
  errMsg?: string;
  data?: unknown;
  header?: Record<string, unknown>;
}

export interface Session {
  openid: string;
  appid: string;
  unionid?: string;
  expires_in: number;
}

export interface Client {
  request<T = any>(opts: RequestOptions): Promise<Response<T>>;
  /** A fresh login now (wx.login -> POST /login), shared with any already running. */
  login(): Promise<{ token: string; expires_in: number }>;
  /** POST /logout (`{ all: true }`: every device); the stored token is forgotten either way. */
  logout(opts?: { all?: boolean }): Promise<void>;
  session(): Promise<Session>;
  /** Scan to log in: confirm the PC's ticket. */
  confirmScan(ticket: string): Promise<{ status: 'confirmed' }>;
  cancelScan(ticket: string): Promise<{ status: 'cancelled' }>;
}

export declare function createClient(options: ClientOptions): Client;
/** decodeURIComponent(options.scene) of a page opened from the scan-to-login QR code, or null. */
export declare function scanTicket(pageOptions: { scene?: string } | undefined): string | null;
