import { randomBytes } from 'node:crypto';
import test from 'ava';
import { RedisStore } from '../src/session/redis-store.js';
import { startRedisCluster, startSentinel } from './helpers/redis.js';
import { hashFor, ready, record, sleep, storeCases } from './helpers/store-cases.js';

/** The store's cases again, through ioredis's own Cluster and Sentinel support, on real servers. */
let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
let sentinel: Awaited<ReturnType<typeof startSentinel>>;

test.before(async () => {
  [cluster, sentinel] = await Promise.all([startRedisCluster(), startSentinel()]);
});
test.after.always(async () => {
  await cluster?.close();
  await sentinel?.close();
});

const prefix = () => `t${randomBytes(4).toString('hex')}:`;
const common = { url: 'redis://127.0.0.1:6379', connectTimeout: 2000, commandTimeout: 1000 };

async function clusterStore(keyPrefix = prefix()) {
  const s = RedisStore.open({ ...common, cluster: cluster.urls, keyPrefix });
  await ready(s);
  return s;
}
async function sentinelStore(keyPrefix = prefix()) {
  const s = RedisStore.open({ ...common, sentinels: [sentinel.address], name: 'wxgate-master', keyPrefix });
  await ready(s);
  return s;
}

storeCases('cluster', clusterStore);
storeCases('sentinel', sentinelStore);

for (const [kind, make] of [
  ['cluster', clusterStore],
  ['sentinel', sentinelStore],
] as const) {
  test(`${kind}: a revocation reaches another replica`, async (t) => {
    const p = prefix();
    const [a, b] = [await make(p), await make(p)];
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    await sleep(200);
    const h = hashFor('o-topo');
    await a.create(h, record('o-topo'), 'k', { maxPerUser: 10 });
    const heard = new Promise<boolean>((resolve) => b.onInvalidate((inv) => inv !== 'all' && inv.includes(h) && resolve(true)));
    await a.revoke(h);
    t.true(await Promise.race([heard, sleep(1000).then(() => false)]));
  });
}
