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
  uploadFile?(opts: {
    url: string;
    filePath: string;
    name: string;
    header?: Record<string, string>;
    formData?: Record<string, unknown>;
    timeout?: number;
    success(res: { statusCode: number; data: string; header?: Record<string, unknown>; errMsg?: string }): void;
    fail(res: { errMsg: string; errno?: number }): void;
    [key: string]: unknown;
  }): unknown;
  downloadFile?(opts: {
    url: string;
    header?: Record<string, string>;
    timeout?: number;
    filePath?: string;
    success(res: { statusCode: number; tempFilePath: string; filePath?: string; header?: Record<string, unknown>; errMsg?: string }): void;
    fail(res: { errMsg: string; errno?: number }): void;
    [key: string]: unknown;
  }): unknown;
  connectSocket?(opts: { url: string; header?: Record<string, string>; protocols?: string[]; [key: string]: unknown }): WxSocketTask;
  /** read back the body wx.downloadFile saved for an error answer */
  getFileSystemManager?(): { readFileSync(path: string, encoding: 'utf8'): string };
  login(opts: { success(res: { code: string; errMsg?: string }): void; fail(res: { errMsg: string }): void }): void;
  checkSession?(opts: { success(res?: unknown): void; fail(res: { errMsg: string }): void }): void;
  getStorageSync?(key: string): unknown;
  setStorageSync?(key: string, value: unknown): void;
  removeStorageSync?(key: string): void;
}

/** The part of wx's SocketTask the helper uses (and what its connectSocket returns). */
export interface WxSocketTask {
  onOpen(fn: (res?: unknown) => void): void;
  onMessage(fn: (res: { data: string | ArrayBuffer }) => void): void;
  onError(fn: (res: { errMsg: string; error?: string }) => void): void;
  onClose(fn: (res: { code: number; reason: string }) => void): void;
  send(opts: { data: string | ArrayBuffer; success?(res?: unknown): void; fail?(res: { errMsg: string }): void; complete?(res?: unknown): void }): void;
  close(opts?: { code?: number; reason?: string; success?(res?: unknown): void; fail?(res: { errMsg: string }): void }): void;
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
  /** called with each wx task made (RequestTask/UploadTask/DownloadTask: abort, progress); a retry makes a second one */
  onTask?(task: any): void;
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

export interface UploadOptions extends RequestOptions {
  filePath: string;
  name: string;
  formData?: Record<string, unknown>;
}

export interface UploadResponse {
  statusCode: number;
  /** the answer's body as wx gives it: a string */
  data: string;
  header: Record<string, unknown>;
}

export interface DownloadResponse {
  statusCode: number;
  tempFilePath: string;
  filePath?: string;
  header: Record<string, unknown>;
}

export interface SocketOptions {
  /** A path on the gateway, starting with "/" (ws:// or wss:// follows baseUrl's scheme). */
  url: string;
  header?: Record<string, string>;
  protocols?: string[];
  /** false: no token and no login (routes with `auth: none`). */
  auth?: boolean;
  [key: string]: unknown;
}

export interface Session {
  openid: string;
  appid: string;
  unionid?: string;
  expires_in: number;
}

export interface Client {
  request<T = any>(opts: RequestOptions): Promise<Response<T>>;
  /** wx.uploadFile with the token; one retry after a fresh login on the gateway's 401. */
  uploadFile(opts: UploadOptions): Promise<UploadResponse>;
  /** wx.downloadFile with the token; one retry after a fresh login on the gateway's 401. */
  downloadFile(opts: RequestOptions): Promise<DownloadResponse>;
  /**
   * wx.connectSocket with the token in the handshake; a handshake refused because the session is gone
   * (checked with GET /session) is made once more after a fresh login. Returns at once.
   */
  connectSocket(opts: SocketOptions): WxSocketTask;
  /** A fresh login now (wx.login -> POST /login), shared with any already running. */
  login(): Promise<{ token: string; expires_in: number }>;
  /** POST /logout (`{ all: true }`: every device); the stored token is forgotten either way. */
  logout(opts?: { all?: boolean }): Promise<void>;
  session(): Promise<Session>;
  /** Scan to log in, optional at the page's onLoad: the PC page shows that the code was scanned. */
  scannedScan(ticket: string): Promise<{ status: 'scanned' }>;
  /** Scan to log in: confirm the PC's ticket. */
  confirmScan(ticket: string): Promise<{ status: 'confirmed' }>;
  cancelScan(ticket: string): Promise<{ status: 'cancelled' }>;
}

/** Short user-facing texts (简体中文) by error code: every code of the gateway and the helper's own. */
export declare const ERROR_TEXTS: Readonly<Record<string, string>>;
/** The text to show the user for an error of this helper (or an error code); a generic one for unknown codes. */
export declare function errorText(err: { error?: string } | string | null | undefined): string;
export declare function createClient(options: ClientOptions): Client;
/** decodeURIComponent(options.scene) of a page opened from the scan-to-login QR code, or null. */
export declare function scanTicket(pageOptions: { scene?: string } | undefined): string | null;
