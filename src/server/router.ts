import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import proxyaddr from 'proxy-addr';
import { GatewayError } from '../base/errors.js';
import { allowed } from '../endpoints/match.js';
import { ownEndpoints, type OwnEndpoint } from '../endpoints/table.js';
import { validBody } from '../login/body.js';
import { clientKey } from '../login/rate-limit.js';
import { safeMessage } from '../redis/errors.js';
import type { AppDeps } from './app.js';
import { bindings } from './bindings.js';

/**
 * The koa router of the gateway's own endpoints, built from the endpoint table (src/endpoints/table.ts):
 * per row label → rate limit → HTML errors → session → body validation → handler; any other method on
 * a row's path is 405 with its Allow, and anything else under the web logins' prefixes 404.
 */
export function ownRouter(deps: AppDeps): Router {
  const router = new Router();
  const { endpoints, prefixes } = ownEndpoints(deps.config);
  const bind = bindings(deps);
  const limits = new Map<OwnEndpoint['limit'], Middleware | undefined>();
  const limit = (row: OwnEndpoint) => {
    if (!row.limit) return undefined;
    if (!limits.has(row.limit)) limits.set(row.limit, perIpLimit(deps, row.limit));
    return limits.get(row.limit);
  };
  const byPath = new Map<string, OwnEndpoint[]>();
  for (const row of endpoints) byPath.set(row.path, [...(byPath.get(row.path) ?? []), row]);
  for (const [path, rows] of byPath) {
    for (const row of rows) {
      const steps: Middleware[] = [label(row.route)];
      const limited = limit(row);
      if (limited) steps.push(limited);
      if (row.html) steps.push(htmlErrors);
      if (row.session) steps.push(bind.miniProgramSession(row.session.miniProgram));
      if (row.body) steps.push(validBody(row.body.schema, deps.config.server.bodyLimit, row.body.optional));
      steps.push(bind.handlers[row.handler](row));
      if (row.method === 'GET') router.get(path, ...steps);
      else router.post(path, ...steps);
    }
    router.all(path, label(rows[0]!.route), notAllowed(allowed(rows).join(', ')));
  }
  if (prefixes.length > 0) {
    router.all(new RegExp(`^(?:${prefixes.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})(?:/.*)?$`, 'i'), label('web'), () => {
      throw new GatewayError('not_found', { message: 'No such web login endpoint.' });
    });
  }
  return router;
}

/** The route label of metrics and the access log. */
const label = (name: string) =>
  async function label(ctx: Context, next: Next) {
    ctx.state.route = name;
    await next();
  };

const notAllowed = (allow: string) => (ctx: Context) => {
  ctx.set('Allow', allow);
  throw new GatewayError('method_not_allowed');
};

/** Errors as a small HTML page for a browser that navigates (Accept: text/html), as JSON otherwise. */
async function htmlErrors(ctx: Context, next: Next): Promise<void> {
  try {
    await next();
  } catch (err) {
    if (!(err instanceof GatewayError) || !ctx.accepts('json', 'html') || ctx.accepts('json', 'html') === 'json' || !ctx.get('accept').includes('text/html')) throw err;
    ctx.status = err.status;
    if (err.headers) ctx.set(err.headers);
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'");
    ctx.type = 'text/html; charset=utf-8';
    const text = err.message.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    ctx.body = err.page ?? `<!doctype html><html><head><meta charset="utf-8"><title>Login</title></head><body style="font:16px system-ui,sans-serif;max-width:32rem;margin:3rem auto"><h1>Login did not work</h1><p>${text}</p><p><code>${err.code}</code></p></body></html>`;
  }
}

/**
 * limits.login: every POST /login counts against its client's budget (the socket peer, or the
 * X-Forwarded-For entry server.trustedProxies vouch for); beyond it 429 rate_limited with Retry-After.
 * When the counter cannot be reached (Redis down) logins go on unlimited: logged once, counted as
 * wxgate_session_store_errors_total{op="rateLimit"}.
 */
function perIpLimit({ config, metrics, log, loginLimiter }: AppDeps, endpoint: 'login' | 'scan' | 'qr') {
  if (!loginLimiter) return undefined;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);
  const limited = metrics.rateLimited.labels({ endpoint });
  let failing = false;
  const what = endpoint === 'login' ? 'logins' : 'QR codes';
  return async function limitPerIp(ctx: Context, next: Next): Promise<void> {
    const client = clientKey(proxyaddr(ctx.req, trust) ?? '');
    // one budget per endpoint: the scan tickets' counters are kept apart from the logins'
    const decision = await loginLimiter.hit(endpoint === 'login' ? client : `${endpoint}:${client}`).then(
      (d) => {
        if (failing) log.info({}, 'the login rate limit is counting again');
        failing = false;
        return d;
      },
      (err: unknown) => {
        if (!failing) log.warn({ err: safeMessage(err) }, 'the login rate limit cannot count (session store unavailable); logins are not limited meanwhile');
        failing = true;
        return undefined;
      },
    );
    if (decision && !decision.allowed) {
      limited.inc();
      if (endpoint === 'login') metrics.logins.inc({ result: 'rate_limited' });
      throw new GatewayError('rate_limited', {
        message: `Too many ${what} from this address; retry after the time in Retry-After.`,
        headers: { 'Retry-After': String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))) },
      });
    }
    await next();
  };
}
