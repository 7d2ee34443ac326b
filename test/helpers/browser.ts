import { request, type Reply } from './http.js';

/** A Set-Cookie line, parsed: name, value and its attributes (lower-cased names; flags as ''). */
export interface SetCookie {
  name: string;
  value: string;
  attrs: Record<string, string>;
}

export function parseSetCookie(line: string): SetCookie {
  const [pair, ...parts] = line.split(';');
  const eq = pair!.indexOf('=');
  const attrs: Record<string, string> = {};
  for (const p of parts) {
    const i = p.indexOf('=');
    const k = (i < 0 ? p : p.slice(0, i)).trim().toLowerCase();
    attrs[k] = i < 0 ? '' : p.slice(i + 1).trim();
  }
  return { name: pair!.slice(0, eq).trim(), value: decodeURIComponent(pair!.slice(eq + 1).trim()), attrs };
}

export function setCookies(res: Reply): SetCookie[] {
  const raw = res.headers['set-cookie'];
  return (Array.isArray(raw) ? raw : raw ? [raw] : []).map(parseSetCookie);
}

/**
 * A browser as far as the gateway can tell: keeps the cookies it is given (Max-Age=0 deletes), sends
 * them back, and follows nothing by itself (tests look at every redirect).
 */
export class Browser {
  readonly jar = new Map<string, string>();

  constructor(readonly base: string) {}

  cookieHeader(extra: Record<string, string> = {}): string | undefined {
    const all = { ...Object.fromEntries(this.jar), ...extra };
    const pairs = Object.entries(all).map(([k, v]) => `${k}=${v}`);
    return pairs.length ? pairs.join('; ') : undefined;
  }

  async go(path: string, opts: { method?: string; headers?: Record<string, string>; body?: string; base?: string; extraCookies?: Record<string, string> } = {}): Promise<Reply> {
    const cookie = this.cookieHeader(opts.extraCookies);
    const res = await request(opts.base ?? this.base, {
      method: opts.method ?? 'GET',
      path,
      headers: { accept: 'application/json', ...(cookie ? { cookie } : {}), ...opts.headers },
      body: opts.body,
    });
    for (const c of setCookies(res)) {
      if (c.attrs['max-age'] === '0' || c.value === '') this.jar.delete(c.name);
      else this.jar.set(c.name, c.value);
    }
    return res;
  }
}

/** Path and query of an absolute or relative Location. */
export function pathOf(location: string | undefined): string {
  const u = new URL(location ?? '', 'http://x');
  return u.pathname + u.search;
}
