import type { z } from 'zod';

/** Records a problem at `path` (below the checked value) with its message. */
export type Report = (path: (string | number)[], message: string) => void;

/**
 * Adds a check spanning several keys of `schema`. It runs even when some of those keys are invalid, so
 * its problems are listed together with the schema's: the value is the one parsed so far (defaults
 * filled in, invalid values as written), hence `unknown`, read through obj() and list().
 */
export function withCheck<T extends z.ZodType>(schema: T, check: (value: unknown, report: Report) => void): T {
  return schema.superRefine((value, ctx) => check(value, (path, message) => ctx.addIssue({ code: 'custom', path, message })), { when: () => true });
}

export const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** `v` if it is an object, else an empty one. */
export const obj = (v: unknown): Record<string, unknown> => (isObj(v) ? v : {});

/** `v` if it is an array, else an empty one. */
export const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
