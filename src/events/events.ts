import { createHmac, hash, randomUUID } from 'node:crypto';
import { request } from 'undici';
import type { Metrics } from '../metrics/metrics.js';
import type { ActiveSession } from '../session/sessions.js';
import { userId } from '../session/tokens.js';
import type { SeenMarks } from './seen.js';

/**
 * Login events for upstreams (issue 16 item 4), config `events`: each a JSON POST to events.url
 *   { "id": "evt_…", "type": "user.created" | "session.created" | "session.revoked", "created_at": ISO, "data": {…} }
 * with X-Wxgate-Event-Id, X-Wxgate-Event-Type and X-Wxgate-Signature: "t=<unix s>,v1=<hex>", the hex being
 * HMAC-SHA256(events.secret, "<t>.<body>") (made anew for every attempt: a receiver checks it and that t is
 * recent). Ids are for idempotency: the same event keeps its id through retries, and user.created and
 * session.created have ids derived from what they are about (the identity, the session), so even a
 * duplicate from another replica has the same id.
 *
 * Never in the way of a login: `emit` queues and returns; delivery runs in the background, up to
 * CONCURRENCY at a time, retried on timeouts, network errors, 408, 429 and 5xx with exponential backoff
 * (events.backoff doubled, ±20%, at most 5 minutes) for events.attempts attempts; another 4xx is
 * "rejected" at once. The queue (new and to-be-retried events) holds events.queue per replica: when full,
 * the new event is dropped. Outcomes are metrics (wxgate_events_total) and warnings at most once a
 * minute, never errors to users. Deliveries run side by side, so they may arrive in any order (created_at
 * says when each was made; a login's user.created is made before its session.created). Events live in this process only: what is pending when it stops
 * (after up to a second of delivering) or crashes is lost. At most once beyond that, at least once within.
 */

export type EventType = 'user.created' | 'session.created' | 'session.revoked';

export interface GatewayEvent {
  id: string;
  type: EventType;
  created_at: string;
  data: Record<string, unknown>;
}

/** What session.revoked carries: whose sessions ended, which (when known), how many, and why. */
export interface RevokedSessions {
  appid: string;
  openid: string;
  user_id?: string;
  sessions?: string[];
  count: number;
  reason: RevokeReason;
}
export type RevokeReason = 'logout' | 'logout_all' | 'admin' | 'evicted' | 'login_failed';

