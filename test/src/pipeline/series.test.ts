import t from 'tap'
import { Counter, Histogram, Registry, type OpenMetricsContentType } from 'prom-client'
import { SeriesCounter, SeriesHistogram } from '../../../src/pipeline/series.js'
import { DURATION_BUCKETS } from '../../../src/pipeline/metrics.js'

// The series metrics record on the call path in place of prom-client's own histogram and
// counter: what a scraper reads must be exactly what prom-client's would have written, in
// both content types and in the registry's JSON.

/** The same observations into prom-client's histogram and counter, and into the series ones, each in a registry of its own. */
function both (openMetrics = false): { prom: Registry, series: Registry } {
  const prom = new Registry()
  const series = new Registry()
  if (openMetrics) {
    // The content type is the registry's to choose at run time; its types fix it at construction.
    for (const registry of [prom, series]) (registry as unknown as Registry<OpenMetricsContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
  }
  const histogram = { name: 'op_duration_seconds', help: 'Duration "quoted" \\ and\nnewline', labelNames: ['method', 'server', 'status_code'], buckets: DURATION_BUCKETS }
  const promHistogram = new Histogram({ ...histogram, registers: [prom] })
  const seriesHistogram = new SeriesHistogram({ ...histogram, registers: [series] })
  const counter = { name: 'calls_total', help: 'Calls', labelNames: ['server', 'outcome'] }
  const promCounter = new Counter({ ...counter, registers: [prom] })
  const seriesCounter = new SeriesCounter({ ...counter, registers: [series] })

  // Bounds themselves, values between them, past the last, zero, and label values to escape.
  const observations: Array<[string, string, number, number]> = [
    ['tools/call', 'greet', 200, 0.0004],
    ['tools/call', 'greet', 200, 0.001],
    ['tools/call', 'greet', 200, 0.0011],
    ['tools/call', 'greet', 200, 60],
    ['tools/call', 'greet', 200, 61.5],
    ['tools/call', 'greet', 500, 0],
    ['tools/list', 'ma"th\\x\n', 200, 0.3],
    ['tools/call', 'greet', 200, 2.5]
  ]
  for (const [method, server, status, seconds] of observations) {
    promHistogram.observe({ method, server, status_code: status }, seconds)
    seriesHistogram.series(method, server, status).observe(seconds)
  }
  for (const [server, outcome, by] of [['greet', 'ok', 1], ['greet', 'ok', 1], ['math', 'failed', 1], ['greet', 'tool_error', 3]] as const) {
    promCounter.inc({ server, outcome }, by)
    seriesCounter.series(server, outcome).inc(by)
  }
  return { prom, series }
}

t.test('the text exposition is byte for byte prom-client\'s, in Prometheus text and OpenMetrics', async t => {
  const plain = both()
  const promText = await plain.prom.metrics()
  t.match(promText, /op_duration_seconds_bucket\{le="\+Inf",method="tools\/call",server="greet",status_code="200"\} 6/, 'the reference has what is compared')
  t.equal(await plain.series.metrics(), promText)

  const open = both(true)
  const openText = await open.prom.metrics()
  t.match(openText, /# EOF\n$/, 'the reference is OpenMetrics')
  t.match(openText, /calls_total\{server="greet",outcome="ok"\} 2/)
  t.equal(await open.series.metrics(), openText)
})

t.test('the JSON is prom-client\'s, and a reset empties both', async t => {
  const { prom, series } = both()
  // As a consumer gets it serialized (prom-client also sets `exemplar: undefined` on sums and counts).
  t.same(JSON.parse(JSON.stringify(await series.getMetricsAsJSON())), JSON.parse(JSON.stringify(await prom.getMetricsAsJSON())))
  prom.resetMetrics()
  series.resetMetrics()
  t.equal(await series.metrics(), await prom.metrics())
  t.notMatch(await series.metrics(), /_bucket/, 'nothing left after the reset')
})

t.test('a series is found again by the same label values and is the one counted', async t => {
  const registry = new Registry()
  const histogram = new SeriesHistogram({ name: 'h', help: 'h', labelNames: ['a', 'b', 'c', 'd'], buckets: [1, 2], registers: [registry] })
  const first = histogram.series('x', 'y', 'z', 'w')
  t.equal(histogram.series('x', 'y', 'z', 'w'), first)
  t.not(histogram.series('x', 'y', 'z', 'v'), first, 'a different last value is another series')
  t.not(histogram.series('x', 'q', 'z', 'w'), first, 'a different middle value is another series')
  first.observe(1.5)
  first.observe(Number.NaN)
  first.observe(Infinity)
  t.equal(first.count, 1, 'values that are not finite are not recorded')
  t.match(await registry.metrics(), /h_bucket\{le="2",a="x",b="y",c="z",d="w"\} 1/)
})
