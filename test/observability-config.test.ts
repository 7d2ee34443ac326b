/**
 * config/grafana-dashboard.json and config/prometheus-alerts.yml against the metrics a real gateway
 * exposes: every metric, label and (enumerable) label value their PromQL names must be on a running
 * gateway's /metrics, and the files must be well-formed (panels with targets, alerts with `for`,
 * severity and annotations). The PromQL is parsed by Prometheus's own grammar and its labels worked
 * out (test/helpers/promql-check.ts), so a `by (...)`, a selector, a legend `{{label}}` or an
 * annotation `$labels.x` that names a label the series do not have is caught too.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { createMetrics } from '../src/metrics/metrics.js';
import { ERRORS } from '../src/base/errors.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, ROOT, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { scrape } from './helpers/metrics.js';
import { familyName, readExposition, TARGET_LABELS, type Exposition } from './helpers/exposition.js';
import { checkAlerts, checkDashboard, type Panel } from './helpers/monitoring-files.js';
import { checkExpr, newUsage } from './helpers/promql-check.js';
import { freePort } from './helpers/ports.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

const DASHBOARD_FILE = join(ROOT, 'config/grafana-dashboard.json');
const ALERTS_FILE = join(ROOT, 'config/prometheus-alerts.yml');

// ---------------------------------------------------------------------------------------------------
// A gateway with every kind of series in it
// ---------------------------------------------------------------------------------------------------

let sim: Awaited<ReturnType<typeof startSimulator>>;
let upstream: Upstream;
let gw: TestGateway;
let exp: Exposition;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  upstream = await startUpstream();
  const closedPort = await freePort();
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [
        { name: 'api', path: '/api', upstream: upstream.url },
        { name: 'gone', path: '/gone', upstream: `http://127.0.0.1:${closedPort}`, auth: 'none' },
      ],
      // a small login budget, so that the 4th login below is rate limited
      limits: { login: { perIp: 3, window: '1m' } },
      metrics: { port: 0 },
    }),
    { logLevel: 'warn' },
  );
  const post = (path: string, body: object, headers: Record<string, string> = {}) =>
    request(gw.url, { method: 'POST', path, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  // a login, and the same code again (answered from the store: wxgate_login_code_replays_total)
  const token = await login(gw.url, 'obs-alice.1');
  if ((await post('/login', { code: 'obs-alice.1' })).status !== 200) throw new Error('repeated code not answered');
  // a proxied request to a real upstream, and one to an upstream that refuses (wxgate_upstream_errors_total)
  const proxied = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${token}` } });
  if (proxied.status !== 200 || upstream.seen.length !== 1) throw new Error(`proxied request: ${proxied.status}`);
  if ((await request(gw.url, { path: '/gone/x' })).status !== 502) throw new Error('refused upstream not 502');
  // a phone number: an access_token fetch (wxgate_wechat_token_refreshes_total, _token_age_seconds)
  if ((await post('/wx/phone', { code: 'phone-13800138000' }, { authorization: `Bearer ${token}` })).status !== 200) throw new Error('phone failed');
  // a failed login, then one over the budget (wxgate_rate_limited_total)
  if ((await post('/login', { code: 'fail-40029' })).status !== 401) throw new Error('failed login not 401');
  if ((await post('/login', { code: 'obs-bob.1' })).status !== 429) throw new Error('4th login not rate limited');

  if (!gw.metricsUrl) throw new Error('no metrics listener');
  exp = await readExposition(gw.metrics.registry);
  // the registry is what the metrics listener serves: every family of it is on /metrics
  const text = await scrape(gw.metricsUrl);
  const missing = [...exp.families.keys()].filter((name) => !text.includes(`# TYPE ${name} `));
  if (missing.length) throw new Error(`not on /metrics: ${missing.join(', ')}`);
  // values not (all) seen above nor listed in the HELP text: the login results are the error codes, the
  // WeChat apis those the client calls
  const apis = ['client.ts', 'web-apis.ts'].flatMap((f) => [...readFileSync(join(ROOT, 'src/wechat', f), 'utf8').matchAll(/this\.(?:call|transport\.exchange)\(\s*'(\w+)'/g)].map((m) => m[1]!));
  const exact = (vs: string[]) => vs.map((v) => new RegExp(`^${v}$`));
  exp.knownValues.set('wxgate_logins_total', new Map([['result', exact(['ok', ...Object.keys(ERRORS)])]]));
  exp.knownValues.set('wxgate_wechat_requests_total', new Map([['api', exact(apis)]]));
  exp.knownValues.set('wxgate_wechat_request_duration_seconds', new Map([['api', exact(apis)]]));
});

test.after.always(async () => {
  await gw?.close();
  await upstream?.close();
  await sim?.close();
});

const dashboardText = () => readFileSync(DASHBOARD_FILE, 'utf8');
const alertsText = () => readFileSync(ALERTS_FILE, 'utf8');

/** The metrics, labels and values the two files name, and the problems found in them. */
function checkFiles(dashboard = dashboardText(), alerts = alertsText()) {
  const dashUsage = newUsage();
  const alertUsage = newUsage();
  let dashProblems: string[];
  let alertProblems: string[];
  try {
    dashProblems = checkDashboard(exp, JSON.parse(dashboard), dashUsage);
  } catch (err) {
    dashProblems = [`not JSON: ${(err as Error).message}`];
  }
  try {
    alertProblems = checkAlerts(exp, parseYaml(alerts), alertUsage);
  } catch (err) {
    alertProblems = [`not YAML: ${(err as Error).message}`];
  }
  return { dashProblems, alertProblems, dashUsage, alertUsage };
}

