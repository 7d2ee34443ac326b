import test from 'ava';
import { checkPath } from '../src/proxy/path.js';
import { RouteTable } from '../src/proxy/routes.js';

const up = { upstream: 'http://u', upstreams: ['http://u'], timeout: 1000, failTimeout: 10_000, websocket: { maxLifetime: 3_600_000 } };
const table = new RouteTable([
  { ...up, name: 'public', path: '/api/public', auth: 'none' },
  { ...up, name: 'api', path: '/api', auth: 'required' },
  { ...up, name: 'root', path: '/', auth: 'none' },
]);

function routeOf(target: string): string {
  const c = checkPath(target);
  return c.ok ? (table.match(c.matchKey)?.name ?? 'none') : `rejected: ${c.reason}`;
}

test('the longest prefix on a segment boundary wins', (t) => {
  t.is(routeOf('/api/public'), 'public');
  t.is(routeOf('/api/public/x/y'), 'public');
  t.is(routeOf('/api/publicity'), 'api');
  t.is(routeOf('/api'), 'api');
  t.is(routeOf('/apis'), 'root');
  t.is(routeOf('/'), 'root');
});

test('query and fragment never take part in routing', (t) => {
  t.is(routeOf('/api/secret?x=/api/public'), 'api');
  t.regex(routeOf('/api/public#/../secret'), /^rejected/);
});

test('case, encoding and dot tricks cannot reach a weaker route', (t) => {
  t.is(routeOf('/API/PUBLIC/x'), 'public');
  t.is(routeOf('/ApI/secret'), 'api');
  t.is(routeOf('/api/%70ublic/x'), 'public', 'an encoded unreserved letter decodes before matching');
  for (const p of ['/api/public/../secret', '/api/public/%2e%2e/secret', '/api/public/%2E./secret', '/api/public%2Fx', '/api/public%5Cx', '//api', '/api/public/.', '/api/x\\y', '/x;jsessionid=1', '/api/%00', '/api/%e0%a4%a']) {
    t.regex(routeOf(p), /^rejected/, p);
  }
  t.regex(routeOf('http://evil/api'), /^rejected: absolute-form/);
  t.regex(routeOf('*'), /^rejected: asterisk-form/);
});

test('a 30 KB path is checked in linear time', (t) => {
  const long = '/api/' + 'a/'.repeat(15_000) + '..';
  const c = checkPath(long);
  t.false(c.ok);
  const ok = checkPath('/api/' + 'a%41'.repeat(7_500));
  t.true(ok.ok);
});
