import test from 'ava';
import { Counter, Histogram, Registry } from 'prom-client';
import { counterSeries, histogramSeries } from '../src/metrics/series.js';

/**
 * src/metrics/series.ts adds to prom-client's own series objects: the exposition must be exactly what
 * prom-client's inc() and observe() give for the same values (an upgrade of prom-client that changes
 * its internals fails here, not in production).
 */

function pair() {
  const make = () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'c_total', help: 'c', labelNames: ['route', 'status'] as const, registers: [registry] });
    const histogram = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['route'] as const, buckets: [0.001, 0.01, 0.1, 1], registers: [registry] });
    return { registry, counter, histogram };
  };
  return { ours: make(), theirs: make() };
}

test('counter and histogram series render exactly as prom-client would have for the same increments and observations', async (t) => {
  const { ours, theirs } = pair();
  const values = [0, 0.0005, 0.001, 0.004, 0.01, 0.05, 0.5, 1, 3, 12, 0.00099];
  const okA = counterSeries(ours.counter, { route: 'a', status: '200' });
  const errA = counterSeries(ours.counter, { route: 'a', status: '502' });
  const hA = histogramSeries(ours.histogram, { route: 'a' });
  const hB = histogramSeries(ours.histogram, { route: 'b' });
  // the same series, in the same order, on prom-client's side (the exposition lists series as made)
  theirs.counter.inc({ route: 'a', status: '200' }, 0);
  theirs.counter.inc({ route: 'a', status: '502' }, 0);
  theirs.histogram.zero({ route: 'a' });
  theirs.histogram.zero({ route: 'b' });
  values.forEach((v, i) => {
    (i % 3 ? okA : errA).inc();
    theirs.counter.inc({ route: 'a', status: i % 3 ? '200' : '502' });
    hA.observe(v);
    theirs.histogram.observe({ route: 'a' }, v);
    if (i % 2) {
      hB.observe(v * 2);
      theirs.histogram.observe({ route: 'b' }, v * 2);
    }
  });
  t.is(await ours.registry.metrics(), await theirs.registry.metrics());
  t.regex(await ours.registry.metrics(), /h_seconds_bucket\{le="0.01",route="a"\} 6/);
});

test('a series taken twice (two recorders, a reload) is one series: nothing counted before is reset', async (t) => {
  const { ours } = pair();
  histogramSeries(ours.histogram, { route: 'a' }).observe(0.5);
  counterSeries(ours.counter, { route: 'a', status: '200' }).inc();
  histogramSeries(ours.histogram, { route: 'a' }).observe(0.5);
  counterSeries(ours.counter, { route: 'a', status: '200' }).inc();
  const text = await ours.registry.metrics();
  t.regex(text, /h_seconds_count\{route="a"\} 2/);
  t.regex(text, /c_total\{route="a",status="200"\} 2/);
});

test('a series exists at 0 as soon as it is taken', async (t) => {
  const { ours } = pair();
  counterSeries(ours.counter, { route: 'x', status: '200' });
  histogramSeries(ours.histogram, { route: 'x' });
  const text = await ours.registry.metrics();
  t.regex(text, /c_total\{route="x",status="200"\} 0/);
  t.regex(text, /h_seconds_count\{route="x"\} 0/);
});
