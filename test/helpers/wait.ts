/**
 * Waiting in tests. `waitFor` polls an observable condition until it holds, so a test waits exactly
 * as long as the thing takes and a loaded machine only makes it slower, never red. `within` bounds a
 * promise. `sleep` is only for letting real time pass on purpose (a Redis TTL, "nothing happens
 * within"): every call says why.
 */

export interface WaitOptions {
  /** give up after this many ms (default 5000: generous, a condition that holds returns at once) */
  timeout?: number;
  /** poll every this many ms (default 20) */
  interval?: number;
  /** what was awaited, for the error */
  message?: string;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/**
 * Resolves with the condition's first truthy result; rejects once `timeout` passed without one (the
 * last error the condition threw, if any, is named). The condition may be async.
 */
export async function waitFor<T>(condition: () => T | Promise<T>, opts: WaitOptions = {}): Promise<Exclude<T, false | 0 | '' | null | undefined>> {
  const { timeout = 5000, interval = 20, message = 'condition' } = opts;
  const deadline = performance.now() + timeout; // not Date.now(): a test may fake the date
  let lastError: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v as Exclude<T, false | 0 | '' | null | undefined>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (performance.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`${message}: not within ${timeout} ms${why}`);
    }
    await sleep(interval);
  }
}

/** Resolves or rejects as `p` does, or rejects once `ms` passed. */
export function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
