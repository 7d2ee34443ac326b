import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { Client, type Dispatcher } from 'undici';
import { GatewayError } from '../base/errors.js';
import type { Logger } from '../base/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Proxy } from './proxy.js';
import type { Route } from './routes.js';
import { classify, connectFailed, failureAnswer } from './upstream-failure.js';
import type { RouteTargets, Target } from './upstreams.js';

/**
 * A WebSocket upgrade sent on to the route's next target on undici (its `upgrade` dispatch, on a
 * connection of its own: a kept-alive one of the proxy's pools may have been closed by the upstream
 * just now, and an upgrade is not sent twice). On 101 the upstream's socket is handed over; any other
 * answer is passed back to the client as it is; a failed connection goes to the next target once.
 * route.timeout bounds the connect and the wait for the answer.
 */

/** What is done with the outcome of an upgrade sent on. */
export interface UpgradeOutcome {
  /** 101: the upstream's socket (the bytes it sent after its head come as its first data) */
  upgraded(target: Target, rawHeaders: Buffer[], socket: Socket): void;
  /** any other answer, passed back to the client: its status */
  answered(target: Target, status: number): void;
  /** no answer (refused, reset, timed out): answer the client with this error */
  failed(target: Target, err: GatewayError): void;
}

export interface UpgradeRequest {
  route: Route;
  targets: RouteTargets;
  /** the request target the upstream gets (routes[].stripPrefix applied) */
  path: string;
  /** prepared by admission; without Host, Connection and Upgrade (undici writes its own) */
  headers: IncomingHttpHeaders;
  /** the client's socket: a non-101 answer is written on it */
  client: Socket;
  /** writes an upstream's non-101 status line and headers for the client */
  head(status: number, statusText: string, rawHeaders: Buffer[]): string;
}

interface Upstreams {
  proxy: Proxy;
  metrics: Metrics;
  log: Logger;
}

/** Sends an upgrade on; the outcome is told to `outcome` once. */
export function sendUpgrade(up: Upstreams, req: UpgradeRequest, outcome: UpgradeOutcome): void {
  new Attempt(up, req, outcome, req.targets.single ?? req.targets.pick()!, false).send();
}

/** One try at one target: the dispatch options and the handler of the answer (as proxy.ts's Exchange). */
class Attempt implements Dispatcher.DispatchOptions, Dispatcher.DispatchHandlers {
  readonly path: string;
  readonly method = 'GET' as const;
  readonly upgrade = 'websocket';
  readonly headers: Record<string, string>;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  private readonly client: Client;
  private done = false;
  private readonly clientGone = () => this.client.destroy().catch(() => {});

  constructor(
    private readonly up: Upstreams,
    private readonly req: UpgradeRequest,
    private readonly outcome: UpgradeOutcome,
    private readonly target: Target,
    private readonly failedOver: boolean,
  ) {
    this.path = req.path;
    this.headers = req.headers as Record<string, string>;
    this.headersTimeout = req.route.timeout;
    this.bodyTimeout = req.route.timeout;
    this.client = new Client(target.origin, { connect: { timeout: req.route.timeout } });
  }

  send(): void {
    this.req.client.once('close', this.clientGone);
    this.client.dispatch(this, this);
  }

  /** The attempt is over: its Client goes (an upgraded socket is no longer its). */
  private finish(): void {
    this.done = true;
    this.req.client.off('close', this.clientGone);
    this.client.destroy().catch(() => {});
  }

  onConnect(): void {}

  onUpgrade(_status: number, rawHeaders: Buffer[] | string[] | null, socket: Socket): void {
    this.finish();
    this.req.targets.answered(this.target);
    this.outcome.upgraded(this.target, rawHeaders as Buffer[], socket);
  }

  onHeaders(status: number, rawHeaders: Buffer[] | string[] | null, _resume: () => void, statusText: string): boolean {
    if (status < 200) return true; // 1xx but 101: the final answer follows
    const { client, route } = this.req;
    this.done = true;
    this.req.client.off('close', this.clientGone);
    this.req.targets.answered(this.target);
    this.outcome.answered(this.target, status);
    client.write(Buffer.from(this.req.head(status, statusText, rawHeaders as Buffer[]), 'latin1'));
    setTimeout(() => client.destroy(), route.timeout).unref();
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.req.client.write(chunk);
    return true;
  }

  onComplete(): void {
    this.req.client.end();
    this.client.destroy().catch(() => {});
  }

  onError(err: Error & { code?: string }): void {
    const { route, targets, client } = this.req;
    if (this.done) {
      // the answer was being passed back: cut it
      client.destroy();
      this.client.destroy().catch(() => {});
      return;
    }
    this.finish();
    if (client.destroyed) return;
    const kind = classify(err);
    const noConnection = connectFailed(err, kind);
    if (noConnection || kind === 'reset') this.up.proxy.targetFailed(targets, this.target, kind);
    // no connection, nothing reached the upstream: the upgrade (never with a body) goes to the next target once
    if (noConnection && !this.failedOver) {
      const next = targets.pick(this.target);
      if (next) {
        this.up.proxy.retried(route);
        new Attempt(this.up, this.req, this.outcome, next, true).send();
        return;
      }
    }
    this.up.metrics.upstreamErrors.inc({ route: route.name, kind });
    // "errno", not "code": the logger redacts any field named code (login codes)
    this.up.log.warn({ route: route.name, target: this.target.label, kind, errno: err.code, err: err.message }, 'upstream WebSocket upgrade failed');
    this.outcome.failed(this.target, new GatewayError(failureAnswer(kind)));
  }
}
