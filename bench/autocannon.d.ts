// autocannon ships no types and @types/autocannon is not installed: only what bench/run.ts uses.
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  namespace autocannon {
    interface Options {
      url: string
      method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH'
      headers?: Record<string, string>
      body?: string | Buffer
      connections?: number
      /** Seconds. */
      duration?: number
      /** Requests to make in all, in place of `duration`. */
      amount?: number
      /** Seconds before a request counts as a timeout (and an error). */
      timeout?: number
      /** Requests sent in turn on each connection; `setupRequest` rebuilds one before each send. */
      requests?: Array<{
        setupRequest?: (request: RequestData) => RequestData
        onResponse?: (status: number, body: string) => void
      }>
    }

    interface RequestData {
      method?: string
      path?: string
      headers?: Record<string, string>
      body?: string | Buffer
    }

    interface Histogram {
      average: number
      mean: number
      stddev: number
      min: number
      max: number
      total: number
      p50: number
      p90: number
      p99: number
      p99_9: number
    }

    interface Result {
      duration: number
      errors: number
      timeouts: number
      mismatches: number
      non2xx: number
      resets: number
      '2xx': number
      statusCodeStats: Record<string, { count: number }>
      latency: Histogram
      requests: Histogram & { sent: number }
      throughput: Histogram
    }

    interface Instance extends EventEmitter, PromiseLike<Result> {
      stop (): void
    }
  }

  function autocannon (options: autocannon.Options): autocannon.Instance
  export = autocannon
}
