import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { InvalidOptionsError } from '../src/errors.js'
import { auditFilter, writes } from '../src/pipeline/audit.js'
import { policyFilter } from '../src/pipeline/policy.js'
import { rateLimitFilter } from '../src/pipeline/rate-limit.js'
import type { PolicyRule, RateLimitOptions } from '../src/security.js'

const LimitSchema = { max: Type.Optional(Type.Integer({ minimum: 1 })), timeWindow: Type.Optional(Type.Integer({ minimum: 1 })) }

/** The options' shape, checked when the gateway is embedded (the config file's are parsed by src/config.ts). */
const OptionsSchema = Type.Object({
  policy: Type.Optional(Type.Array(Type.Object({
    match: Type.Object({
      apiKey: Type.Optional(Type.String()),
      sub: Type.Optional(Type.String()),
      scope: Type.Optional(Type.String()),
      claim: Type.Optional(Type.Record(Type.String(), Type.String()))
    }, { additionalProperties: false }),
    allow: Type.Array(Type.String()),
    deny: Type.Array(Type.String())
  }))),
  rateLimit: Type.Optional(Type.Object({
    max: Type.Integer({ minimum: 1 }),
    timeWindow: Type.Integer({ minimum: 1 }),
    servers: Type.Record(Type.String(), Type.Object({ ...LimitSchema, tools: Type.Record(Type.String(), Type.Object(LimitSchema)) }))
  })),
  audit: Type.Optional(Type.Boolean()),
  requestLines: Type.Optional(Type.Boolean())
})

export interface FiltersOptions {
  /** Per-tool authorization rules, first fitting rule decides (src/pipeline/policy.ts). Default: none, every caller sees and calls everything. */
  policy?: PolicyRule[]
  /** Rate limits per caller, by default, server and tool (src/pipeline/rate-limit.ts). Default: none. */
  rateLimit?: RateLimitOptions
  /**
   * Where the rate-limit counters live: a `@fastify/rate-limit` store. Default: its in-memory
   * `LocalStore`, counting per gateway process; a store shared by every replica (Redis) makes
   * the limits hold across them.
   */
  store?: FastifyRateLimitStoreCtor
  /**
   * The Redis the instances share, for `@fastify/rate-limit`'s Redis store, its counters under
   * `<prefix>rate-limit:`. Default: the redis plugin's (`app.gatewayRedis`) when it has one,
   * so a limit holds across instances. `store` wins over it.
   */
  redis?: { client: Redis, prefix: string }
  /** An audit line per tool call, prompt get and resource read (src/pipeline/audit.ts). Default: on while the logger writes `info`, since otherwise every line would be dropped and the filter only cost time. */
  audit?: boolean
  /**
   * Fastify's own request logging is off (the command's `logController`): write one line per
   * completed request at `info`, the audit line standing in for it when the request made a
   * call. Default `false`.
   */
  requestLines?: boolean
}

/**
 * The call pipeline's filters from the security options, in the pipeline's fixed order:
 * authorization (`policy`), admission (rate limits), then the audit observer. A filter whose
 * options are absent is not added, so a gateway without them passes calls through unwrapped.
 */
async function filters (app: FastifyInstance, options: FiltersOptions): Promise<void> {
  const { store, redis: givenRedis, ...plain } = options
  if (!Value.Check(OptionsSchema, plain)) {
    const issue = Value.Errors(OptionsSchema, plain).First()
    throw new InvalidOptionsError(`filters ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  const policy = policyFilter(options.policy)
  if (policy !== undefined) app.callPipeline.add(policy)
  if (options.rateLimit !== undefined) {
    // Only for its limiters and store: `global: false` puts no hook on any route, since a
    // call is counted where the pipeline sees it, on every way in, not per HTTP request.
    const redis = store === undefined ? givenRedis ?? app.gatewayRedis : undefined
    await app.register(rateLimit, {
      global: false,
      ...(store !== undefined && { store }),
      ...(redis !== undefined && {
        redis: redis.client,
        nameSpace: `${redis.prefix}rate-limit:`,
        // Fail open: while Redis is down a call is not counted rather than refused (500).
        // Redis down degrades the gateway, it does not stop it (`/ready` stays 200): the calls
        // that need no shared state go on, and a limit that briefly does not count harms less
        // than every call failing. The client's offline queue is off, so the store fails at
        // once and a call never waits for Redis; the redis plugin logs the outage.
        skipOnError: true
      })
    })
    app.callPipeline.add(rateLimitFilter(options.rateLimit, app.createRateLimit))
  }
  const audit = options.audit ?? writes(app.log, 'info')
  // With Fastify's request logging off (the command), one line per completed request at
  // `info`: the audit line when the request made a call, otherwise a line of its own.
  const requestLines = options.requestLines === true && writes(app.log, 'info')
  const audited = new Set<string>()
  // Bounded: a mark whose request never completes nor aborts (none known) cannot pile up.
  const mark = (id: string): void => {
    if (audited.size >= MAX_AUDIT_MARKS) audited.clear()
    audited.add(id)
  }
  if (audit) app.callPipeline.add(auditFilter(app.log, requestLines ? mark : undefined))
  if (!requestLines) return
  app.addHook('onResponse', (request, reply, done) => {
    if (audited.delete(request.id)) {
      done()
      return
    }
    const code = reply.gatewayErrorCode
    request.log.info(code === undefined
      ? { method: request.method, url: request.url, statusCode: reply.statusCode, responseTime: reply.elapsedTime }
      : { method: request.method, url: request.url, statusCode: reply.statusCode, code, responseTime: reply.elapsedTime }, 'request completed')
    done()
  })
  // A request cut off before its answer has no onResponse: its mark goes with it.
  app.addHook('onRequestAbort', (request, done) => {
    audited.delete(request.id)
    done()
  })
}

/** Most requests marked as audited and not yet completed: far beyond the calls in flight at once. */
const MAX_AUDIT_MARKS = 10_000

export default fp(filters, { name: 'gateway-filters', fastify: '5.x', dependencies: ['gateway-core'] })
