import cluster, { type Worker } from 'node:cluster';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { readFileSync } from 'node:fs';
import { configFromText, isMessage, METRICS_TIMEOUT_MS, type Message, type MetricJSON } from './cluster-messages.js';
import { ConfigError } from './config/load.js';
import { restartOnlyChanges, watchConfigFile } from './config/reload.js';
import type { Config } from './config/schema.js';
import { createMetricsServer, listen, urlOf } from './server/listeners.js';
import type { Logger } from './base/logger.js';

/**
 * server.workers > 1: the CLI's process becomes a primary that forks that many workers (node:cluster;
 * the primary accepts the connections of the main listener and hands them to the workers in turn).
 * Each worker is a whole gateway with its own session LRU, kept coherent as replicas are (Redis pub/sub;
 * a reconnect drops the cache), which is why the memory store is refused with more than one worker.
 *
 * - The primary serves metrics.port itself: the workers' registries, aggregated (prom-client's
 *   AggregatorRegistry: counters and histograms summed, gauges by their `aggregator`), plus its own
 *   wxgate_worker_* series. Without metrics.port, /metrics on the main listener shows the same: the
 *   worker that gets the request asks the primary.
 * - Worker 1 opens the admin API (a single listener; a replacement worker 1 opens it again).
 * - A worker that dies is replaced (waits doubling from 100 ms up to 10 s while it keeps dying young),
 *   counted in wxgate_worker_restarts_total and logged. A worker that exits before it was ready, at start,
 *   fails the start: the primary stops the others and exits 1 (a taken port fails every worker alike).
 * - SIGHUP (and the file watcher, which only the primary runs): the primary loads and checks the file
 *   first; a rejected file is logged once and no worker is asked; an accepted one is reloaded by every
 *   worker. Workers take the configuration from the primary (the text of the file it accepted last),
 *   never from the file itself: a worker started later (a replacement) runs what the others run, even
 *   while the file on disk is one the primary rejected.
 * - SIGTERM / SIGINT: every worker drains (server.shutdownTimeout), then the primary exits.
 */

/** Sends to a worker unless its channel is gone (it is exiting: its 'exit' event deals with it). */
function tell(w: Worker, m: Message): void {
  try {
    if (w.isConnected()) w.send(m);
  } catch {
    // closed meanwhile
  }
}

/** server.workers as a number: "auto" is the cores this process may use. */
export function workerCount(config: Config): number {
  const w = config.server.workers;
  return w === 'auto' ? availableParallelism() : w;
}

const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that lived this long is not dying young: its replacement starts at once. */
const HEALTHY_MS = 10_000;

/**
 * The primary. Resolves once every worker is listening (the log says "wxgate listening" then); rejects
 * when the start fails (a worker that exits while starting, the metrics port taken).
 */
