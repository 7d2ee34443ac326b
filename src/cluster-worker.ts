import cluster from 'node:cluster';
import type http from 'node:http';
import type { Logger } from './base/logger.js';
import type { Config } from './config/schema.js';
import { configFromText, isMessage, METRICS_TIMEOUT_MS, type Message } from './cluster-messages.js';
import { startGateway, type Gateway } from './main.js';

/** server.workers > 1: a worker of the primary in cluster.ts (its configuration, its gateway, its messages). */

export const isWorker = () => cluster.isWorker;

/** A worker's configuration: the file's text its primary accepted last (parsed here, with this environment). */
export function workerConfig(file: string): Promise<Config> {
  return new Promise<Config>((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off('message', take);
      reject(new Error('the primary did not send the configuration'));
    }, 10_000);
    const take = (m: unknown) => {
      if (!isMessage(m) || m.type !== 'wxgate:config') return;
      clearTimeout(timer);
      process.off('message', take);
      try {
        resolve(configFromText(m.text, file));
      } catch (err) {
        reject(err as Error);
      }
    };
    process.on('message', take);
    process.send!({ type: 'wxgate:config-req' } satisfies Message);
  });
}

/**
 * A worker: the whole gateway, on the listeners the primary shares; worker 1 also opens the admin API.
 * Reloads when the primary says so, and answers its requests for metrics.
 */
export async function runWorker(config: Config, file: string, log: Logger): Promise<Gateway> {
  const slot = Number(process.env.WXGATE_WORKER ?? cluster.worker?.id ?? 0);
  const wlog = log.child({ worker: slot });
  const gw = await startGateway(config, { log: wlog, configFile: file, watch: false, worker: slot, listeners: { metrics: false, admin: slot === 1 } });
  // tests tell the workers apart by these (a header on every answer; never set in production)
  if (process.env.WXGATE_TEST_WORKER_HEADER === '1') {
    gw.server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.setHeader('x-wxgate-worker', String(slot));
      res.setHeader('x-wxgate-worker-pid', String(process.pid));
    });
  }
  // /metrics on the main listener (no metrics.port): the whole process, from the primary
  let nextId = 0;
  const waiting = new Map<number, { resolve: (t: string) => void; reject: (e: Error) => void }>();
  gw.metrics.registry.metrics = () =>
    new Promise<string>((resolve, reject) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error('the primary did not answer for metrics'));
      }, METRICS_TIMEOUT_MS + 1000);
      waiting.set(id, {
        resolve: (t) => (clearTimeout(timer), resolve(t)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      process.send!({ type: 'wxgate:metrics', id } satisfies Message);
    });
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    if (m.type === 'wxgate:reload') {
      let next: Config;
      try {
        next = configFromText(m.text, file);
      } catch (err) {
        // the primary took this text; only a different environment could make it fail here
        wlog.error({ problems: (err as Error).message.split('\n') }, 'config reload rejected by this worker; the previous configuration keeps serving');
        return;
      }
      void gw.reload(next);
    }
    else if (m.type === 'wxgate:metrics-json') {
      void gw.metrics.registry.getMetricsAsJSON().then((metrics) => process.send?.({ type: 'wxgate:metrics-json-res', id: m.id, metrics } satisfies Message));
    } else if (m.type === 'wxgate:metrics-res') {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.text !== undefined) w?.resolve(m.text);
      else w?.reject(new Error(m.error ?? 'no metrics'));
    }
  });
  // a reload comes from the primary, which checked the file first; SIGHUP to the whole process group
  // (a terminal's hangup) must not end the worker, nor reload it twice
  process.on('SIGHUP', () => {});
  process.send!({ type: 'wxgate:ready', url: gw.url, ...(gw.adminUrl ? { adminUrl: gw.adminUrl } : {}) } satisfies Message);
  return gw;
}
