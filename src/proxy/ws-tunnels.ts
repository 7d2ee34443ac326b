import type { Socket } from 'node:net';
import type { Logger } from '../base/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { Invalidation } from '../session/types.js';
import type { Route } from './routes.js';
import { closeFrame, Pipe } from './ws-frames.js';

/**
 * The open WebSockets: each a client socket joined to its upstream's. A socket lives no longer than its
 * session: a revocation anywhere (the store's invalidations) and a check of every socket's session
 * every `checkInterval` close it, as do routes[].websocket.maxLifetime and the session's absolute
 * deadline. The gateway closes a socket with a close frame to each side, put in between two frames:
 * 4401 "session ended" (log in again), 1001 "maximum lifetime reached" or "gateway shutting down"
 * (reconnect). An open socket does not extend its session's idle lifetime (reconnecting does).
 */

type Reason = 'client' | 'upstream' | 'session_ended' | 'max_lifetime' | 'shutdown' | 'error';
type Closing = 'session_ended' | 'max_lifetime' | 'shutdown';

const CLOSE: Record<Closing, [number, string]> = {
  session_ended: [4401, 'session ended'],
  max_lifetime: [1001, 'maximum lifetime reached'],
  shutdown: [1001, 'gateway shutting down'],
};

const noop = () => {};

/** An open WebSocket: the client's socket joined to the upstream's. */
class Tunnel {
  readonly toClient: Pipe;
  readonly toUpstream: Pipe;
  reason: Reason | undefined = undefined;
  /** sides closed (2: both) */
  closed = 0;
  timer: NodeJS.Timeout | undefined = undefined;
  private grace: NodeJS.Timeout | undefined = undefined;

  constructor(
    readonly route: string,
    readonly tokenHash: string | undefined,
    readonly client: Socket,
    readonly upstream: Socket,
    private readonly closeGrace: number,
  ) {
    this.toClient = new Pipe(upstream, client);
    this.toUpstream = new Pipe(client, upstream);
  }

  close(reason: Closing): void {
    if (this.reason) return;
    this.reason = reason;
    clearTimeout(this.timer);
    const [code, text] = CLOSE[reason];
    this.toClient.closeWith(closeFrame(code, text, false));
    this.toUpstream.closeWith(closeFrame(code, text, true));
    this.windDown();
  }

  /** The tunnel is ending: whatever of it is still open after closeGrace is cut. */
  windDown(): void {
    if (this.grace) return;
    this.grace = setTimeout(() => {
      this.client.destroy();
      this.upstream.destroy();
    }, this.closeGrace);
    this.grace.unref();
  }

  stopTimers(): void {
    clearTimeout(this.timer);
    clearTimeout(this.grace);
  }
}

export class Tunnels {
  private readonly tunnels = new Set<Tunnel>();
  private readonly byHash = new Map<string, Set<Tunnel>>();
  private readonly sweep: NodeJS.Timeout;
  private storeFailing = false;
  private closed = false;
  private idle: (() => void) | undefined;

  constructor(
    private readonly sessions: Sessions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    checkInterval: number,
    private readonly closeGrace: number,
  ) {
    sessions.store.onInvalidate((inv: Invalidation) => {
      if (this.closed || this.byHash.size === 0) return;
      this.recheck(inv === 'all' ? [...this.byHash.keys()] : inv);
    });
    this.sweep = setInterval(() => this.recheck([...this.byHash.keys()]), checkInterval);
    this.sweep.unref();
  }

  get size(): number {
    return this.tunnels.size;
  }

  /** A revoked or expired session's sockets are closed; while the store cannot say, they stay open. */
  private recheck(hashes: Iterable<string>): void {
    for (const h of hashes) {
      if (!this.byHash.has(h)) continue;
      this.sessions.store.get(h).then(
        (record) => {
          this.storeFailing = false;
          const now = Date.now();
          if (record && now < record.idleExpiresAt && now < record.expiresAt) return;
          for (const t of this.byHash.get(h) ?? []) t.close('session_ended');
        },
        (err: unknown) => {
          // as cached sessions keep serving
          if (!this.storeFailing) this.log.warn({ err: (err as Error).message }, 'cannot check the sessions of open WebSockets (session store unavailable)');
          this.storeFailing = true;
        },
      );
    }
  }

  /** Joins the client's socket to the upstream's; `head`, `upHead`: the first bytes each sent with its head. */
  join(route: Route, session: ActiveSession | undefined, client: Socket, upstream: Socket, head: Buffer, upHead: Buffer): void {
    for (const s of [client, upstream]) {
      s.setTimeout(0);
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
    }
    const t = new Tunnel(route.name, session?.tokenHash, client, upstream, this.closeGrace);
    this.tunnels.add(t);
    if (t.tokenHash) {
      let set = this.byHash.get(t.tokenHash);
      if (!set) this.byHash.set(t.tokenHash, (set = new Set()));
      set.add(t);
    }
    this.metrics.websocketsOpen.inc({ route: route.name });
    // the socket ends with routes[].websocket.maxLifetime, or with the session's absolute deadline if sooner
    const maxLifetime = route.websocket?.maxLifetime ?? 3_600_000;
    const sessionLeft = session ? session.expiresAt - Date.now() : Infinity;
    const after = Math.max(0, Math.min(maxLifetime, sessionLeft));
    t.timer = setTimeout(() => t.close(sessionLeft < maxLifetime ? 'session_ended' : 'max_lifetime'), after);
    t.timer.unref();

    // one side sent FIN: so does the gateway to the other; a peer that does not finish its side in time is cut
    const ended = (side: 'client' | 'upstream') => {
      t.reason ??= side;
      const other = side === 'client' ? upstream : client;
      const pipe = side === 'client' ? t.toUpstream : t.toClient;
      if (!pipe.done && other.writable) other.end();
      t.windDown();
    };
    client.on('end', () => ended('client'));
    upstream.on('end', () => ended('upstream'));
    client.once('close', () => this.gone(t, 'client'));
    upstream.once('close', () => this.gone(t, 'upstream'));
    client.on('error', noop);
    upstream.on('error', (err: Error) => {
      t.reason ??= 'upstream';
      this.log.debug({ route: route.name, err: err.message }, 'upstream WebSocket connection error');
    });

    // bytes that came with the heads: the client's first frames, the upstream's first frames
    if (head.length) t.toUpstream.data(head);
    if (upHead.length) t.toClient.data(upHead);
  }

  private gone(t: Tunnel, side: 'client' | 'upstream'): void {
    t.reason ??= side;
    const other = side === 'client' ? t.upstream : t.client;
    if (!other.destroyed) {
      other.end();
      t.windDown();
    }
    if (++t.closed < 2) return;
    t.stopTimers();
    this.tunnels.delete(t);
    if (t.tokenHash) {
      const set = this.byHash.get(t.tokenHash);
      set?.delete(t);
      if (set?.size === 0) this.byHash.delete(t.tokenHash);
    }
    this.metrics.websocketsOpen.dec({ route: t.route });
    this.metrics.websocketClosures.inc({ route: t.route, reason: t.reason });
    if (this.tunnels.size === 0) this.idle?.();
  }

  /** Closes every open WebSocket (1001 to both sides); resolves once they are closed. */
  close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweep);
    if (this.tunnels.size === 0) return Promise.resolve();
    const done = new Promise<void>((resolve) => (this.idle = resolve));
    for (const t of this.tunnels) t.close('shutdown');
    return done;
  }
}