export async function runPrimary(config: Config, file: string, log: Logger, opts: { watch: boolean }): Promise<{ stop(signal: string): void }> {
  const count = workerCount(config);
  // what the workers are given: the file as the primary read (and checked) it
  const read = (): { text: string; config: Config } => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(file, [`cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
    }
    return { text, config: configFromText(text, file) };
  };
  let { text: liveText, config: live } = read();
  const registry = new Registry();
  const restarts = new Counter({ name: 'wxgate_worker_restarts_total', help: 'Workers (server.workers) that died and were replaced by the primary.', registers: [registry] });
  const running = new Gauge({ name: 'wxgate_workers', help: 'Workers (server.workers) running now.', registers: [registry] });
  // the primary's view of the last reload: a file it rejected never reached the workers (min with theirs)
  const reloadOk = new Gauge({ name: 'wxgate_config_last_reload_success', help: 'Whether the last configuration (re)load succeeded (1) or was rejected (0, the previous configuration keeps serving).', aggregator: 'min', registers: [registry] });
  reloadOk.set(1);

  const slots = new Map<number, Worker>();
  const slotOf = new Map<Worker, number>();
  const ready = new Set<number>();
  const bornAt = new Map<number, number>();
  const failures = new Map<number, number>();
  const pending = new Map<number, { responses: MetricJSON[][]; waiting: Set<Worker>; done: () => void }>();
  let nextId = 0;
  let started = false;
  let stopping = false;
  let url = '';
  let adminUrl: string | undefined;

  /** Every connected worker's registry (as JSON) and the primary's own, aggregated into one exposition. */
  const aggregated = async (): Promise<string> => {
    const id = ++nextId;
    const workers = [...slots.values()].filter((w) => w.isConnected());
    const responses: MetricJSON[][] = [];
    await new Promise<void>((resolve) => {
      const waiting = new Set(workers);
      const timer = setTimeout(() => {
        if (waiting.size) log.warn({ missing: [...waiting].map((w) => slotOf.get(w)) }, 'metrics: some workers did not answer in time; aggregated without them');
        pending.delete(id);
        resolve();
      }, METRICS_TIMEOUT_MS);
      pending.set(id, {
        responses,
        waiting,
        done: () => {
          clearTimeout(timer);
          pending.delete(id);
          resolve();
        },
      });
      if (waiting.size === 0) pending.get(id)!.done();
      for (const w of workers) tell(w, { type: 'wxgate:metrics-json', id });
    });
    responses.push(await registry.getMetricsAsJSON());
    return AggregatorRegistry.aggregate(responses).metrics();
  };

  let metricsServer: http.Server | undefined;
  let metricsUrl: string | undefined;
  if (config.metrics.enabled && config.metrics.port !== undefined) {
    metricsServer = createMetricsServer(config.metrics.path, aggregated, registry.contentType);
    const { host, port } = config.metrics;
    metricsUrl = urlOf(host, await listen(metricsServer, port, host, { listener: 'metrics', key: 'metrics.port' }));
  }

  let startFailed: ((err: Error) => void) | undefined;
  let startDone: (() => void) | undefined;
  const whenStarted = new Promise<void>((resolve, reject) => {
    startDone = resolve;
    startFailed = reject;
  });

  const fork = (slot: number) => {
    const w = cluster.fork({ WXGATE_WORKER: String(slot) });
    slots.set(slot, w);
    slotOf.set(w, slot);
    bornAt.set(slot, Date.now());
    running.set(slots.size);
    w.on('message', (m: unknown) => onMessage(w, slot, m));
  };

  const onMessage = (w: Worker, slot: number, m: unknown) => {
    if (!isMessage(m)) return;
    if (m.type === 'wxgate:config-req') {
      tell(w, { type: 'wxgate:config', text: liveText });
    } else if (m.type === 'wxgate:ready') {
      ready.add(slot);
      url = m.url;
      if (m.adminUrl) adminUrl = m.adminUrl;
      if (!started && ready.size === count) {
        started = true;
        startDone?.();
      }
    } else if (m.type === 'wxgate:metrics-json-res') {
      const p = pending.get(m.id);
      if (!p || !p.waiting.delete(w)) return;
      p.responses.push(m.metrics);
      if (p.waiting.size === 0) p.done();
    } else if (m.type === 'wxgate:metrics') {
      aggregated().then(
        (text) => tell(w, { type: 'wxgate:metrics-res', id: m.id, text }),
        (err: Error) => tell(w, { type: 'wxgate:metrics-res', id: m.id, error: err.message }),
      );
    }
  };

  let exited: (() => void) | undefined;
  cluster.on('exit', (w, code, signal) => {
    const slot = slotOf.get(w);
    if (slot === undefined) return;
    slotOf.delete(w);
    if (slots.get(slot) === w) slots.delete(slot);
    ready.delete(slot);
    running.set(slots.size);
    for (const p of pending.values()) if (p.waiting.delete(w) && p.waiting.size === 0) p.done();
    if (stopping) {
      if (slots.size === 0) exited?.();
      return;
    }
    if (!started) {
      startFailed?.(new Error(`worker ${slot} exited (${signal ?? `code ${code}`}) while starting`));
      return;
    }
    const lived = Date.now() - (bornAt.get(slot) ?? 0);
    const n = lived >= HEALTHY_MS ? 0 : (failures.get(slot) ?? 0) + 1;
    failures.set(slot, n);
    const delay = n === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (n - 1));
    restarts.inc();
    log.error({ worker: slot, pid: w.process.pid, code, signal, lived_ms: lived, restart_in_ms: delay }, 'worker died; starting a new one');
    setTimeout(() => {
      if (!stopping) fork(slot);
    }, delay).unref();
  });

  const stopAll = (signal: NodeJS.Signals, deadline: number): Promise<void> =>
    new Promise<void>((resolve) => {
      exited = resolve;
      if (slots.size === 0) return resolve();
      for (const w of slots.values()) w.process.kill(signal);
      const timer = setTimeout(() => {
        for (const w of slots.values()) w.process.kill('SIGKILL');
      }, deadline);
      timer.unref();
    });

  for (let slot = 1; slot <= count; slot++) fork(slot);
  try {
    await whenStarted;
  } catch (err) {
    stopping = true;
    await stopAll('SIGTERM', 2000);
    await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
    throw err;
  }
  log.info({ url, workers: count, admin: adminUrl ?? 'off', metrics: metricsUrl ?? (config.metrics.enabled ? `${url}${config.metrics.path}` : 'off'), pid: process.pid }, 'wxgate listening');

  const reload = () => {
    let next: Config;
    let text: string;
    try {
      ({ text, config: next } = read());
    } catch (err) {
      reloadOk.set(0);
      const error = err instanceof ConfigError ? err.message : (err as Error).message;
      log.error({ file, problems: error.split('\n') }, 'config reload rejected; the previous configuration keeps serving');
      return;
    }
    const fixed = restartOnlyChanges(live, next);
    if (fixed.length) {
      reloadOk.set(0);
      log.error({ file, problems: [`these settings cannot change while the gateway runs (restart to apply them): ${fixed.join(', ')}`] }, 'config reload rejected; the previous configuration keeps serving');
      return;
    }
    live = next;
    liveText = text;
    reloadOk.set(1);
    log.info({ file, workers: slots.size }, 'config accepted; every worker reloads it');
    for (const w of slots.values()) tell(w, { type: 'wxgate:reload', text });
  };
  process.on('SIGHUP', reload);
  const watcher = opts.watch ? watchConfigFile(file, reload) : undefined;

  return {
    stop(signal: string) {
      if (stopping) return;
      stopping = true;
      watcher?.close();
      log.info({ signal, workers: slots.size, deadline_ms: live.server.shutdownTimeout }, 'shutting down: every worker drains');
      // each worker drains within shutdownTimeout; one that does not exit a second after it is killed
      void stopAll('SIGTERM', live.server.shutdownTimeout + 1000).then(() => {
        const done = () => {
          log.info('stopped');
          process.exit(0);
        };
        if (metricsServer) metricsServer.close(done);
        else done();
        metricsServer?.closeAllConnections();
      });
    },
  };
}