test('the series the checks rely on are on /metrics', (t) => {
  // the exercise above must have made these series; if one goes missing the label checks get weaker
  for (const [family, label] of [
    ['wxgate_http_requests_total', 'status'],
    ['wxgate_logins_total', 'result'],
    ['wxgate_login_code_replays_total', 'source'],
    ['wxgate_wechat_requests_total', 'outcome'],
    ['wxgate_session_lookups_total', 'source'],
    ['wxgate_wechat_token_refreshes_total', 'outcome'],
    ['wxgate_wechat_token_age_seconds', 'appid'],
    ['wxgate_rate_limited_total', 'endpoint'],
    ['wxgate_upstream_errors_total', 'kind'],
    ['wxgate_session_cache_entries', 'cache'],
  ] as const) {
    const f = exp.families.get(family);
    t.truthy(f, family);
    t.true([...(f?.samples.values() ?? [])].some((l) => l.has(label)), `${family} has a series with ${label}`);
  }
});

test('the Grafana dashboard names only metrics, labels and values the gateway has', (t) => {
  const { dashProblems, dashUsage } = checkFiles();
  t.deepEqual(dashProblems, []);
  const dash = JSON.parse(dashboardText());
  t.is(dash.schemaVersion, 39);
  t.true(dashUsage.metrics.size > 0);
  // every metric the gateway itself defines is on the dashboard, and the process's RSS, CPU and event loop
  const own = createMetrics({ defaultMetrics: false }).registry.getMetricsAsArray().map((m) => m.name);
  const shown = new Set([...dashUsage.metrics].map((m) => familyName(exp, m)));
  for (const name of [...own, 'wxgate_process_resident_memory_bytes', 'wxgate_process_cpu_seconds_total', 'wxgate_nodejs_eventloop_lag_p99_seconds']) {
    t.true(shown.has(name), `${name} is on the dashboard`);
  }
  const noSamples = [...shown].filter((n) => n && exp.families.get(n)?.samples.size === 0);
  if (noSamples.length) t.log(`no series yet (labels checked against the registry's declaration): ${noSamples.join(', ')}`);
});

