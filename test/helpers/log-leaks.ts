/**
 * What must never be in a gateway's log: session tokens, login and OAuth codes, session_keys, app
 * secrets, WeChat access_tokens, phone numbers, scan-ticket secrets. `leaks` looks for them by value
 * (what a test knows it handed out or was given) and by shape (what nobody told it about):
 *   - a session token: 59 base64url characters with upper and lower case letters and digits;
 *   - a session_key: 16 bytes of base64 (22 characters and "==", WeChat's and the simulator's shape);
 *   - the simulator's access_tokens and OAuth tokens (`simtok_…`, `simsns_…`, `simsnsr_…`);
 *   - a mainland China mobile number (11 digits from 13…19, with or without +86 / 86), standing alone
 *     (not inside a longer run of letters and digits: a UUID's last group can hold 11 such digits).
 * Every gateway the test helpers start (test/helpers/gateway.ts) is checked when it closes, by shape and
 * against the secrets of its own configuration; test/security/log-leaks.test.ts drives every flow at
 * trace level and checks by value as well.
 */

const SHAPES: Array<[string, RegExp]> = [
  ['session token', /(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{59}(?![A-Za-z0-9_-])/],
  ['session_key', /(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{22}==(?![A-Za-z0-9+/=])/],
  ['WeChat access_token (simulator)', /sim(?:tok|sns|snsr)_[A-Za-z0-9_-]{16,}/],
  ['phone number', /(?<![0-9A-Za-z])(?:\+?86)?1[3-9][0-9]{9}(?![0-9A-Za-z])/],
];

export interface Leak {
  what: string;
  /** the log line, cut to 300 characters */
  line: string;
}

/**
 * The leaks in `lines`: every shape above, and every value of `known` (at least 6 characters; shorter
 * ones would match by chance) that appears as written.
 */
export function leaks(lines: Iterable<string>, known: Iterable<string> = []): Leak[] {
  const values = [...new Set([...known].filter((v) => typeof v === 'string' && v.length >= 6))];
  const out: Leak[] = [];
  for (const line of lines) {
    for (const [what, re] of SHAPES) if (re.test(line)) out.push({ what, line: line.slice(0, 300) });
    for (const v of values) if (line.includes(v)) out.push({ what: `known value ${v.slice(0, 6)}…`, line: line.slice(0, 300) });
  }
  return out;
}

/** String values in a configuration under keys that name a credential (secret, token, password, stateSecret…). */
export function configSecrets(raw: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown, key: string) => {
    if (typeof v === 'string') {
      if (/(secret|token|password|passwd)$/i.test(key)) out.push(v);
      // credentials in URLs (redis://:pass@host)
      const m = /^[a-z][a-z0-9+.-]*:\/\/[^/@]*:([^/@]+)@/i.exec(v);
      if (m) out.push(decodeURIComponent(m[1]!));
    } else if (Array.isArray(v)) v.forEach((x) => walk(x, key));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(raw, '');
  return out;
}

/**
 * Fails the test file when `lines` leak anything: the first few leaks go to stderr and the worker's exit
 * code is set, so ava reports the file as failed ("exited with a non-zero exit code") once it is done.
 * Not a throw: a gateway's close() is called in after.always hooks and teardowns, where a throw would
 * skip the cleanup after it (a redis-server left running keeps the worker alive).
 */
export function reportLeaks(lines: Iterable<string>, known: Iterable<string>, whose: string): void {
  const found = leaks(lines, known);
  if (found.length === 0) return;
  const shown = found.slice(0, 5).map((l) => `  ${l.what}: ${l.line}`);
  console.error(`LOG LEAK: ${whose}: ${found.length} log line(s) leak a credential or a phone number (test/helpers/log-leaks.ts):\n${shown.join('\n')}`);
  process.exitCode = 1;
}
