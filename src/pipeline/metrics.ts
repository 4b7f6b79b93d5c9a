import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { Tool } from '@modelcontextprotocol/server'
import type { EndpointStats, MountedServer, ServerRegistry } from '../connections/registry.js'
import { UpstreamConnection } from '../connections/upstream.js'
import type { CallContext, CallFilter, CallOutcome } from './pipeline.js'
import { SeriesCounter, SeriesHistogram } from './series.js'

// The gateway's Prometheus metrics: what every call did, as an `observe` filter of the call
// pipeline (so REST, both MCP eras and `/mcp` count alike, under the member's own names, and
// a failure to count never changes an answer); each HTTP request's duration by route pattern;
// and, read only when scraped, what the gateway holds (servers up, sessions, streams, child
// processes). One `Registry` per gateway rather than prom-client's global one, so two
// gateways in one process (tests, an app embedding two) keep their own counts.
//
// Every label has a bounded set of values, since each value is a series Prometheus keeps:
// servers are the configured ones, methods the pipeline's eight, routes the registered
// patterns (never a raw URL), and a tool the server does not list is `_unknown`, so a client
// calling made-up names cannot grow the series without end.

/** Buckets of both duration histograms, in seconds: from 1 ms (an in-process tool) to 60 s (the default call timeout). */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/** The `tool` label of a call of a tool its server does not list. */
export const UNKNOWN_TOOL = '_unknown'
/** The `route` label of a request no route matched (404s of made-up paths). */
export const UNMATCHED_ROUTE = '_unmatched'
/** The refusals counted as authentication failures. */
const AUTH_FAILURES = new Set(['GW_ERR_UNAUTHENTICATED', 'GW_ERR_INSUFFICIENT_SCOPE'])

export class GatewayMetrics {
  /** The gateway's own registry, which `/metrics` serves. */
  readonly registry = new Registry()
  /** The observer to add to the call pipeline. */
  readonly filter: CallFilter
  #servers: ServerRegistry
  /** The names each tool list holds, by list: a connection hands out a new array when its tools change. */
  #listed = new WeakMap<readonly Tool[], Set<string>>()
  // The three recorded on every call and request are series metrics (./series.ts), cheaper to
  // record than prom-client's own; the rare ones keep prom-client's.
  #toolCalls: SeriesCounter
  #operations: SeriesHistogram
  #rateLimited: Counter<'server' | 'method'>
  #http: SeriesHistogram
  #authFailures: Counter<'code'>

