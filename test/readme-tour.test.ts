import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { ROOT, spawnGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The README's quick start, from its heading to the next section. */
function quickStart(): string {
  const start = README.indexOf('## Quick start');
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end);
}

/** The repo's gateway.yaml as it is, only on free ports (other tests and people use 8080, 9100, 9001). */
async function repoGatewayYaml(): Promise<string> {
  const [port, sim, upstream] = await Promise.all([freePort(), freePort(), freePort()]);
  const yaml = readFileSync(join(ROOT, 'gateway.yaml'), 'utf8');
  // every mention of the three ports (values, URLs, comments) moves to the free ones
  return yaml
    .replaceAll(/\b8080\b/g, String(port))
    .replaceAll(/\b9100\b/g, String(sim))
    .replaceAll(/\b9001\b/g, String(upstream));
}

test("the README's quick-start tour of error codes, taken a few times over, never meets the login rate limit of the repo's gateway.yaml", async (t) => {
  const text = quickStart();
  const logins = [...text.matchAll(/"code":"([^"]+)"/g)].map((m) => m[1]!);
  const failures = [...text.matchAll(/`(fail-[-\d]+|slow-\d+|html|garbage)`/g)].map((m) => m[1]!);
  t.true(logins.length >= 1, 'the quick start logs in with a code');
  t.true(failures.length >= 8, `the quick start lists the simulator's failure codes (found ${failures.join(', ')})`);

  const gw = await spawnGateway(await repoGatewayYaml());
  t.teardown(() => gw.stop());
  const post = (code: string) =>
    request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });

  // A person trying the gateway runs the tour, then again, and once more to show a colleague: within a minute.
  for (let round = 1; round <= 3; round++) {
    for (const code of logins) {
      const res = await post(code);
      t.is(res.status, 200, `round ${round}: ${code} logs in (${res.text})`);
      const hello = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${res.json?.token}` } });
      t.is(hello.status, 200, `round ${round}: /api/hello with the token`);
    }
    for (const code of failures) {
      const res = await post(code);
      t.not(res.json?.error, 'rate_limited', `round ${round}: ${code} is answered for itself, not by the login rate limit`);
      t.true(res.status >= 400, `round ${round}: ${code} is a failure (${res.status} ${res.text})`);
      if (code !== 'fail-45011') t.not(res.status, 429, `round ${round}: ${code}`);
      else t.is(res.json?.error, 'wechat_rate_limited', "fail-45011 is WeChat's limit");
    }
  }
  const metrics = await request(gw.url, { path: '/metrics' });
  t.notRegex(metrics.text, /wxgate_rate_limited_total\{endpoint="login"\} [1-9]/);
});

test("the README's table of simulator codes is what /login answers (the repo's gateway.yaml); a code sent twice gets the same token", async (t) => {
  const section = README.slice(README.indexOf('## Development without WeChat'));
  const expected = new Map<string, [number, string]>();
  for (const m of section.matchAll(/`(fail-[-\d]+)` `(\d{3}) ([a-z_]+)`/g)) expected.set(m[1]!, [Number(m[2]), m[3]!]);
  for (const m of section.matchAll(/^\| `(html|garbage|nojson-openid)` \|[^|]*\| `(\d{3}) ([a-z_]+)` \|$/gm)) expected.set(m[1]!, [Number(m[2]), m[3]!]);
  t.true(expected.size >= 8, `the table names the answers (found ${[...expected.keys()].join(', ')})`);
  const other = /any other errcode `(\d{3}) ([a-z_]+)`/.exec(section);
  t.truthy(other, 'the table says what other errcodes get');
  expected.set('fail-12345', [Number(other![1]), other![2]!]);

  const gw = await spawnGateway(await repoGatewayYaml());
  t.teardown(() => gw.stop());
  const post = (code: string) =>
    request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
  for (const [code, [status, error]] of expected) {
    const res = await post(code);
    t.deepEqual([res.status, res.json?.error], [status, error], code);
  }
  const first = await post('alice.7');
  const again = await post('alice.7');
  t.is(first.status, 200);
  t.is(again.json.token, first.json.token, 'the same code again: the same token, by design');
  const union = await post('union-bob.1');
  const hello = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${union.json.token}` } });
  t.regex(String(hello.json.unionid), /^o[A-Za-z0-9_-]{27}$/, 'a union* user has a unionid upstream');
  const plain = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${first.json.token}` } });
  t.is(plain.json.unionid, null, 'alice has none');
});
