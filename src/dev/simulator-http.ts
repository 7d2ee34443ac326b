import type http from 'node:http';
import { ERRCODES } from '../wechat/errcodes.js';

/** How the simulator's API modules answer: JSON and errors as WeChat sends them, HTML pages, a route table. */

/** A simulator API: the request, the response, the query. */
export type Route = (req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams) => void;

/** `"METHOD /path"` → its route; the returned handle answers a request it knows and says whether it did. */
export function router(routes: Record<string, Route>): (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => boolean {
  const table = new Map(Object.entries(routes));
  return (req, res, url) => {
    const route = table.get(`${req.method} ${url.pathname}`);
    route?.(req, res, url.searchParams);
    return route !== undefined;
  };
}

export function send(res: http.ServerResponse, status: number, contentType: string, text: string | Buffer, headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * JSON answers of one API module (content type text/plain, as WeChat's), and its errors: `{ errcode,
 * errmsg }` with WeChat's errmsg (src/wechat/errcodes.ts) and a request id `rid: <prefix>-<n>`.
 */
export function answers(ridPrefix: string, contentType = 'text/plain') {
  let rid = 0;
  const json = (res: http.ServerResponse, body: object, type = contentType) => send(res, 200, type, JSON.stringify(body));
  const error = (res: http.ServerResponse, errcode: number, type = contentType) =>
    json(res, { errcode, errmsg: `${ERRCODES[errcode]?.errmsg ?? 'simulated error'}, rid: ${ridPrefix}-${(++rid).toString(16)}` }, type);
  return { json, error };
}

/** The errcode a test code asks for with "fail-<errcode>" (the whole text, or with `prefix` its start). */
export function failCode(text: string, prefix = false): number | undefined {
  const m = (prefix ? /^fail-(-?\d+)/ : /^fail-(-?\d+)$/).exec(text);
  return m ? Number(m[1]) : undefined;
}

export function html(res: http.ServerResponse, status: number, title: string, body: string): void {
  const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head><body>${body}</body></html>`;
  send(res, status, 'text/html; charset=utf-8', page, { 'cache-control': 'no-store' });
}

export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Simulated user names: 1 to 64 letters, digits, "_" or "-". */
export const USER = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * WeChat's errcode for an app's credentials, or undefined when they are good: 41002 / 41004 appid /
 * secret missing; with `apps` (appid → secret), 40013 an unknown appid and 40125 a wrong secret.
 */
export function appError(apps: Record<string, string> | undefined, appid: unknown, secret: unknown): number | undefined {
  if (typeof appid !== 'string' || appid === '') return 41002;
  if (typeof secret !== 'string' || secret === '') return 41004;
  if (apps && !Object.hasOwn(apps, appid)) return 40013;
  if (apps && apps[appid] !== secret) return 40125;
  return undefined;
}

/** A code exchange's errcode: appError's, 41008 without the code (query `param`), or the one a "fail-<errcode>" code asks for. */
export function exchangeError(apps: Record<string, string> | undefined, q: URLSearchParams, param: string, prefix = false): number | undefined {
  const code = q.get(param);
  return appError(apps, q.get('appid'), q.get('secret')) ?? (code ? failCode(code, prefix) : 41008);
}
