// The cluster of instances sharing one Redis (`gateway.redis`): sessions, stream events and
// the broker over the client the redis plugin owns, plus the one subscriber connection the
// broker opens beside it.
import type { Redis } from 'ioredis'
import { makeCluster, type Cluster } from './cluster.js'
import { RedisBroker } from './redis-broker.js'
import { RedisEventStore } from './redis-event-store.js'
import { RedisSessionStore } from './redis-session-store.js'

/** Keys and channels start with it: one Redis can serve other applications, or two gateways. */
export const DEFAULT_PREFIX = 'mcp-gateway:'
/** As the memory store: enough for a client to resume a long answer after a short break. */
export const DEFAULT_MAX_EVENTS_PER_STREAM = 1000
/** As the memory store: ten minutes for a client to come back to a stream. */
export const DEFAULT_EVENT_TTL_MS = 600_000

export interface RedisClusterOptions {
  /** Before every key and channel; default `DEFAULT_PREFIX`. */
  prefix?: string
  /** Seals `requestState`: the same on every instance, so it comes from the configuration. */
  requestStateKey: string
  /** Most events kept per stream; default `DEFAULT_MAX_EVENTS_PER_STREAM`. */
  maxEventsPerStream?: number
  /** How long a stream's events are kept after its last one, in ms; default `DEFAULT_EVENT_TTL_MS`. */
  eventTtlMs?: number
  /** This process's id; random by default (tests set it). */
  instanceId?: string
  /** Errors nothing awaits: lost publishes, failed heartbeats, the subscriber's connection. */
  onerror?: (err: Error) => void
}

/**
 * A cluster over `client`, at once: it does not wait for Redis, so a gateway whose Redis is
 * down at boot still starts (it reports `available: false` and each store operation rejects
 * until the client reconnects). `close` closes the broker's subscriber, never `client`.
 */
export function redisCluster (client: Redis, options: RedisClusterOptions): Cluster {
  const prefix = options.prefix ?? DEFAULT_PREFIX
  const onerror = options.onerror ?? (() => {})
  const broker = new RedisBroker(client, { prefix, onerror })
  return makeCluster({
    sessions: new RedisSessionStore(client, { prefix }),
    events: new RedisEventStore(client, broker, {
      prefix,
      maxEventsPerStream: options.maxEventsPerStream ?? DEFAULT_MAX_EVENTS_PER_STREAM,
      ttlMs: options.eventTtlMs ?? DEFAULT_EVENT_TTL_MS
    }),
    broker,
    requestStateKey: options.requestStateKey,
    available: () => client.status === 'ready',
    close: async () => { await broker.close() },
    onerror,
    instanceId: options.instanceId
  })
}
