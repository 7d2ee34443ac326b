import { list, obj, type Report } from './checks.js';
import { appIndex } from './sections/wechat.js';

/**
 * The checks that span sections, on the configuration as parsed so far (see withCheck): defaults come
 * from the schema, so none is repeated here.
 */
export function crossCheck(value: unknown, report: Report): void {
  const c = obj(value);
  const appids = appIndex(c.wechat);
  const webApps = webAppids(c, appids, report);
  routeChecks(c, appids, webApps, report);
  ownPaths(c, report);
  processChecks(c, report);
  list(obj(c.wechat).apps).forEach((a, i) => {
    if (obj(obj(a).externalToken).redisKey !== undefined && obj(c.session).store !== 'redis') {
      report(['wechat', 'apps', i, 'externalToken', 'redisKey'], 'needs session.store: redis');
    }
  });
  if (obj(c.dev).simulator === true && obj(c.wechat).apiBase !== undefined) {
    report(['wechat', 'apiBase'], 'must not be set together with dev.simulator: true (the simulator replaces WeChat; remove one of them)');
  }
}

/**
 * The web logins' apps (web.mp, web.open, web.mpQr): not mini-programs of wechat.apps, each once;
 * web.mpQr's Official Account is web.mp's unless it names its own (then with its secret). Returns them
 * (routes[].apps may name them) by appid, with the key that names each.
 */
function webAppids(c: Record<string, unknown>, appids: Map<string, number>, report: Report): Map<string, string> {
  const webApps = new Map<string, string>();
  const web = obj(c.web);
  for (const kind of ['mp', 'open'] as const) {
    const id = obj(web[kind]).appid;
    if (typeof id !== 'string') continue;
    if (appids.has(id)) report(['web', kind, 'appid'], `"${id}" is a mini-program of wechat.apps; a web app has its own appid`);
    else if (webApps.has(id)) report(['web', kind, 'appid'], `"${id}" is already web.${webApps.get(id)}.appid`);
    else webApps.set(id, kind);
  }
  if (web.mpQr === undefined) return webApps;
  const q = obj(web.mpQr);
  const mp = web.mp === undefined ? undefined : obj(web.mp);
  const leaveOut = "must be left out with web.mp's appid (web.mp.secret is used)";
  if (q.appid === undefined) {
    if (!mp) report(['web', 'mpQr', 'appid'], 'is required (or configure web.mp: the same Official Account is used then)');
    else if (q.secret !== undefined) report(['web', 'mpQr', 'secret'], leaveOut);
  } else if (typeof q.appid === 'string') {
    const sameAsMp = mp !== undefined && mp.appid === q.appid;
    if (appids.has(q.appid)) report(['web', 'mpQr', 'appid'], `"${q.appid}" is a mini-program of wechat.apps; an Official Account has its own appid`);
    else if (!sameAsMp && webApps.has(q.appid)) report(['web', 'mpQr', 'appid'], `"${q.appid}" is web.${webApps.get(q.appid)}.appid, not an Official Account`);
    if (sameAsMp && q.secret !== undefined) report(['web', 'mpQr', 'secret'], leaveOut);
    if (!sameAsMp && q.secret === undefined) report(['web', 'mpQr', 'secret'], 'is required (use ${ENV_NAME} to read it from the environment)');
    if (!appids.has(q.appid) && !webApps.has(q.appid)) webApps.set(q.appid, 'mpQr');
  }
  return webApps;
}

/** routes[].apps name configured apps; no route lies under the paths web logins answer themselves. */
function routeChecks(c: Record<string, unknown>, appids: Map<string, number>, webApps: Map<string, string>, report: Report): void {
  const web = c.web === undefined ? undefined : obj(c.web);
  const scan = obj(web?.scan);
  if (web?.scan !== undefined && typeof scan.app === 'string' && !appids.has(scan.app)) report(['web', 'scan', 'app'], `"${scan.app}" is not one of wechat.apps`);
  // /oauth/web/authorize is there with any web login, scan-to-login alone included
  const mpQr = web?.mpQr === undefined ? undefined : obj(web.mpQr);
  const taken = web ? ['/oauth', ...(web.scan !== undefined ? ['/scan'] : []), ...(mpQr ? ['/qr', String(mpQr.eventsPath).toLowerCase()] : [])] : [];
  list(c.routes).forEach((raw, i) => {
    const r = obj(raw);
    const p = typeof r.path === 'string' ? r.path.toLowerCase() : undefined;
    const hit = p === undefined ? undefined : taken.find((t) => p === t || p.startsWith(`${t}/`));
    if (hit) report(['routes', i, 'path'], `is under ${hit}/, which the gateway answers itself for web logins`);
    list(r.apps).forEach((a, j) => {
      if (typeof a === 'string' && !appids.has(a) && !webApps.has(a)) report(['routes', i, 'apps', j], `"${a}" is not one of wechat.apps, web.mp, web.open or web.mpQr`);
    });
  });
}

/** The gateway's own paths (endpoints, /metrics on the main listener, the OA's server URL) once each. */
function ownPaths(c: Record<string, unknown>, report: Report): void {
  const own: [string[], unknown][] = Object.entries(obj(c.endpoints)).map(([k, p]) => [['endpoints', k], p]);
  const metrics = obj(c.metrics);
  if (metrics.enabled !== false && metrics.port === undefined) own.push([['metrics', 'path'], metrics.path]);
  const mpQr = obj(c.web).mpQr;
  if (mpQr !== undefined) own.push([['web', 'mpQr', 'eventsPath'], obj(mpQr).eventsPath]);
  const byPath = new Map<unknown, string>();
  for (const [key, p] of own) {
    const prev = byPath.get(p);
    if (prev) report(key, `"${String(p)}" is already used by ${prev}`);
    else byPath.set(p, key.join('.'));
  }
}

/** server.workers: each worker is a process of its own, so what lives in one process cannot be shared. */
function processChecks(c: Record<string, unknown>, report: Report): void {
  const server = obj(c.server);
  const metrics = obj(c.metrics);
  if (server.workers === 'auto' || (typeof server.workers === 'number' && server.workers > 1)) {
    const n = `server.workers: ${String(server.workers)}`;
    if (obj(c.session).store === 'memory') {
      report(['session', 'store'], `must be "redis" with ${n}: the memory store keeps sessions inside one process, so a token from one worker would be unknown to the others (use session.store: redis, or server.workers: 1)`);
    }
    if (obj(c.dev).simulator === true) {
      report(['dev', 'simulator'], `cannot run inside ${n} (its single-use codes live in one process): run \`wxgate simulate\` and point wechat.apiBase at it, or use server.workers: 1`);
    }
    if (c.admin !== undefined && obj(c.admin).port === 0) report(['admin', 'port'], `must be a fixed port with ${n} (workers share listeners by address and port)`);
  }
  if (typeof metrics.port === 'number' && metrics.port !== 0 && metrics.port === server.port) report(['metrics', 'port'], 'must differ from server.port');
}
