import v8 from 'node:v8';

/**
 * V8 settings of the gateway process, set before any other module of it runs (cli.ts imports this
 * module first).
 *
 * No allocation-site pretenuring. When a GC finds nearly every object of an allocation site alive — as
 * it does for per-request objects while a burst of requests is in flight (a login burst at start, a
 * slow upstream) — V8 decides to allocate that site's objects in the old generation from then on, and
 * no longer sees them die young. Each dead request object there keeps the young objects it points to
 * alive through every scavenge until the next full GC: ~2 MB promoted per scavenge instead of ~0.1 MB,
 * scavenges 5-10x longer, a full GC every few seconds, more CPU per request and longer tails, for the
 * life of the process. BENCHMARKS.md, "The warm-path regression: V8's pretenuring"; `npm run
 * bench:pretenuring` shows it. The gateway's long-lived objects (cached sessions, pools) are not
 * numerous enough to miss it. WXGATE_V8_PRETENURING=1 keeps V8's default (for that comparison).
 */
if (process.env.WXGATE_V8_PRETENURING !== '1') v8.setFlagsFromString('--no-allocation-site-pretenuring');
