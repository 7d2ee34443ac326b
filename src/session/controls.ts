import type { IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';
import { logUser } from '../base/access-log.js';
import { GatewayError, type Answerable } from '../base/errors.js';
import { UID_LENGTH, userId } from './tokens.js';
import type { AccountStore } from './account-store.js';
import type { Flow, Identity } from './types.js';

/**
 * Account controls per user, shared by every replica through Redis (or in this process with the memory
 * store): blocks, the login audit trail (a bounded history per user) and the device each session was
 * made from. The admin API reads and changes them; Sessions.create checks the block and records the
 * device and the login.
 * (The stores: account-store.ts.)
 */

/** The device a session was made from: what the request said, as far as the gateway can tell. */
export interface Device {
  /** User-Agent, cut to 256 characters */
  ua?: string;
  /** the client IP: the socket peer, or the X-Forwarded-For entry server.trustedProxies vouch for */
  ip?: string;
}

export interface Block {
  appid: string;
  openid: string;
  /** the operator's note (up to 200 characters); never shown to the user */
  reason?: string;
  /** ms since epoch */
  since: number;
  /** ms since epoch; absent: until unblocked */
  until?: number;
}

export type AuditEvent = 'login' | 'login_failed' | 'logout' | 'revoke' | 'block' | 'unblock';

/** One line of the audit trail. */
export interface AuditEntry {
  event: AuditEvent;
  /** ms since epoch */
  at: number;
  appid: string;
  /** absent for a failed login WeChat refused (the openid is never known then) */
  openid?: string;
  flow?: Flow;
  /** the session's id (the admin API's), never its token */
  session?: string;
  ua?: string;
  ip?: string;
  /** failed logins: the gateway's code and WeChat's errcode when WeChat refused */
  error?: string;
  errcode?: number;
  /** revocations: how many sessions; blocks: the operator's reason and the end */
  revoked?: number;
  reason?: string;
  until?: number;
  /** who did it: the user (logout), the operator (admin API), the gateway (a login of a blocked user) */
  by?: 'user' | 'admin' | 'gateway';
}

/** Thrown by Sessions.create for a blocked user: answered 403 user_blocked, no session made. */
export class UserBlockedError extends Error implements Answerable {
  constructor(readonly block: Block) {
    super('This user is blocked by the operator of this service; logging in is refused.');
    this.name = 'UserBlockedError';
  }
  gatewayError(): GatewayError {
    return new GatewayError('user_blocked', { message: this.message });
  }
}

interface AuditLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const UA_MAX = 256;

/** The device of a request: its User-Agent and its client IP as server.trustedProxies allow. */
export function deviceOf(req: IncomingMessage, trust: (addr: string, i: number) => boolean): Device {
  const ua = req.headers['user-agent'];
  let ip: string | undefined;
  try {
    ip = proxyaddr(req, trust) || undefined;
  } catch {
    ip = req.socket.remoteAddress;
  }
  return { ...(ua ? { ua: ua.slice(0, UA_MAX) } : {}), ...(ip ? { ip } : {}) };
}

export interface AccountControlsOptions {
  /** per-user history length (0 = no history in Redis; the audit log lines are written all the same) */
  history: number;
  /** how long a user's history is kept after its latest entry (ms) */
  historyKeep: number;
  /** the sessions' absolute lifetime (ms): a device entry lives no longer than its session */
  maxAge: number;
  /** the user in audit log lines, as in access log lines (log.openid): hashed or left out; never the openid */
  logOpenid?: 'hash' | 'omit';
}

/** Account controls: blocks, the audit trail and devices, over an AccountStore. */
export class AccountControls {
  constructor(
    readonly store: AccountStore,
    readonly opts: AccountControlsOptions,
    /** the audit logger: one JSON line per entry (part: audit) */
    private readonly log: AuditLogger,
    private readonly now: () => number = Date.now,
  ) {}

  /** The user's block in force, or undefined. */
  async blocked(who: { appid: string; openid: string }): Promise<Block | undefined> {
    const json = await this.store.getBlock(userId(who.appid, who.openid));
    if (!json) return undefined;
    try {
      const b = JSON.parse(json) as Block;
      // (a uid is a 96-bit hash: the entry names its user, checked all the same)
      if (b.appid !== who.appid || b.openid !== who.openid) return undefined;
      if (b.until !== undefined && b.until <= this.now()) return undefined;
      return b;
    } catch {
      return undefined;
    }
  }

  async block(who: { appid: string; openid: string }, opts: { reason?: string; until?: number }): Promise<Block> {
    const b: Block = { appid: who.appid, openid: who.openid, since: this.now(), ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.until !== undefined ? { until: opts.until } : {}) };
    await this.store.setBlock(userId(who.appid, who.openid), JSON.stringify(b), b.until);
    return b;
  }

  /** True when a block was lifted (false: the user was not blocked). */
  async unblock(who: { appid: string; openid: string }): Promise<boolean> {
    const was = await this.blocked(who);
    const cleared = await this.store.clearBlock(userId(who.appid, who.openid));
    return cleared && was !== undefined;
  }

  /**
   * One audit entry: a JSON line on the audit logger, and (with an openid) at the head of the user's
   * history. Never throws: an entry the store cannot take is logged as such.
   */
  async audit(entry: Omit<AuditEntry, 'at'> & { at?: number }): Promise<void> {
    const e: AuditEntry = { ...entry, at: entry.at ?? this.now() };
    // The log line names the user as access log lines do (log.openid: a hash, or nobody), and the
    // session by the last 22 characters of its id: the first 16 are the user's id, which is also the
    // start of the token, and stay out of logs. The user's history (below) keeps both whole.
    const { openid, session, ...rest } = e;
    this.log.info(
      {
        ...rest,
        ...(openid && this.opts.logOpenid !== 'omit' ? { user: logUser(e.appid, openid) } : {}),
        ...(session ? { session: session.slice(UID_LENGTH) } : {}),
        at: new Date(e.at).toISOString(),
      },
      `audit: ${e.event}`,
    );
    if (!e.openid || this.opts.history <= 0) return;
    try {
      await this.store.pushEvent(userId(e.appid, e.openid), JSON.stringify(e), this.opts.history, this.opts.historyKeep);
    } catch (err) {
      this.log.warn({ event: e.event, appid: e.appid, err: (err as Error).message }, 'audit: could not add to the user history');
    }
  }

  /** The user's history, newest first, at most `n` (and at most `history`). */
  async events(who: { appid: string; openid: string }, n = this.opts.history): Promise<AuditEntry[]> {
    const lines = await this.store.events(userId(who.appid, who.openid), Math.max(0, Math.min(n, this.opts.history)));
    const out: AuditEntry[] = [];
    for (const l of lines) {
      try {
        const e = JSON.parse(l) as AuditEntry;
        if (e.appid === who.appid && e.openid === who.openid) out.push(e);
      } catch {
        /* a malformed entry is skipped */
      }
    }
    return out;
  }

  /** Records the device a new session was made from. Never throws. */
  async recordDevice(who: Identity, sessionId: string, device: Device, expiresAt: number): Promise<void> {
    try {
      await this.store.setDevice(userId(who.appid, who.openid), sessionId, JSON.stringify(device), expiresAt);
    } catch (err) {
      this.log.warn({ appid: who.appid, err: (err as Error).message }, 'could not record the device of a session');
    }
  }

  /** The devices of the user's live sessions (by session id); entries of ended sessions are dropped. */
  async devices(who: { appid: string; openid: string }, live: ReadonlyArray<string>): Promise<Map<string, Device>> {
    const uid = userId(who.appid, who.openid);
    const all = await this.store.devices(uid);
    const keep = new Set(live);
    const out = new Map<string, Device>();
    const stale: string[] = [];
    for (const [id, json] of Object.entries(all)) {
      if (!keep.has(id)) {
        stale.push(id);
        continue;
      }
      try {
        out.set(id, JSON.parse(json) as Device);
      } catch {
        stale.push(id);
      }
    }
    if (stale.length) await this.store.dropDevices(uid, stale).catch(() => {});
    return out;
  }
}
