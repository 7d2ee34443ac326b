#!/usr/bin/env node
// first: V8 settings that must be in place before any other module runs
import './v8-flags.js';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { explainRoute, maskSecrets } from './config/inspect.js';
import { ConfigError, loadConfigFile } from './config/load.js';
import { isWorker, runPrimary, runWorker, workerCount } from './cluster.js';
import { ListenError, startGateway } from './main.js';
import { createLogger } from './server/logger.js';
import { startSimulator } from './wechat/simulator.js';

const USAGE = `Usage:
  wxgate [--config FILE]           run the gateway (FILE defaults to $WXGATE_CONFIG or ./gateway.yaml)
  wxgate check-config FILE         validate a configuration, print it as loaded (secrets masked), exit 0 if valid
  wxgate check-route FILE METHOD PATH
                                   which route, upstream and auth rule a request would get
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
    process.stdout.write(`# ${file}: valid (${config.routes.length} routes, ${config.session.store} session store); as loaded, secrets masked:\n`);
    process.stdout.write(stringify(maskSecrets(config)));
    return 0;
  }
  if (command === 'check-route') {
    const [file, method, target] = rest;
    if (!file || !method || !target) {
      process.stderr.write(`wxgate: check-route needs FILE METHOD PATH\n${USAGE}\n`);
      return 2;
    }
    process.stdout.write(`${explainRoute(loadConfigFile(file), method, target)}\n`);
    return 0;
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
  const config = loadConfigFile(file);
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
    gw.log.info({ signal, deadline_ms: gw.config.server.shutdownTimeout }, 'shutting down: draining in-flight requests');
    gw.close().then(
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
      // startGateway closed what it had opened, so the process ends by itself; should anything have been
      // left open, it must not keep running half started
      setTimeout(() => {
        process.stderr.write('wxgate: something was left open after the failed start; exiting anyway\n');
        process.exit(1);
      }, 5000).unref();
    }
  },
);