export interface EventsOptions {
  url: string;
  secret: string;
  timeout: number;
  attempts: number;
  backoff: number;
  queue: number;
  seenTtl: number;
  /** where "seen" markers live (seen.ts: Redis with the redis store, shared by replicas) */
  seen: SeenMarks;
  metrics: Metrics;
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

const CONCURRENCY = 4;
const MAX_BACKOFF = 5 * 60_000;
const WARN_EVERY = 60_000;

interface Pending {
  event: GatewayEvent;
  body: string;
  attempt: number;
}

/** The X-Wxgate-Signature value for `body` at unix time `t` (seconds). Receivers compute the same. */
export function eventSignature(secret: string, t: number, body: string): string {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

const idOf = (...parts: string[]) => `evt_${hash('sha256', parts.join('\n'), 'base64url').slice(0, 22)}`;

export class Events {
  private readonly ready: Pending[] = [];
  private readonly waiting = new Map<NodeJS.Timeout, Pending>();
  private pending = 0;
  private inFlight = 0;
  private closed = false;
  private readonly lastWarn = new Map<string, number>();
  constructor(private readonly opts: EventsOptions) {
    opts.metrics.eventsPending.set(0);
  }

  /** Queues an event (never throws, never waits). False when it was dropped (the queue is full or closed). */
  emit(type: EventType, data: Record<string, unknown>, id: string = `evt_${randomUUID().replace(/-/g, '')}`): boolean {
    const event: GatewayEvent = { id, type, created_at: new Date().toISOString(), data };
    if (this.closed || this.pending >= this.opts.queue) {
      this.count(type, this.closed ? 'dropped_shutdown' : 'dropped_queue_full');
      this.warn('full', { queue: this.opts.queue }, 'login events queue is full: new events are dropped (events.queue)');
      return false;
    }
    this.pending++;
    this.opts.metrics.eventsPending.set(this.pending);
    this.count(type, 'queued');
    this.ready.push({ event, body: JSON.stringify(event), attempt: 0 });
    this.pump();
    return true;
  }

  /**
   * A session was made: user.created first when the identity (or its unionid) was never seen before
   * (markers in Redis, events.seenTtl), then session.created. Runs in the background.
   */
  sessionCreated(session: ActiveSession): void {
    const who = { appid: session.appid, openid: session.openid, ...(session.unionid ? { unionid: session.unionid } : {}) };
    const about = { user_id: session.accountId, ...who };
    void this.firstSeen(session).then(
      (first) => {
        if (first && (first.identity || first.person)) {
          this.emit('user.created', { ...about, new_identity: first.identity, new_person: first.person }, idOf('user.created', session.appid, session.openid, session.unionid ?? ''));
        }
        this.emit(
          'session.created',
          { ...about, session: session.tokenHash, flow: session.flow, expires_at: new Date(session.expiresAt).toISOString() },
          idOf('session.created', session.tokenHash),
        );
      },
      () => {},
    );
  }

  /** Sessions ended: by logout (one, or all of the user's), by the admin API, or evicted beyond maxPerUser. */
  sessionsRevoked(data: RevokedSessions): void {
    if (data.count === 0) return;
    this.emit('session.revoked', { ...data }, data.sessions?.length === 1 ? idOf('session.revoked', data.sessions[0]!) : undefined);
  }

  /** Whether the identity and its unionid are new; undefined when the store cannot say (no user.created then). */
  private async firstSeen(session: ActiveSession): Promise<{ identity: boolean; person: boolean } | undefined> {
    const keys = [`i:${userId(session.appid, session.openid)}`];
    if (session.unionid) keys.push(`u:${hash('sha256', `union\n${session.unionid}`, 'base64url').slice(0, 16)}`);
    try {
      const fresh = await Promise.all(keys.map((k) => this.opts.seen.mark(k, this.opts.seenTtl)));
      return { identity: fresh[0]!, person: session.unionid ? fresh[1]! : fresh[0]! };
    } catch (err) {
      this.warn('seen', { err: (err as Error).message }, 'could not tell whether a user is new: no user.created for this login');
      return undefined;
    }
  }

  private count(type: EventType, outcome: string): void {
    this.opts.metrics.events.inc({ type, outcome });
  }

  private warn(kind: string, obj: object, msg: string): void {
    const now = Date.now();
    if (now - (this.lastWarn.get(kind) ?? 0) < WARN_EVERY) return;
    this.lastWarn.set(kind, now);
    this.opts.log.warn(obj, msg);
  }

  private done(p: Pending, outcome: 'delivered' | 'rejected' | 'gave_up'): void {
    this.pending--;
    this.opts.metrics.eventsPending.set(this.pending);
    this.count(p.event.type, outcome);
    if (outcome !== 'delivered') this.warn(outcome, { type: p.event.type, id: p.event.id, attempts: p.attempt }, `a login event was not delivered (${outcome})`);
  }

  private pump(): void {
    while (this.inFlight < CONCURRENCY && this.ready.length > 0) {
      const p = this.ready.shift()!;
      this.inFlight++;
      void this.deliver(p).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async deliver(p: Pending): Promise<void> {
    p.attempt++;
    const outcome = await this.send(p);
    this.opts.metrics.eventDeliveries.inc({ outcome });
    if (outcome === 'ok') return this.done(p, 'delivered');
    if (outcome === 'http_4xx') return this.done(p, 'rejected');
    if (p.attempt >= this.opts.attempts || this.closed) return this.done(p, 'gave_up');
    const delay = Math.min(this.opts.backoff * 2 ** (p.attempt - 1), MAX_BACKOFF) * (0.8 + Math.random() * 0.4);
    const timer = setTimeout(() => {
      this.waiting.delete(timer);
      this.ready.push(p);
      this.pump();
    }, delay);
    timer.unref();
    this.waiting.set(timer, p);
  }

  /** One attempt: ok, or why not (http_4xx is final; 408 and 429 count as http_5xx: worth retrying). */
  private async send(p: Pending): Promise<'ok' | 'http_4xx' | 'http_5xx' | 'timeout' | 'network'> {
    const t = Math.floor(Date.now() / 1000);
    try {
      const res = await request(this.opts.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'wxgate-events',
          'x-wxgate-event-id': p.event.id,
          'x-wxgate-event-type': p.event.type,
          'x-wxgate-signature': eventSignature(this.opts.secret, t, p.body),
        },
        body: p.body,
        headersTimeout: this.opts.timeout,
        bodyTimeout: this.opts.timeout,
        signal: AbortSignal.timeout(this.opts.timeout),
      });
      await res.body.dump();
      if (res.statusCode >= 200 && res.statusCode < 300) return 'ok';
      if (res.statusCode >= 400 && res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429) return 'http_4xx';
      return 'http_5xx';
    } catch (err) {
      const name = (err as Error).name;
      const code = (err as { code?: string }).code ?? '';
      return name === 'TimeoutError' || name === 'AbortError' || code.includes('TIMEOUT') ? 'timeout' : 'network';
    }
  }

  /** Stops taking events; delivers what it can within `graceMs`; what is left is dropped (counted). */
  async close(graceMs = 1000): Promise<void> {
    this.closed = true;
    // waiting for a retry: not worth holding the shutdown for
    for (const [timer, p] of this.waiting) {
      clearTimeout(timer);
      this.count(p.event.type, 'dropped_shutdown');
    }
    this.waiting.clear();
    const deadline = Date.now() + graceMs;
    while ((this.ready.length > 0 || this.inFlight > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const left = this.pending;
    if (left > 0) {
      for (const p of this.ready.splice(0)) this.count(p.event.type, 'dropped_shutdown');
      this.opts.log.info({ dropped: left }, 'login events still pending at shutdown were dropped');
    }
  }
}
