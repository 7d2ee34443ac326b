// Preloaded into a gateway by bench/pretenuring.ts (node --expose-gc --require): SIGUSR2 runs a full GC,
// as one that happens to fall in a burst of requests in flight.
process.on('SIGUSR2', () => globalThis.gc());
