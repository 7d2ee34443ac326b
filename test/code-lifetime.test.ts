import test from 'ava';
import { Redis } from 'ioredis';
import { startSimulator } from '../src/dev/simulator.js';
import { replayKey } from '../src/login/replay.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser } from './helpers/browser.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/**
 * A login code lives at WeChat 5 minutes (wx.login() for jscode2session, Official Account OAuth) or 10
 * minutes (website QR login, qrconnect) (issue 18, item 3); the gateway remembers a code's answer (the
 * same code again gets the same session) exactly that long. Read from the real Redis the replicas share.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PREFIX = 'life:';
const MIN = 60_000;

let redis: RedisServer;
let client: Redis;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;

test.before(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
  client.on('error', () => {});
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: PREFIX } },
      web: { publicUrl: 'https://m.example.com', mp: { appid: MP, secret: MP_SECRET }, open: { appid: OPEN, secret: OPEN_SECRET } },
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  client?.disconnect();
  await sim?.close();
  await redis?.close();
});

/** How long the answer to `code` of `appid` is still remembered. */
const remembered = (appid: string, code: string) => client.pttl(`${PREFIX}c:${replayKey(appid, code)}`);

async function webLogin(flow: 'mp' | 'open', user: string): Promise<string> {
  const b = new Browser(gw.url);
  const start = await b.go(`/oauth/${flow}/authorize?redirect=/`);
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  q.set('user', user);
  const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
  const done = await b.go(back.pathname + back.search);
  if (done.status !== 302) throw new Error(`callback: ${done.status} ${done.text}`);
  // the same callback again: the remembered answer, the same session
  const again = await b.go(back.pathname + back.search);
  if (again.status !== 302) throw new Error(`again: ${again.status} ${again.text}`);
  return back.searchParams.get('code')!;
}

const within = (ms: number, lifetime: number) => ms > lifetime - MIN / 2 && ms <= lifetime;

test.serial('jscode2session (POST /login): the code and its remembered answer live 5 minutes', async (t) => {
  await login(gw.url, 'life-mini.1');
  const ms = await remembered(APPID, 'life-mini.1');
  t.true(within(ms, 5 * MIN), `${ms} ms`);
});

test.serial('Official Account OAuth: 5 minutes', async (t) => {
  const code = await webLogin('mp', 'life-mp');
  const ms = await remembered(MP, code);
  t.true(within(ms, 5 * MIN), `${ms} ms`);
});

test.serial('website QR login (qrconnect): 10 minutes', async (t) => {
  const code = await webLogin('open', 'life-open');
  const ms = await remembered(OPEN, code);
  t.true(within(ms, 10 * MIN), `${ms} ms`);
});
