import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { z } from 'zod';
import { isObj } from './checks.js';
import { liveKeys, objectShape, reloadMark } from './live.js';
import { configSchema, type Config } from './schema.js';

/**
 * A reload rebuilds the request path from the new config and swaps it in at once (requests in flight
 * finish on the old one, connections stay open), so it may change what the schema marks live (live.ts:
 * routes, limits, the own endpoints' paths, the client-side server timeouts and limits, trusted proxies,
 * the access log). Everything else is built once at start (listeners, the session store and its caches,
 * the WeChat client, web logins, metrics, admin, dev helpers): a reload that changes any of it is
 * refused, naming the keys, and the old config keeps serving.
 */
export function restartOnlyChanges(current: Config, next: Config): string[] {
  return changes(configSchema, current, next, []);
}

/** The restart-only keys that differ between `a` and `b` (the values of `schema` at `path`), as dotted paths. */
function changes(schema: z.ZodType | undefined, a: unknown, b: unknown, path: string[]): string[] {
  const mark = reloadMark(schema);
  if (mark === true) return [];
  if (mark === 'while-set') return (a === undefined) !== (b === undefined) ? [path.join('.')] : [];
  const shape = objectShape(schema);
  if (shape && liveKeys(schema!).length) {
    // some keys below are live: walk down to them
    const oa = isObj(a) ? a : {};
    const ob = isObj(b) ? b : {};
    return keysOf(oa, ob).flatMap((k) => changes(shape[k], oa[k], ob[k], [...path, k]));
  }
  if (same(a, b)) return [];
  // name the changed keys one level down, where there are such
  if (path.length === 1 && isObj(a) && isObj(b)) return keysOf(a, b).filter((k) => !same(a[k], b[k])).map((k) => `${path[0]}.${k}`);
  return [path.join('.')];
}

const keysOf = (a: object, b: object) => [...new Set([...Object.keys(a), ...Object.keys(b)])];
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
