#!/usr/bin/env node
// first: V8 settings that must be in place before any other module runs
import './v8-flags.js';
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { runPrimary, workerCount } from './cluster.js';
import { isWorker, runWorker, workerConfig } from './cluster-worker.js';
import { CHECK_ROUTE_EXIT, effectiveConfigFile, explainRoute } from './inspect.js';
import { ConfigError, loadConfigFile, parseYaml } from './config/load.js';
import { configSchema } from './config/schema.js';
import { ListenError, startGateway } from './main.js';
import { createLogger } from './base/logger.js';

const USAGE = `Usage:
  wxgate [--config FILE]           run the gateway (FILE defaults to $WXGATE_CONFIG or ./gateway.yaml)
  wxgate check-config FILE         validate a configuration; print it with the defaults filled in, as a file
                                   check-config accepts again (secrets as \${ENV} references); exit 0 if valid
  wxgate check-route FILE [METHOD] PATH [--method METHOD]
                                   what METHOD (default GET) PATH would get; exit 0 proxied to a route,
                                   3 answered by the gateway itself, 4 no route (404), 5 method not allowed
                                   (405), 6 refused (400 bad_path); 1 invalid configuration, 2 usage
  wxgate simulate [--port N]       run the WeChat API simulator (development only)
  wxgate --help`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      port: { type: 'string', short: 'p' },
      host: { type: 'string' },
      method: { type: 'string', short: 'X' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const [command, ...rest] = positionals;

  if (command === 'simulate') {
    const port = Number(values.port ?? 9100);
    const { startSimulator } = await import('./dev/simulator.js');
    const sim = await startSimulator(port, values.host ?? '127.0.0.1');
    process.stderr.write(`WeChat API simulator (development only) listening at ${sim.url}\n`);
    const stop = () => void sim.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    return -1;
  }

  if (command === 'check-config') {
    const file = rest[0] ?? values.config;
    if (!file) throw new ConfigError('(none)', ['check-config needs a FILE']);
    const config = loadConfigFile(file);
    // printed from the file as written (defaults added), so that it loads again to the same configuration
    const { config: effective, moved } = effectiveConfigFile(configSchema, parseYaml(readFileSync(file, 'utf8'), file));
    process.stdout.write(`# ${file}: valid (${config.routes.length} routes, ${config.session.store} session store); with the defaults filled in:\n`);
    for (const m of moved) process.stdout.write(`# ${m.key} is written in the file: shown as \${${m.env}} (keep secrets in the environment)\n`);
    process.stdout.write(stringify(effective));
    return 0;
  }
  if (command === 'check-route') {
    // check-route FILE METHOD PATH, or check-route FILE PATH [--method METHOD]
    const [file, ...args] = rest;
    const [method, target] = args.length === 2 ? [args[0], args[1]] : [values.method ?? 'GET', args[0]];
    if (!file || !target || !method || args.length > 2 || (args.length === 2 && values.method && values.method.toUpperCase() !== method.toUpperCase())) {
      process.stderr.write(`wxgate: check-route needs FILE [METHOD] PATH (or --method METHOD, not both)\n${USAGE}\n`);
      return 2;
    }
    const { outcome, text } = explainRoute(loadConfigFile(file), method, target);
    process.stdout.write(`${text}\n`);
    return CHECK_ROUTE_EXIT[outcome];
  }
  if (command !== undefined) {
    process.stderr.write(`wxgate: unknown command "${command}"\n${USAGE}\n`);
    return 2;
  }

  const file = values.config ?? process.env.WXGATE_CONFIG ?? 'gateway.yaml';
  if (!values.config && !process.env.WXGATE_CONFIG && !existsSync(file)) {
    process.stderr.write(`wxgate: no configuration: pass --config FILE (or set WXGATE_CONFIG)\n${USAGE}\n`);
    return 2;
  }
  // a worker runs the configuration its primary checked (src/cluster.ts), not whatever the file says now
  const config = isWorker() ? await workerConfig(file) : loadConfigFile(file);
  const log = createLogger(config.log.level);
  const watch = process.env.WXGATE_WATCH !== '0';
  const keepServing = () => {
    process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (the gateway keeps serving)'));
    process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (the gateway keeps serving)'));
  };
  // server.workers > 1: this process forks the workers and watches over them (src/cluster.ts)
  if (!isWorker() && workerCount(config) > 1) {
    const primary = await runPrimary(config, file, log, { watch });
    process.once('SIGTERM', () => primary.stop('SIGTERM'));
    process.once('SIGINT', () => primary.stop('SIGINT'));
    keepServing();
    return -1;
  }
  // the file is watched and reloaded when it changes (WXGATE_WATCH=0 turns that off); SIGHUP reloads too
  // (a worker's primary does both for it)
  const gw = isWorker() ? await runWorker(config, file, log) : await startGateway(config, { log, configFile: file, watch });
  if (!isWorker()) process.on('SIGHUP', () => void gw.reload());

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // close() stops accepting before its first await: logged after it, the line means no new connection
    // gets in (logged before, a process descheduled between the two still accepted a connection)
    const closed = gw.close();
    gw.log.info({ signal, deadline_ms: gw.config.server.shutdownTimeout }, 'shutting down: draining in-flight requests');
    closed.then(
      () => {
        gw.log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        gw.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  keepServing();
  return -1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`wxgate: ${err.message}\n`);
      process.exitCode = 1;
    } else if ((err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`wxgate: ${(err as Error).message}\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      // a listener that cannot open names itself ("cannot listen for metrics on 127.0.0.1:9100: ...")
      process.stderr.write(err instanceof ListenError ? `wxgate: ${err.message}\n` : `wxgate: failed to start: ${(err as Error).message}\n`);
      process.exitCode = 1;
      // a worker's channel to its primary would keep it alive: it has nothing more to do
      if (isWorker()) process.exit(1);
      // startGateway closed what it had opened, so the process ends by itself; should anything have been
      // left open, it must not keep running half started
      setTimeout(() => {
        process.stderr.write('wxgate: something was left open after the failed start; exiting anyway\n');
        process.exit(1);
      }, 5000).unref();
    }
  },
);
