import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { DEFAULT_REDIS_COMMAND_TIMEOUT_MS, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_RETRY, MIN_REQUEST_STATE_KEY_LENGTH } from '../src/defaults.js'
import { InvalidOptionsError } from '../src/errors.js'
import type { RetainedRedis } from '../src/http/retained.js'
import type { Cluster } from '../src/stores/cluster.js'
import { redisCluster } from '../src/stores/redis-cluster.js'

// The Redis that several gateway instances share (`gateway.redis`, `--redis`, `REDIS_URL`):
// 2025-era sessions, resumable streams' events, the broker and the rate-limit counters.
//
// The client is ioredis, the one the Fastify organisation's `@fastify/redis` wraps and the one
// `@fastify/rate-limit`'s Redis store drives (its Lua scripts go through ioredis's
// `defineCommand`, which node-redis does not have); the stores in src/stores take it too.
//
// `@fastify/redis` itself is not registered, on purpose, breaking the house style's "a dead
// dependency fails boot": Redis is an opt-in for sharing, and an instance without it still
// serves stateless and 2026-07-28 traffic, so a Redis down at boot must not stop the gateway.
// `@fastify/redis` 9 cannot be told so: whatever the options (`lazyConnect`, a client of our
// own with `closeClient`), its registration waits for the client's `ready` (or `end`),
// swallowing connection errors, so with reconnection forever the boot fails with
// AVV_ERR_PLUGIN_EXEC_TIMEOUT (node_modules/@fastify/redis/index.js, `onReady`/`onError`).
// This plugin does the rest of what it does: make the client, decorate, quit it in `onClose`,
// and no more than it made.

const OptionsSchema = Type.Object({
  url: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  prefix: Type.Optional(Type.String({ minLength: 1 })),
  requestStateKey: Type.Optional(Type.String({ minLength: MIN_REQUEST_STATE_KEY_LENGTH }))
})

export interface RedisPluginOptions {
  /**
   * `redis://` or `rediss://` URL of the Redis the instances share. Default: none, every
   * instance keeps its state in memory (a single gateway needs nothing else).
   */
  url?: string
  /** In front of every key and channel written. Default `mcp-gateway:`: one Redis can serve other applications too. */
  prefix?: string
  /**
   * Seals the `requestState` the gateway hands clients, the same on every instance, at least
   * 32 characters. Required with `url`: no default can be both shared and secret.
   */
  requestStateKey?: string
  /** A cluster made elsewhere, used as it is and never closed here (tests: a `memoryCluster`). Not with `url`. */
  cluster?: Cluster
}

declare module 'fastify' {
  interface FastifyInstance {
    /** What this instance shares with the others (src/stores/cluster.ts); undefined when it runs alone. */
    gatewayCluster: Cluster | undefined
    /** The shared Redis's client and key prefix, when `url` is set (the rate limits' store reads it); undefined otherwise. */
    gatewayRedis: { client: Redis, prefix: string } | undefined
  }
}

/**
 * The cluster every mount reads (`gatewayCluster`): made over a Redis client when a URL is
 * given, the one given (tests), or none. Registered before the filters (their rate-limit
 * store) and before any mount.
 */
