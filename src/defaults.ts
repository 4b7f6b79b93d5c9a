import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

// The defaults that more than one part of the gateway applies, each written once with the
// reason for its value. A default that belongs to one module alone stays beside its option.

/**
 * Per-call timeout of a tool call or relayed request, in ms: the SDK's own default request
 * timeout, so a call behind the gateway fails no sooner than it would without it. Progress
 * resets it on MCP paths, as a long tool reports.
 */
export const DEFAULT_TIMEOUT_MS = 60_000

/**
 * Longest wait for an upstream to start and answer `initialize`, in ms: long enough for a
 * child process that loads a runtime, short enough that a dead one does not hold the boot.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000

/** First reconnect delay of a down upstream, in ms; doubled per failed attempt. */
export const DEFAULT_RETRY_INITIAL_MS = 1000

/** Ceiling of the reconnect delay, in ms: a server back after a long outage is found within half a minute. */
export const DEFAULT_RETRY_MAX_MS = 30_000

/**
 * Most per-session upstream connections of one server with `isolation: "session"` at once
 * (child processes, for stdio): without a bound, one client sending `initialize` in a loop
 * starts a process each time. Sixteen users of one server at once fit a small host.
 */
export const DEFAULT_MAX_ISOLATED = 16

/**
 * Idle time after which a per-session upstream connection is closed, in ms (5 minutes): it
 * frees the slot and the process of a client that went away without ending its session; the
 * session's next request opens it again.
 */
export const DEFAULT_ISOLATED_IDLE_MS = 5 * 60_000

/** Most 2025-era sessions per server at once: bounds memory against clients that never send DELETE. */
export const DEFAULT_MAX_SESSIONS = 1000

/** Idle time after which a 2025-era session is closed, in ms (30 minutes). */
export const DEFAULT_SESSION_IDLE_MS = 30 * 60_000

/**
 * Longest life of a 2025-era session's GET stream, in ms (10 minutes). A held stream is not
 * activity: ending it now and then lets an abandoned session go idle, and the client simply
 * reconnects (SEP-1699 lets a server close a stream; 2025-11-25 clients get a `retry:` hint).
 */
export const DEFAULT_MAX_STREAM_LIFETIME_MS = 10 * 60_000

/**
 * Longest life of a 2026-07-28 `subscriptions/listen` stream, in ms (10 minutes): a client
 * that went away without closing its socket frees its slot, a live one re-subscribes.
 */
export const DEFAULT_MAX_LISTEN_LIFETIME_MS = 10 * 60_000

/** Most `subscriptions/listen` streams open at once per endpoint: the SDK's own default. */
export const DEFAULT_MAX_LISTEN_STREAMS = 1024

/**
 * Most messages in one JSON-RPC batch, for 2025-03-26 clients (the only revision with
 * batches): a batch fans out into that many calls at once, so one POST cannot start thousands.
 */
export const DEFAULT_MAX_BATCH_LENGTH = 100

/** Largest request body, in bytes: Fastify's own default (1 MiB). */
export const DEFAULT_BODY_LIMIT = 1024 * 1024

/**
 * Longest wait for calls in flight when the gateway shuts down, in ms: a load balancer has
 * long stopped sending new requests by then, and most tool calls are done.
 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000

/**
 * Calls per caller when rate limiting is on and the config names no limit: 600 a minute,
 * ten a second on average, more than a person or an agent in a loop needs.
 */
export const DEFAULT_RATE_LIMIT = { max: 600, timeWindow: 60_000 } as const

/**
 * In front of every Redis key and channel the gateway writes (`gateway.redis.prefix`): one
 * Redis can then serve other applications, or two gateways that must not share state.
 */
export const DEFAULT_REDIS_PREFIX = 'mcp-gateway:'

/** Shortest `requestStateKey`: 32 characters, 192 bits or more of a random base64 secret. */
export const MIN_REQUEST_STATE_KEY_LENGTH = 32

/**
 * Reconnect backoff of the Redis client, in ms: the first delay, doubled per failed attempt up
 * to the ceiling, and retried for as long as the gateway runs. Short, since nothing is shared
 * between instances while Redis is away; a Redis back after an outage is found within 2 s.
 */
export const DEFAULT_REDIS_RETRY = { initialMs: 50, maxMs: 2000 } as const

/**
 * Longest wait for one Redis command, in ms: a Redis that is up but does not answer (stopped,
 * overloaded, a network that drops packets) keeps its connection open, so without a bound a
 * request needing it would wait for ever; with it, the request answers 503 and the client retries.
 */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 2000

/** Between a server's name and its tool's or prompt's on the aggregated endpoint `/mcp`. */
export const DEFAULT_SEPARATOR = '_'

/** The package's own version, read from its package.json (two levels up once built). */
function packageVersion (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const file = join(dir, 'package.json')
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'fastify-mcp-gateway' && pkg.version !== undefined) return pkg.version
    }
    const parent = dirname(dir)
    if (parent === dir) return '0.0.0'
    dir = parent
  }
}

/** How the gateway names itself to MCP clients and upstream servers, and in its OpenAPI document. */
export const GATEWAY_INFO = { name: 'fastify-mcp-gateway', version: packageVersion() } as const
