import type { z } from 'zod';

/**
 * Which keys a reload may change, marked on the schema itself (zod metadata, so z.toJSONSchema shows
 * the mark as "x-reload"): `true`, the key may change; `"while-set"`, it may change while it stays set,
 * but setting or removing it needs a restart. Unmarked keys are built once at start.
 */
export const RELOAD = 'x-reload';
export type ReloadMark = true | 'while-set';

export function live<T extends z.ZodType>(schema: T, mark: ReloadMark = true): T {
  return schema.meta({ [RELOAD]: mark });
}

type Def = { type: string; innerType?: Node; in?: Node; shape?: Record<string, Node> };
type Node = z.ZodType & { _zod: { def: Def } };
const WRAPPERS = new Set(['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch']);

/** The key's mark, found on it or on any wrapper of it (`.optional()`, `.default()`, …). */
export function reloadMark(schema: z.ZodType | undefined): ReloadMark | undefined {
  for (let s = schema as Node | undefined; s; s = unwrap(s)) {
    const mark = s.meta()?.[RELOAD];
    if (mark === true || mark === 'while-set') return mark;
  }
  return undefined;
}

/** The keys of an object schema (through its wrappers), or undefined for other schemas. */
export function objectShape(schema: z.ZodType | undefined): Record<string, z.ZodType> | undefined {
  let s = schema as Node | undefined;
  while (s && s._zod.def.type !== 'object') s = unwrap(s);
  return s?._zod.def.shape;
}

function unwrap(s: Node): Node | undefined {
  const def = s._zod.def;
  return WRAPPERS.has(def.type) ? def.innerType : def.type === 'pipe' ? def.in : undefined;
}

/** Every marked key below `schema`, as dotted paths ("routes", "server.trustedProxies"). */
export function liveKeys(schema: z.ZodType, prefix = ''): string[] {
  const shape = objectShape(schema);
  if (!shape) return [];
  return Object.entries(shape).flatMap(([k, sub]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return reloadMark(sub) ? [path] : liveKeys(sub, path);
  });
}
