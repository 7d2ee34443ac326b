/** Who a session belongs to: a user is (appid, openid). */
export interface Identity {
  appid: string;
  openid: string;
  /** Only when WeChat gave one (the app is bound to an Open Platform account). */
  unionid?: string;
}

/**
 * How a session was made, which decides what it may do (not its app: a PC's scan-to-login session is of
 * the mini-program's app but has no session_key of its own):
 *   miniprogram  POST /login with a wx.login() code: the only flow with a session_key (/wx/decrypt,
 *                /wx/phone, answering a scan-to-login ticket)
 *   mp           Official Account web OAuth (/oauth/mp)
 *   open         website QR login (/oauth/open, Open Platform website app)
 *   scan         a PC logged in by the mini-program (scan-to-login, /scan/tickets)
 *   mpqr         a PC logged in by following the Official Account's QR code
 * Records stored before flows existed read as miniprogram.
 */
export const FLOWS = ['miniprogram', 'mp', 'open', 'scan', 'mpqr'] as const;
export type Flow = (typeof FLOWS)[number];

/** What the store keeps per token. The token itself is never stored: records are keyed by its hash. */
export interface SessionRecord extends Identity {
  /** ms since epoch */
  createdAt: number;
  /** Absolute deadline (ms since epoch): the session dies then whatever the user does. */
  expiresAt: number;
  /** Idle deadline (ms since epoch), moved forward by activity; never beyond expiresAt. */
  idleExpiresAt: number;
  /** How the session was made (see Flow). */
  flow: Flow;
  /**
   * The user's phone number (E.164, e.g. +8613800138000) once granted (POST /wx/phone): the user's (see
   * KeptPhone), so every session of theirs has it; a number stored with one session by an earlier version
   * still reads with that session (the user's own number, once kept, wins).
   */
  phone?: string;
}

/**
 * The phone number a user granted (POST /wx/phone), kept with the user (appid, openid), not the session:
 * WeChat charges for each getuserphonenumber call. As WeChat gave it; `grantedAt` (ms since epoch) is when.
 * Kept as long as the store holds the user (their session_key: while one of their sessions lives), until
 * revoked (clearPhone), or with the user's sessions (revokeAll: an admin revoke, a block).
 */
export interface KeptPhone {
  phoneNumber: string;
  purePhoneNumber: string;
  countryCode: string;
  grantedAt: number;
}

/** The E.164 form a kept number is forwarded in (X-Wx-Phone). */
export const keptE164 = (p: Pick<KeptPhone, 'countryCode' | 'purePhoneNumber'>) => `+${p.countryCode}${p.purePhoneNumber}`;

/** Thrown by a store that cannot answer (a Redis-backed one: src/redis/errors.ts). */
export { StoreUnavailableError } from '../redis/errors.js';

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
   * Keeps the phone number the user granted with the user (every session of theirs, now and later, reads
   * it as `phone`), and tells every replica to drop its cached copies of the user's sessions. False when
   * the store holds no session of the user.
   */
  setPhone(appid: string, openid: string, phone: KeptPhone): Promise<boolean>;
  /** The number the user granted, while kept. */
  getPhone(appid: string, openid: string): Promise<KeptPhone | undefined>;
  /**
   * Forgets the user's number (and any an earlier version stored with one of their sessions), and tells
   * every replica. True when there was one.
   */
  clearPhone(appid: string, openid: string): Promise<boolean>;
  /** Kills one session. False when it did not exist. */
  revoke(tokenHash: string): Promise<boolean>;
  /** Kills every session of the user. Returns how many. */
  revokeAll(appid: string, openid: string): Promise<number>;
  /** The user's live sessions, oldest first. */
  list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>>;
  /**
   * The unionid of the identity's latest login that had one, while the store holds a session of the
   * identity (as long as its session_key is kept): a later login WeChat gives no unionid (an Official
   * Account's snsapi_base, say) stays with the same person. Undefined when there is none.
   */
  linkedUnionid(appid: string, openid: string): Promise<string | undefined>;
  /**
   * The identities of an account (accounts.ts) of which the store holds a session: for a unionid's
   * account ("u…"), every identity whose latest unionid is that one, each with it; for an identity's own
   * account ("i…"), that identity if it has no unionid. [] when none.
   */
  identities(accountId: string): Promise<Identity[]>;
  /** The user's current session_key (from their latest login). Never leaves the gateway. */
  getSessionKey(appid: string, openid: string): Promise<string | undefined>;
  /** Called when sessions are revoked anywhere (this replica or another), so caches can drop them. */
  onInvalidate(listener: (inv: Invalidation) => void): void;
  /** Resolves when the store answers; throws StoreUnavailableError otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
