import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import test from 'ava';
import { ROOT } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';
import { startRedis } from './helpers/redis.js';
import { sleep, waitFor } from './helpers/wait.js';


/*
 * npm test ended with "[ioredis] Unhandled error event: ... ECONNREFUSED": the bench smoke round (where
 * nginx is installed) runs the do-it-yourself auth service, whose ioredis client had no error listener,
 * and kills Redis before it at the end of the run. Every failed reconnect printed that line.
 */
test("the bench's auth service: Redis going away leaves no '[ioredis] Unhandled error event' on stderr, and lookups answer 401", async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/peers/auth-service.ts'), String(port), redis.url], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(() => request(url, { path: '/' }).then(() => true), { timeout: 15_000, interval: 50, message: 'the auth service started' }).catch((err: Error) => {
    throw new Error(`${err.message}: ${stderr}`);
  });
  const token = 'A'.repeat(59);
  t.is((await request(url, { path: '/', headers: { authorization: `Bearer ${token}` } })).status, 401, 'an unknown token, Redis up');
  await redis.stop();
  // ioredis reconnects after ~50 ms, then waits longer each time: a second is several failed attempts
  await sleep(1500); // real time: let several reconnection attempts fail
  t.is((await request(url, { path: '/', headers: { authorization: `Bearer ${token}` } })).status, 401, 'Redis down: 401, no crash');
  t.is(child.exitCode, null, 'still running');
  t.notRegex(stderr, /Unhandled error event/);
  child.kill('SIGTERM');
  await once(child, 'exit');
});