async function redis (app: FastifyInstance, options: RedisPluginOptions): Promise<void> {
  const { cluster: given, ...plain } = options
  if (!Value.Check(OptionsSchema, plain)) {
    const issue = Value.Errors(OptionsSchema, plain).First()
    throw new InvalidOptionsError(`redis ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  if (given !== undefined && plain.url !== undefined) throw new InvalidOptionsError('redis: give url or cluster, not both')
  if (plain.url !== undefined && plain.requestStateKey === undefined) {
    throw new InvalidOptionsError(`redis: requestStateKey is required with url: a secret of at least ${MIN_REQUEST_STATE_KEY_LENGTH} characters, the same on every instance`)
  }
  const prefix = plain.prefix ?? DEFAULT_REDIS_PREFIX
  if (given !== undefined) {
    app.decorate('gatewayCluster', given)
    app.decorate('gatewayRedis', undefined)
    return
  }

  // A config reload rebuilds the app, but keeps the first build's client and cluster for the
  // process's life: each mount's endpoint, kept across reloads too (src/http/retained.ts),
  // holds the cluster its sessions live in, so another Redis could only come with new
  // endpoints, every session ended. A reload that changes `gateway.redis` is applied
  // otherwise and says that this part waits for the next start, as `gateway.tls` does.
  const retained = app.gatewayRetained
  const key = JSON.stringify(plain.url === undefined ? {} : { url: plain.url, prefix, requestStateKey: plain.requestStateKey })
  const held = retained?.redis
  if (held !== undefined && held.key !== key) {
    app.log.warn({ redis: held.label ?? null }, 'gateway.redis changed: it applies at the next start, not on a reload; the running Redis settings are kept')
  }
  const made = held ?? connect(app, plain.url, prefix, plain.requestStateKey, key)
  app.decorate('gatewayCluster', made.cluster)
  app.decorate('gatewayRedis', made.client === undefined ? undefined : { client: made.client, prefix: made.prefix })
  // Kept once the first build serves: a first build that fails closes what it made below.
  if (retained !== undefined && held === undefined) app.addHook('onReady', async () => { retained.redis ??= made })

  app.addHook('onClose', async () => {
    if (made.client === undefined) return
    // An older build's close while a newer one serves on the same client: nothing to do.
    if (retained !== undefined && !retained.closing && retained.redis === made) return
    await made.cluster?.close()
    await quit(made.client)
  })
}

/** The client and its cluster, at once: neither waits for Redis, which may be down now and come later. */
function connect (app: FastifyInstance, url: string | undefined, prefix: string, requestStateKey: string | undefined, key: string): RetainedRedis {
  if (url === undefined || requestStateKey === undefined) return { key, label: undefined, client: undefined, cluster: undefined, prefix }
  const client = new Redis(url, {
    // A command while disconnected rejects at once instead of waiting in a queue for a
    // Redis that may be gone for minutes: no request hangs on it, the caller sees the failure.
    enableOfflineQueue: false,
    // A command in flight when the connection drops is retried once after reconnecting, then rejected.
    maxRetriesPerRequest: 1,
    // A Redis that holds the connection but does not answer fails the command, not the request's wait.
    commandTimeout: DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
    // Reconnect for as long as the gateway runs (never `null`, which would end the client).
    retryStrategy: (times: number) => Math.min(DEFAULT_REDIS_RETRY.initialMs * 2 ** Math.min(times - 1, 16), DEFAULT_REDIS_RETRY.maxMs)
  })
  const label = withoutCredentials(url)
  const log = app.log.child({ redis: label })
  watchState(client, log)
  const cluster = redisCluster(client, {
    prefix,
    requestStateKey,
    // Connection failures while Redis is down are the state log's to say, once: every failed
    // heartbeat or resubscription would otherwise be a line.
    onerror: err => {
      if (client.status !== 'ready' || CONNECTION_ERROR.test(err.message) || CONNECTION_CODES.has((err as NodeJS.ErrnoException).code ?? '')) log.debug({ err }, 'redis operation failed while disconnected')
      else log.warn({ err }, 'redis operation failed')
    }
  })
  return { key, label, client, cluster, prefix }
}

/** The URL as log lines show it: its user and password masked, as `--print-config` does. */
function withoutCredentials (url: string): string {
  if (!URL.canParse(url)) return url
  const parsed = new URL(url)
  if (parsed.username !== '') parsed.username = '***'
  if (parsed.password !== '') parsed.password = '***'
  return parsed.href
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])
const CONNECTION_ERROR = /Connection is closed|Stream isn't writeable|enableOfflineQueue|max retries per request|connect E/i

/**
 * One line per change of the connection's state, not per event: while Redis is down ioredis
 * emits an error at every reconnection attempt, which would flood the log.
 */
function watchState (client: Redis, log: FastifyInstance['log']): void {
  let state: 'connecting' | 'up' | 'down' = 'connecting'
  let wasUp = false
  const down = (err: Error | undefined): void => {
    if (state === 'down') return
    if (state === 'connecting') log.warn({ err }, 'redis unreachable: serving without the shared state until it connects')
    else log.warn({ ...(err !== undefined && { err }) }, 'redis connection lost: reconnecting; shared state is unavailable meanwhile')
    state = 'down'
  }
  client.on('ready', () => {
    if (state === 'up') return
    log.info(wasUp ? 'redis reconnected' : 'redis connected')
    state = 'up'
    wasUp = true
  })
  // Without a listener ioredis prints every error to the console itself.
  client.on('error', (err: Error) => { down(err) })
  client.on('close', () => { if (state === 'up') down(undefined) })
}

/** QUIT when connected (what was sent is answered first); otherwise stop reconnecting at once. */
async function quit (client: Redis): Promise<void> {
  if (client.status !== 'ready') {
    // No socket open (between attempts, ioredis emits no `end` then) or one still connecting.
    client.disconnect()
    return
  }
  // The connection is gone only at `end`, after QUIT's answer: the process can exit then.
  // Not `events.once`, which would reject on an `error` emitted meanwhile.
  const ended = new Promise(resolve => client.once('end', resolve))
  try {
    await client.quit()
  } catch {
    client.disconnect()
  }
  await ended
}

export default fp(redis, { name: 'gateway-redis', fastify: '5.x', dependencies: ['gateway-core'] })
