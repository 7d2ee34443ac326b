import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, routeNameFromPath, DEFAULT_API_BASE, DEFAULT_OAUTH_BASE, DEFAULT_MP_BASE, type Config } from './schema.js';

/** Every problem found in a configuration, each naming the key and why; thrown once. */
export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type Path = ReadonlyArray<PropertyKey>;

export function formatPath(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(top level)';
}

const ENV_REF = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${NAME}` in every string value with the environment variable NAME, `${NAME:-default}` with
 * NAME or, when it is unset or empty, `default` (`$$` is a literal `$`).
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, problems: string[], path: (string | number)[] = []): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (whole, name: string | undefined, fallback: string | undefined) => {
      if (name === undefined) return '$';
      const v = env[name];
      if (v === undefined || v === '') {
        if (fallback !== undefined) return fallback;
        problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
        return '';
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, problems, [...path, i]));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, problems, [...path, k]);
    return out;
  }
  return value;
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function formatIssue(issue: z.core.$ZodIssue, input: unknown): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => `${formatPath([...issue.path, k])}: unknown key`);
  }
  if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) {
    return [`${formatPath(issue.path)}: is required`];
  }
  if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input')) {
    return [`${formatPath(issue.path)}: must be of type ${issue.expected}`];
  }
  return [`${formatPath(issue.path)}: ${issue.message}`];
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Validates an already-parsed configuration object (YAML or JS), substituting `${ENV}`; throws ConfigError. */
export function buildConfig(raw: unknown, source = 'configuration', env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const substituted = substituteEnv(raw ?? {}, env, problems);
  const result = configSchema.safeParse(substituted);
  if (!result.success) problems.push(...result.error.issues.flatMap((i) => formatIssue(i, substituted)));
  if (problems.length || !result.success) throw new ConfigError(source, problems);
  const parsed = result.data;
  const config: Config = {
    ...parsed,
    wechat: {
      ...parsed.wechat,
      apiBase: (parsed.wechat.apiBase ?? DEFAULT_API_BASE).replace(/\/+$/, ''),
      oauthBase: (parsed.wechat.oauthBase ?? DEFAULT_OAUTH_BASE).replace(/\/+$/, ''),
      mpBase: (parsed.wechat.mpBase ?? DEFAULT_MP_BASE).replace(/\/+$/, ''),
    },
    routes: parsed.routes.map((r) => {
      // one URL or a list: `upstreams` is always the list, `upstream` its first (what one-target code reads)
      const upstreams = (typeof r.upstream === 'string' ? [r.upstream] : r.upstream).map((u) => u.replace(/\/+$/, ''));
      return { ...r, name: r.name ?? routeNameFromPath(r.path), upstream: upstreams[0]!, upstreams };
    }),
  };
  return deepFreeze(config);
}

/** Parses YAML text, reporting syntax errors and duplicate keys with their line. */
export function parseYaml(text: string, source: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => `line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`),
    );
  }
  return doc.toJS();
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return buildConfig(parseYaml(text, file), file, env);
}