  constructor (servers: ServerRegistry) {
    this.#servers = servers
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    this.#toolCalls = new SeriesCounter({
      name: 'mcp_tool_calls_total',
      help: 'Tool calls (tools/call) on every way in, by server, tool and outcome (ok, tool_error, denied, rate_limited, failed, timeout)',
      labelNames: ['server', 'tool', 'outcome'],
      registers
    })
    // OpenTelemetry's MCP semantic convention `mcp.server.operation.duration`.
    this.#operations = new SeriesHistogram({
      name: 'mcp_server_operation_duration_seconds',
      help: 'Duration of each MCP operation the gateway passed to a server (calls, gets, reads and lists), refusals included',
      labelNames: ['mcp_method_name', 'server', 'tool', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers
    })
    this.#rateLimited = new Counter({
      name: 'mcp_rate_limited_calls_total',
      help: 'Calls refused by a rate limit, by server and method',
      labelNames: ['server', 'method'],
      registers
    })
    this.#http = new SeriesHistogram({
      name: 'http_request_duration_seconds',
      help: 'Duration of HTTP requests, by method, route pattern and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: DURATION_BUCKETS,
      registers
    })
    this.#authFailures = new Counter({
      name: 'mcp_gateway_auth_failures_total',
      help: 'Requests refused for their credentials: 401 GW_ERR_UNAUTHENTICATED, 403 GW_ERR_INSUFFICIENT_SCOPE',
      labelNames: ['code'],
      registers
    })

    // Read when scraped, from the registry, rather than kept up to date on every change: one
    // gauge per figure, set for each (label, value) pair `values` yields at scrape time.
    const scraped = (name: string, help: string, values: () => Iterable<[string, number | undefined]>): void => {
      const gauge: Gauge<'server'> = new Gauge({
        name,
        help,
        labelNames: ['server'],
        registers,
        collect: () => {
          gauge.reset()
          for (const [server, n] of values()) if (n !== undefined) gauge.set({ server }, n)
        }
      })
    }
    const byServer = (name: string, help: string, value: (server: MountedServer) => number | undefined): void => {
      scraped(name, help, () => servers.servers().map(server => [server.name, value(server)]))
    }
    const byEndpoint = (name: string, help: string, value: (stats: EndpointStats) => number): void => {
      scraped(name, help, () => [...servers.endpoints()].map(([server, stats]) => [server, value(stats())]))
    }
    byServer('mcp_server_up', 'Whether a mounted server is up (1) or not (0: starting, down, closed)', server => server.connection.state === 'up' ? 1 : 0)
    byServer('mcp_upstream_isolated_connections', 'Per-session upstream connections open (isolation "session"): child processes, for stdio upstreams', server =>
      server.connection instanceof UpstreamConnection ? server.connection.isolatedCount : undefined)
    const restarts: Counter<'server'> = new Counter({
      name: 'mcp_upstream_restarts_total',
      help: 'Attempts to bring an upstream server back after it went down (each a new child process, for stdio), successful or not',
      labelNames: ['server'],
      registers,
      collect: () => {
        restarts.reset()
        for (const { name, connection } of servers.servers()) {
          if (connection instanceof UpstreamConnection) restarts.inc({ server: name }, connection.restarts)
        }
      }
    })
    byEndpoint('mcp_sessions', 'Live 2025-era MCP sessions, by endpoint (server "gateway" is /mcp)', stats => stats.sessions)
    byEndpoint('mcp_session_streams', 'Open GET (SSE) streams of 2025-era sessions, by endpoint', stats => stats.sessionStreams)
    byEndpoint('mcp_listen_streams', 'Open 2026-07-28 subscriptions/listen streams, by endpoint', stats => stats.listenStreams)

    this.filter = {
      name: 'metrics',
      observe: (call, outcome) => { this.#observe(call, outcome) }
    }
  }

  #observe (call: CallContext, { outcome, durationMs }: CallOutcome): void {
    const tool = call.method === 'tools/call' ? this.#toolLabel(call) : ''
    if (call.method === 'tools/call') this.#toolCalls.series(call.server, tool, outcome).inc()
    if (outcome === 'rate_limited') this.#rateLimited.inc({ server: call.server, method: call.method })
    this.#operations.series(call.method, call.server, tool, outcome).observe(durationMs / 1000)
  }

  /** The call's tool name when its server lists that tool, else `_unknown`. */
  #toolLabel (call: CallContext): string {
    const tools = this.#servers.get(call.server)?.connection.tools()
    if (tools === undefined || call.name === undefined) return UNKNOWN_TOOL
    let names = this.#listed.get(tools)
    if (names === undefined) {
      names = new Set(tools.map(tool => tool.name))
      this.#listed.set(tools, names)
    }
    return names.has(call.name) ? call.name : UNKNOWN_TOOL
  }

  /** One HTTP request answered: `route` is its pattern (`request.routeOptions.url`), undefined when no route matched. */
  httpRequest (method: string, route: string | undefined, statusCode: number, durationMs: number): void {
    this.#http.series(method, route ?? UNMATCHED_ROUTE, statusCode).observe(durationMs / 1000)
  }

  /** An error a request was answered with: counted when it is an authentication failure. */
  refused (code: unknown): void {
    if (typeof code === 'string' && AUTH_FAILURES.has(code)) this.#authFailures.inc({ code })
  }

  /** The exposition, in the registry's content type (`contentType`). */
  async text (): Promise<string> { return await this.registry.metrics() }
  get contentType (): string { return this.registry.contentType }
}
