import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Config } from './schema.js';

/**
 * What a reload may change while the gateway runs (the request path is rebuilt from the new config and
 * swapped in at once; requests in flight finish on the old one, connections stay open): routes, limits,
 * the own endpoints' paths, the client-side server timeouts and limits, trusted proxies, the access log.
 * Everything else is built once at start (listeners, the session store and its caches, the WeChat
 * client, web logins, metrics, admin, dev helpers): a reload that changes any of it is refused, naming
 * the keys, and the old config keeps serving.
 */
const LIVE_SERVER_KEYS = new Set(['trustedProxies', 'bodyLimit', 'shutdownTimeout', 'requestTimeout', 'headersTimeout', 'keepAliveTimeout', 'maxConnections', 'tls']);
const LIVE_LOG_KEYS = new Set(['access', 'openid']);
const LIVE_TOP_KEYS = new Set(['routes', 'limits', 'endpoints']);

/** The keys whose change needs a restart, as dotted paths ("server.port", "session.store"). */
export function restartOnlyChanges(current: Config, next: Config): string[] {
  const out: string[] = [];
  const keys = new Set([...Object.keys(current), ...Object.keys(next)]);
  for (const key of keys) {
    if (LIVE_TOP_KEYS.has(key)) continue;
    const a = (current as unknown as Record<string, unknown>)[key];
    const b = (next as unknown as Record<string, unknown>)[key];
    const liveKeys = key === 'server' ? LIVE_SERVER_KEYS : key === 'log' ? LIVE_LOG_KEYS : undefined;
    if (liveKeys) {
      const sa = (a ?? {}) as Record<string, unknown>;
      const sb = (b ?? {}) as Record<string, unknown>;
      // the certificate files may change (and are read again); HTTPS on or off needs a restart
      if (key === 'server' && (sa.tls === undefined) !== (sb.tls === undefined)) out.push('server.tls');
      for (const k of new Set([...Object.keys(sa), ...Object.keys(sb)])) {
        if (!liveKeys.has(k) && !same(sa[k], sb[k])) out.push(`${key}.${k}`);
      }
      continue;
    }
    if (same(a, b)) continue;
    // name the changed keys one level down, where there are such
    if (isObj(a) && isObj(b)) {
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) if (!same(a[k], b[k])) out.push(`${key}.${k}`);
    } else out.push(key);
  }
  return out;
}

const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Calls `onChange` when the file's content changes for good: after events settle (editors write a file
 * in several steps, or write a new one and rename it over the old), the file is read twice 100 ms
 * apart and only an unchanged, non-empty text counts, so a half-written file is never taken. The
 * directory is watched, so a file replaced by rename is still seen.
 */
export function watchConfigFile(file: string, onChange: () => void, opts: { settleMs?: number } = {}): { close(): void } {
  const settle = opts.settleMs ?? 300;
  const name = basename(file);
  let last = safeRead(file);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const check = () => {
    timer = undefined;
    const first = safeRead(file);
    setTimeout(() => {
      if (closed) return;
      const second = safeRead(file);
      if (second === undefined || second === '' || second !== first) {
        // still being written (or gone for a moment): look again once it settles
        timer ??= setTimeout(check, settle);
        return;
      }
      if (second === last) return;
      last = second;
      onChange();
    }, 100).unref();
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
      if (closed || (changed !== null && changed !== name)) return;
      if (timer) clearTimeout(timer);
      timer = setTimeout(check, settle);
      timer.unref();
    });
  } catch {
    // a directory that cannot be watched: SIGHUP still reloads
  }
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      watcher?.close();
    },
  };
}

function safeRead(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
