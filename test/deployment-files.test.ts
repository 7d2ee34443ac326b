/**
 * The deployment files, read, since images cannot be built here: the Dockerfile (stages, non-root, a
 * healthcheck) and docker-compose.yml (two read-only replicas on one Redis behind nginx) with the
 * gateway configuration it mounts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { parse as parseYaml } from 'yaml';
import { buildConfig } from '../src/config/load.js';
import { ROOT } from './helpers/gateway.js';

test('the Dockerfile builds in stages and runs as non-root with a node healthcheck', (t) => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const stages = text.split(/^FROM /m).slice(1);
  t.true(stages.length >= 2, 'multi-stage');
  const final = `FROM ${stages[stages.length - 1]}`;
  t.regex(text, /RUN npm ci\b/);
  t.regex(text, /RUN npm run build/);
  t.regex(final, /npm ci --omit=dev|COPY --from=\w+ \/app\/node_modules/, 'production dependencies only in the final stage');
  t.notRegex(final, /RUN npm ci(?![^\n]*--omit=dev)/);
  const user = /^USER\s+(\S+)/m.exec(final)?.[1];
  t.truthy(user, 'USER in the final stage');
  t.false(['root', '0', '0:0'].includes(user!), 'not root');
  t.regex(final, /^EXPOSE\s+8080/m);
  t.regex(final, /^HEALTHCHECK[\s\S]*?CMD \["node",[\s\S]*\/healthz/m);
  t.regex(final, /^CMD \["node", ?"dist\/cli\.js", ?"--config", ?"\/etc\/wxgate\/gateway\.yaml"\]$/m);
  t.false(lines.some((l) => /^ENTRYPOINT/.test(l)), 'no ENTRYPOINT in front of CMD');
});

test('docker-compose.yml: two read-only replicas on one Redis behind nginx, with a valid gateway config', (t) => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true });
  const services = compose.services as Record<string, any>;
  t.truthy(services.redis, 'a redis service');
  const replicas = Object.entries(services).filter(([, s]) => (s.volumes ?? []).some((v: string) => String(v).includes('/etc/wxgate/gateway.yaml')));
  t.is(replicas.length, 2, 'two wxgate replicas');
  for (const [name, s] of replicas) {
    t.true(s.read_only, `${name} read_only`);
    t.true((s.tmpfs ?? []).some((x: string) => String(x).split(':')[0] === '/tmp'), `${name} tmpfs /tmp`);
    t.true(s.volumes.includes('./config/compose.gateway.yaml:/etc/wxgate/gateway.yaml:ro'), `${name} mounts the config read-only`);
    t.truthy(s.environment?.WX_SECRET, `${name} gets its secret from the environment`);
  }
  const lb = Object.entries(services).find(([, s]) => String(s.image ?? '').startsWith('nginx'));
  t.truthy(lb, 'an nginx load balancer');
  const nginxConf = JSON.stringify(compose.configs ?? {}) + JSON.stringify(lb?.[1] ?? {});
  for (const [name] of replicas) t.regex(nginxConf, new RegExp(`server ${name}:8080`), `nginx sends to ${name}`);

  // config/compose.gateway.yaml is a valid configuration: redis at the compose service, simulator, metrics port
  const raw = parseYaml(readFileSync(join(ROOT, 'config/compose.gateway.yaml'), 'utf8'));
  const config = buildConfig(raw, 'config/compose.gateway.yaml', { WX_SECRET: 'x', REDIS_PASSWORD: 'y' });
  t.is(config.session.store, 'redis');
  t.regex(config.session.redis.url, /@redis:6379$/);
  t.true(config.dev.simulator);
  t.true(config.routes.length > 0);
  t.is(typeof config.metrics.port, 'number');
  t.not(config.metrics.port, config.server.port);
});
