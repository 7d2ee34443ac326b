/** Who a session belongs to: a user is (appid, openid). */
export interface Identity {
  appid: string;
  openid: string;
  /** Only when WeChat gave one (the app is bound to an Open Platform account). */
  unionid?: string;
}

/** What the store keeps per token. The token itself is never stored: records are keyed by its hash. */
export interface SessionRecord extends Identity {
  /** ms since epoch */
  createdAt: number;
  /** Absolute deadline (ms since epoch): the session dies then whatever the user does. */
  expiresAt: number;
  /** Idle deadline (ms since epoch), moved forward by activity; never beyond expiresAt. */
  idleExpiresAt: number;
  /** The user's phone number (E.164, e.g. +8613800138000) once granted in this session (POST /wx/phone). */
  phone?: string;
}

/** Thrown by a store that cannot answer (down, slow, refusing writes). The gateway answers 503, never 401. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** Token hashes whose cached copies must be dropped, or 'all' when invalidations may have been missed. */
export type Invalidation = string[] | 'all';

/**
 * Where sessions live. The memory and Redis stores implement this and pass the same tests.
 * Every method may throw StoreUnavailableError; none blocks for longer than the configured command timeout.
 */
export interface SessionStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Saves a new session under `tokenHash`, records it in the user's index, sets the user's current
   * session_key (the one WeChat gave this login: WeChat may rotate it at a login, not at every one), and revokes the user's oldest sessions beyond
   * `maxPerUser`. Returns the hashes of sessions revoked that way.
   */
  create(tokenHash: string, record: SessionRecord, sessionKey: string | undefined, opts: { maxPerUser: number }): Promise<string[]>;
  /** The live session, or undefined when unknown, revoked or past either deadline. */
  get(tokenHash: string): Promise<SessionRecord | undefined>;
  /** Moves the idle deadline (clamped to expiresAt). False when the session is gone. */
  touch(tokenHash: string, idleExpiresAt: number): Promise<boolean>;
  /**
   * Records the phone number the user granted in this session, keeping its deadlines, and tells every
   * replica to drop its cached copy. False when the session is gone.
   */
  setPhone(tokenHash: string, phone: string): Promise<boolean>;
  /** Kills one session. False when it did not exist. */
  revoke(tokenHash: string): Promise<boolean>;
  /** Kills every session of the user. Returns how many. */
  revokeAll(appid: string, openid: string): Promise<number>;
  /** The user's live sessions, oldest first. */
  list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>>;
  /** The user's current session_key (from their latest login). Never leaves the gateway. */
  getSessionKey(appid: string, openid: string): Promise<string | undefined>;
  /** Called when sessions are revoked anywhere (this replica or another), so caches can drop them. */
  onInvalidate(listener: (inv: Invalidation) => void): void;
  /** Resolves when the store answers; throws StoreUnavailableError otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
