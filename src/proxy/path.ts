/**
 * Turns a raw request target into the path that routing decides on, or rejects it.
 *
 * Routing looks at the path only (never the query or a fragment) and must not be fooled into skipping
 * auth by dot segments, encoded slashes, empty segments or case. We do not rewrite: a target that is
 * not already in plain form is rejected, so what reaches the upstream is exactly what was matched.
 */
export type PathCheck = { ok: true; path: string; matchKey: string } | { ok: false; reason: string };

// Characters a plain path may hold without a closer look (RFC 3986 pchar without "%" and ";").
const PLAIN = /^\/[A-Za-z0-9\-._~!$&'()*+,=:@/]*$/;

export function checkPath(target: string): PathCheck {
  if (target.charCodeAt(0) !== 47 /* / */) {
    return { ok: false, reason: target === '*' ? 'asterisk-form request target' : 'absolute-form request target' };
  }
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (path.includes('#')) return { ok: false, reason: 'fragment in request target' };

  let decoded = path;
  if (!PLAIN.test(path)) {
    if (/%(2f|5c)/i.test(path)) return { ok: false, reason: 'encoded slash or backslash in path' };
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return { ok: false, reason: 'malformed percent-encoding in path' };
    }
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f\\;]/.test(decoded)) return { ok: false, reason: 'control character, backslash or ";" in path' };
  }
  if (decoded.includes('//')) return { ok: false, reason: 'empty path segment' };
  if (decoded.includes('/.')) {
    for (const seg of decoded.split('/')) {
      if (seg === '.' || seg === '..') return { ok: false, reason: 'dot segment in path' };
    }
  }
  return { ok: true, path, matchKey: decoded.toLowerCase() };
}
