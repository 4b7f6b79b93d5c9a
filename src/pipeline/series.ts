import type { Registry } from 'prom-client'

// The histograms and the counter every call and request records, served by prom-client's
// registry (its exposition, content types and `/metrics` text are untouched).
//
// Why not prom-client's own `Histogram` and `Counter` here: each `observe`/`inc` is handed a
// labels object, checks it against the label names, hashes it into a string and looks the
// series up by that string, on every call. A REST tool call records three (the call's counter
// and histogram, the HTTP request's histogram); measured with `npm run bench -- --only
// metrics-rest`, they made a call cost 29 µs and 19.0 KB against 24 µs and 17.2 KB with metrics
// off (in a loop of its own prom-client takes 0.2–0.4 µs an observation; in the gateway its
// label handling is shared by every metric of the process). Here a series is found by its label
// values through a tree of Maps, one level per label (no string is built), and recording is a
// few additions: 25 µs and 17.5 KB.

type LabelValue = string | number
type Labels = Record<string, LabelValue>

/** One exposition value, in the shape prom-client's registry formats (`getForPromString`). */
interface PromValue {
  value: number
  labels: Labels
  sharedLabels?: Labels
  metricName?: string
  /** prom-client's buckets carry one (`null` without exemplars); its JSON shows it. */
  exemplar?: null
}

interface SeriesOptions {
  name: string
  help: string
  labelNames: readonly string[]
  /** Registries of either content type. */
  registers: ReadonlyArray<Pick<Registry, 'registerMetric'>>
}

/** A series of a histogram: one label set's buckets, sum and count. */
export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last slot is past the largest bound (+Inf). */
  readonly counts: Float64Array
  sum = 0
  count = 0
  readonly #bounds: readonly number[]

  constructor (readonly labels: Labels, bounds: readonly number[]) {
    this.#bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (value: number): void {
    // prom-client refuses these with a throw; a duration is never one, and a metric must not throw.
    if (!Number.isFinite(value)) return
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += value
    this.count++
  }
}

/** A series of a counter: one label set's count. */
export class CounterSeries {
  value = 0
  constructor (readonly labels: Labels) {}
  inc (by = 1): void { this.value += by }
}

/** The label sets seen so far, as a tree of Maps by label value, and in order of first use. */
abstract class SeriesMetric<S extends { labels: Labels }> {
  /** Read and rewritten by prom-client's registry (OpenMetrics names counters without `_total`). */
  name: string
  readonly help: string
  readonly aggregator = 'sum'
  readonly labelNames: readonly string[]
  readonly #root = new Map<LabelValue, unknown>()
  #all: S[] = []

  constructor (options: SeriesOptions) {
    this.name = options.name
    this.help = options.help
    this.labelNames = options.labelNames
    // The registry asks a metric only for what `get`/`getForPromString` and `reset` give.
    for (const registry of options.registers) registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  protected abstract create (labels: Labels): S

  /** The series of these label values, in `labelNames` order (as many as there are names). */
  series (a: LabelValue, b?: LabelValue, c?: LabelValue, d?: LabelValue): S {
    const depth = this.labelNames.length
    let node = this.#root
    for (let i = 0; i < depth - 1; i++) {
      const value = (i === 0 ? a : i === 1 ? b : c) as LabelValue
      let next = node.get(value) as Map<LabelValue, unknown> | undefined
      if (next === undefined) {
        next = new Map()
        node.set(value, next)
      }
      node = next
    }
    const last = (depth === 1 ? a : depth === 2 ? b : depth === 3 ? c : d) as LabelValue
    let series = node.get(last) as S | undefined
    if (series === undefined) {
      const values = [a, b, c, d]
      const labels: Labels = {}
      this.labelNames.forEach((name, i) => { labels[name] = values[i] as LabelValue })
      series = this.create(labels)
      node.set(last, series)
      this.#all.push(series)
    }
    return series
  }

  protected get all (): readonly S[] { return this.#all }

  reset (): void {
    this.#root.clear()
    this.#all = []
  }
}

/** A histogram with prom-client's exposition: `_bucket` (cumulative, `le`), `_sum`, `_count` per series. */
export class SeriesHistogram extends SeriesMetric<HistogramSeries> {
  readonly type = 'histogram'
  readonly #bounds: readonly number[]

  constructor (options: SeriesOptions & { buckets: readonly number[] }) {
    super(options)
    this.#bounds = [...options.buckets].sort((x, y) => x - y)
  }

  protected create (labels: Labels): HistogramSeries { return new HistogramSeries(labels, this.#bounds) }

  /** What the registry formats as text: each series' labels shared by its lines, as prom-client's own histogram gives them. */
  async getForPromString (): Promise<{ name: string, help: string, type: string, aggregator: string, values: PromValue[] }> {
    const values: PromValue[] = []
    for (const series of this.all) {
      let cumulative = 0
      this.#bounds.forEach((bound, i) => {
        cumulative += series.counts[i] as number
        values.push({ labels: { le: bound }, sharedLabels: series.labels, value: cumulative, metricName: `${this.name}_bucket`, exemplar: null })
      })
      values.push({ labels: { le: '+Inf' }, sharedLabels: series.labels, value: series.count, metricName: `${this.name}_bucket`, exemplar: null })
      values.push({ labels: {}, sharedLabels: series.labels, value: series.sum, metricName: `${this.name}_sum` })
      values.push({ labels: {}, sharedLabels: series.labels, value: series.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** The values as `registry.getMetricsAsJSON()` gives them: labels merged, `le` first. */
  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: PromValue[] }> {
    const metric = await this.getForPromString()
    metric.values = metric.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }))
    return metric
  }
}

/** A counter with prom-client's exposition. */
export class SeriesCounter extends SeriesMetric<CounterSeries> {
  readonly type = 'counter'

  protected create (labels: Labels): CounterSeries { return new CounterSeries(labels) }

  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: PromValue[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.all.map(series => ({ value: series.value, labels: series.labels })) }
  }
}
