import FakeTimers from '@sinonjs/fake-timers';

/**
 * A fake date for code that reads the time as Date.now() (the memory stores, ticket deadlines): only
 * Date is faked, timers and sockets stay real, so a gateway in this process keeps serving while
 * `pass(ms)` moves its clock. The whole process sees it: use it in serial tests, and `restore()`.
 */
export interface FakeDate {
  pass(ms: number): void;
  restore(): void;
}

export function fakeDate(): FakeDate {
  const clock = FakeTimers.install({ toFake: ['Date'], now: Date.now() });
  return { pass: (ms) => clock.tick(ms), restore: () => clock.uninstall() };
}
