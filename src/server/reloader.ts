import type https from 'node:https';
import type { Logger } from '../base/logger.js';
import { ConfigError, loadConfigFile } from '../config/load.js';
import { restartOnlyChanges } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import { loadTlsFiles, type TlsFiles } from './tls.js';

/** A running gateway's reload: the file read and checked again, then swapped in whole (or refused, logged). */

export type ReloadResult = { ok: true; changed: boolean } | { ok: false; error: string };

export interface ReloaderOptions {
  /** the configuration file; without one only a given configuration reloads */
  file?: string;
  metrics: Metrics;
  log: Logger;
  /** the configuration in force */
  live(): Config;
  /** swaps the request path (and the limits) over to `next`, which differs from live() */
  apply(next: Config): void;
  /** the main listener under server.tls: a renewed certificate is read again at every reload */
  tlsServer?: https.Server;
}

/** Records a configuration taken (at the start, or by a reload) in the reload metrics. */
export function markLoaded(metrics: Metrics): void {
  metrics.configReloadSuccess.set(1);
  metrics.configReloadTimestamp.set(Date.now() / 1000);
}

/**
 * The reload: loads the file again (or takes `given`, a worker's configuration from its primary); refuses
 * it, keeping the old one, when it does not load, changes what only a restart may, or carries a
 * certificate that does not load; else applies it when it changed.
 */
export function createReloader(opts: ReloaderOptions): (given?: Config) => Promise<ReloadResult> {
  const { file, metrics, log } = opts;
  const fail = (error: string): ReloadResult => {
    metrics.configReloadSuccess.set(0);
    log.error({ file, problems: error.split('\n') }, 'config reload rejected; the previous configuration keeps serving');
    return { ok: false, error };
  };
  return async (given?: Config) => {
    if (!file && !given) return fail('no configuration file to reload (the gateway was started from an object)');
    let next: Config;
    try {
      next = given ?? loadConfigFile(file!);
    } catch (err) {
      return fail(err instanceof ConfigError ? err.message : (err as Error).message);
    }
    const live = opts.live();
    const fixed = restartOnlyChanges(live, next);
    if (fixed.length) return fail(`these settings cannot change while the gateway runs (restart to apply them): ${fixed.join(', ')}`);
    // a renewed certificate: read again at every reload, refused (the old one kept) when it does not load
    let renewed: TlsFiles | undefined;
    if (next.server.tls) {
      try {
        renewed = loadTlsFiles(next.server.tls);
      } catch (err) {
        return fail((err as Error).message);
      }
    }
    const changed = JSON.stringify(next) !== JSON.stringify(live);
    if (changed) opts.apply(next);
    if (renewed) opts.tlsServer?.setSecureContext(renewed);
    markLoaded(metrics);
    log.info({ file, changed, routes: next.routes.length, ...(renewed ? { tls: 'certificate read again' } : {}) }, changed ? 'config reloaded' : 'config reloaded (no change)');
    return { ok: true, changed };
  };
}
