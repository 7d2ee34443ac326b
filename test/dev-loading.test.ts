import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import test from 'ava';
import { simulatedOpenid } from '../src/dev/simulator.js';
import { ROOT, runCli, spawnGateway, testConfig } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';

/**
 * The dev tools (src/dev/: the WeChat simulator, the example upstream) are loaded only when the config
 * asks for them: a production process never has their code in memory. The built CLI runs with a module
 * hook (node's module.register) that writes down every module it loads; the run with the dev settings on
 * is the control, showing the hook does see src/dev/ when it is loaded.
 */

/** node options that make the process append the URL of every module it loads to `file`. */
function traceLoads(file: string): string[] {
  const hooks = `import { appendFileSync } from 'node:fs';
let file;
export function initialize(data) { file = data.file; }
export async function load(url, context, next) { appendFileSync(file, url + '\\n'); return next(url, context); }`;
  const entry = `import { register } from 'node:module';
register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)}, { data: { file: ${JSON.stringify(file)} } });`;
  return ['--import', `data:text/javascript,${encodeURIComponent(entry)}`];
}

/** The modules of dist/ the gateway process loaded, running on `raw`, up to the moment it listens. */
async function loadedModules(raw: Record<string, unknown>): Promise<string[]> {
  const file = join(mkdtempSync(join(tmpdir(), 'wxgate-loads-')), 'loads.txt');
  writeFileSync(file, '');
  const gw = await spawnGateway(raw, {}, traceLoads(file));
  await gw.stop();
  const root = pathToFileURL(ROOT).href.replace(/\/?$/, '/');
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((url) => url.startsWith(`${root}dist/`))
    .map((url) => url.slice(root.length));
}

test('a production config (no dev section) never loads src/dev/: neither the simulator nor the example upstream', async (t) => {
  const loaded = await loadedModules(testConfig({ apiBase: 'http://127.0.0.1:9', routes: [{ path: '/api', upstream: 'http://127.0.0.1:9' }] }));
  t.true(loaded.includes('dist/cli.js') && loaded.includes('dist/main.js'), `the hook saw the gateway's modules: ${loaded.join(' ')}`);
  // (by name too: before it moved to src/dev/, the simulator lived in src/wechat/)
  t.deepEqual(loaded.filter((m) => m.startsWith('dist/dev/') || m.includes('simulator')), []);
});

test('control: with dev.simulator and dev.exampleUpstream the same hook sees both loaded', async (t) => {
  const [simulatorPort, exampleUpstreamPort] = [await freePort(), await freePort()];
  const raw = testConfig({ apiBase: 'unused', dev: { simulator: true, simulatorPort, exampleUpstream: true, exampleUpstreamPort } });
  delete (raw.wechat as { apiBase?: string }).apiBase;
  const loaded = await loadedModules(raw);
  t.true(loaded.includes('dist/dev/simulator.js'), loaded.join(' '));
  t.true(loaded.includes('dist/dev/example-upstream.js'), loaded.join(' '));
});

test('`wxgate simulate` loads the simulator on demand and answers like WeChat', async (t) => {
  const child = runCli(['simulate', '--port', String(await freePort())]);
  t.teardown(() => void child.kill());
  const url = await new Promise<string>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /listening at (\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${err}`)));
  });
  const res = await fetch(`${url}/sns/jscode2session?appid=wxa&secret=s&js_code=alice.1&grant_type=authorization_code`);
  t.is(((await res.json()) as { openid?: string }).openid, simulatedOpenid('wxa', 'alice'));
});