test('the alert rules name only metrics, labels and values the gateway has, each with for, severity and annotations', (t) => {
  const { alertProblems, alertUsage } = checkFiles();
  t.deepEqual(alertProblems, []);
  const families = new Set([...alertUsage.metrics].map((m) => familyName(exp, m)));
  // what issue 8 asks the rules to watch
  for (const [what, family] of [
    ['login error rate', 'wxgate_logins_total'],
    ['WeChat latency', 'wxgate_wechat_request_duration_seconds'],
    ['WeChat unavailable', 'wxgate_wechat_requests_total'],
    ['Redis down', 'wxgate_session_store_up'],
    ['upstream errors', 'wxgate_upstream_errors_total'],
    ['upstream 5xx', 'wxgate_http_requests_total'],
    ['rate limiting', 'wxgate_rate_limited_total'],
    ['access_token refresh', 'wxgate_wechat_token_refreshes_total'],
    ['access_token age', 'wxgate_wechat_token_age_seconds'],
    ['gateway down', 'up'],
  ]) {
    t.true(families.has(family), `an alert on ${what} (${family})`);
  }
  const rules = (parseYaml(alertsText()) as { groups: Array<{ rules: Array<{ expr: string }> }> }).groups.flatMap((g) => g.rules);
  t.true(rules.some((r) => /^\s*absent\(\s*up\{/.test(r.expr)), 'an absent(up{...}) rule');
  t.true(rules.some((r) => /^\s*up\{[^}]*\}\s*==\s*0\s*$/.test(r.expr)), 'an up == 0 rule');
});

/** Replaces whole-word occurrences (not inside longer names). */
const replaceWord = (text: string, word: string, by: string) =>
  text.replace(new RegExp(`(?<![\\w:$])${word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w:])`, 'g'), by);

test('a typo in any metric name, label name or label value of either file fails the check', (t) => {
  const { dashUsage, alertUsage } = checkFiles();
  const files = [
    { file: 'dashboard', text: dashboardText(), usage: dashUsage, problems: (x: string) => checkFiles(x, alertsText()).dashProblems },
    { file: 'alerts', text: alertsText(), usage: alertUsage, problems: (x: string) => checkFiles(dashboardText(), x).alertProblems },
  ];
  let tried = 0;
  for (const { file, text, usage, problems } of files) {
    const typos: Array<[string, string]> = [
      // wxgate_http_requests_total → wxgate_hhttp_requests_total, up → uup
      ...[...usage.metrics].map((m): [string, string] => [m, m.replace(/^(wxgate_)?(\w)/, '$1$2$2')]),
      ...[...usage.labels].filter((l) => !TARGET_LABELS.includes(l)).map((l): [string, string] => [l, `${l}x`]),
      ...[...usage.values].map((v): [string, string] => [v, `${v}x`]),
    ];
    for (const [word, typo] of typos) {
      const mutated = replaceWord(text, word, typo);
      if (mutated === text) continue;
      tried++;
      t.not(problems(mutated).length, 0, `${file}: "${word}" misspelt as "${typo}" is caught`);
    }
  }
  t.true(tried > 40, `${tried} typos tried`);
  t.log(`${tried} typos tried, each caught`);

  // and the structural checks
  const dash = JSON.parse(dashboardText());
  const panel = dash.panels.find((p: Panel) => p.type !== 'row');
  panel.targets = [];
  t.true(checkDashboard(exp, dash).some((p) => p.includes('no targets')));
  const doc = parseYaml(alertsText());
  const rule = doc.groups[0].rules[0];
  delete rule.for;
  delete rule.labels.severity;
  delete rule.annotations.summary;
  const found = checkAlerts(exp, doc);
  for (const want of ['no "for"', 'severity', 'annotations.summary']) t.true(found.some((p) => p.includes(want)), want);
  // two sides with different labels match nothing
  const mismatch: string[] = [];
  checkExpr(exp, 'sum by (route) (rate(wxgate_http_requests_total[5m])) / sum by (api) (rate(wxgate_wechat_requests_total[5m]))', mismatch, newUsage());
  t.true(mismatch.some((p) => p.includes('different labels')));
  const gauge: string[] = [];
  checkExpr(exp, 'rate(wxgate_session_store_up[5m])', gauge, newUsage());
  t.true(gauge.some((p) => p.includes('not a counter')));
});

test("an alert fires when WeChat's daily API quota is used up (45009), as critical", (t) => {
  const rules = (parseYaml(alertsText()).groups as Array<{ rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }>).flatMap((g) => g.rules);
  const quota = rules.filter((r) => /errcode_45009|wechat_quota_exceeded/.test(r.expr) && !/\/ sum/.test(r.expr));
  t.is(quota.length, 1, 'one rule on 45009 alone');
  t.is(quota[0]?.labels.severity, 'critical');
});
