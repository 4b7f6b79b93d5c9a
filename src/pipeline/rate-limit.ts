import type { FastifyInstance, FastifyRequest } from 'fastify'
import { normalizeIP } from '@fastify/rate-limit'
import { InternalError, isGatewayError, RateLimitedError } from '../errors.js'
import type { Limit, RateLimitOptions } from '../security.js'
import type { CallContext, CallFilter } from './pipeline.js'

// Rate limits: the config's `gateway.rateLimit`, counted by `@fastify/rate-limit` (its
// `createRateLimit` limiters and its pluggable store), as an `admit` filter of the call
// pipeline, so a call over a limit is refused on every way in before it reaches the server.
// Limits are per caller: its `clientId` once authenticated, its address otherwise. A call
// counts against each limit that applies to it: the default (every call of the caller), its
// server's and its tool's when the config sets them; the first one over refuses it.

/** A limiter made by `app.createRateLimit`. */
type Limiter = ReturnType<FastifyInstance['createRateLimit']>

/** One limit, compiled: its counter and how it names itself in a refusal. */
interface CompiledLimit extends Limit {
  limiter: Limiter
  /** Part of the counter's key, so limits sharing one store never share a counter. */
  scope: string
  /** For the refusal's message: `on server 'math'`. */
  label: string
}

/**
 * What a limiter is handed instead of an HTTP request: a call is not one (a 2025 session's
 * POST may carry several, `/mcp` reaches several servers). `createRateLimit`'s limiter reads
 * only `routeOptions.config.rateLimit` of it (a route's `groupId`, none here) and what the
 * key generator reads.
 */
interface Subject { routeOptions: { config: Record<string, never> }, key: string }
const NO_ROUTE = { config: {} }
const keyOf = (request: FastifyRequest): string => (request as unknown as Subject).key

/** Whom a call counts against: the authenticated client, else the address (IPv6 by /64, as `@fastify/rate-limit` keys it). */
function callerOf (call: CallContext): string {
  if (call.identity !== undefined) return `id:${call.identity.clientId}`
  if (call.ip !== undefined) return `ip:${normalizeIP(call.ip)}`
  return 'anonymous'
}

/**
 * The rate-limit filter of `options`, its limiters made by `createRateLimit` (the decorator
 * of `@fastify/rate-limit`, registered with the store the counters live in). A server's
 * limit takes what it leaves out from the default; a tool's from its server's.
 */
export function rateLimitFilter (options: RateLimitOptions, createRateLimit: FastifyInstance['createRateLimit']): CallFilter {
  const compile = (limit: Limit, scope: string, label: string): CompiledLimit => ({
    ...limit,
    scope,
    label,
    limiter: createRateLimit({ max: limit.max, timeWindow: limit.timeWindow, keyGenerator: keyOf })
  })
  const byDefault = compile({ max: options.max, timeWindow: options.timeWindow }, 'gateway', 'on the gateway')
  const servers = new Map<string, { limit: CompiledLimit | undefined, tools: Map<string, CompiledLimit> }>()
  for (const [server, { tools, ...own }] of Object.entries(options.servers)) {
    const serverLimit: Limit = { max: own.max ?? options.max, timeWindow: own.timeWindow ?? options.timeWindow }
    servers.set(server, {
      limit: own.max === undefined && own.timeWindow === undefined ? undefined : compile(serverLimit, `server:${server}`, `on server '${server}'`),
      tools: new Map(Object.entries(tools).map(([tool, limit]) => [tool, compile(
        { max: limit.max ?? serverLimit.max, timeWindow: limit.timeWindow ?? serverLimit.timeWindow },
        `tool:${server}/${tool}`,
        `on tool '${server}/${tool}'`
      )]))
    })
  }

  const limitsOf = (call: CallContext): CompiledLimit[] => {
    const server = servers.get(call.server)
    if (server === undefined) return [byDefault]
    const tool = call.method === 'tools/call' && call.name !== undefined ? server.tools.get(call.name) : undefined
    return [byDefault, ...server.limit === undefined ? [] : [server.limit], ...tool === undefined ? [] : [tool]]
  }

  return {
    name: 'rate-limit',
    async admit (call: CallContext): Promise<void> {
      const caller = callerOf(call)
      const limits = limitsOf(call)
      let states
      try {
        states = await Promise.all(limits.map(async limit => await limit.limiter({ routeOptions: NO_ROUTE, key: `${caller}|${limit.scope}` } as unknown as FastifyRequest)))
      } catch (err) {
        // The store failed (Redis down): a fault of the gateway, not of the server called.
        if (isGatewayError(err)) throw err
        throw new InternalError({ cause: err })
      }
      // Of the limits this call is over, the one that frees up last says when to retry.
      let over: { limit: CompiledLimit, retryAfter: number } | undefined
      for (const [i, state] of states.entries()) {
        if (state.isAllowed || !state.isExceeded) continue
        const retryAfter = Math.max(1, state.ttlInSeconds)
        if (over === undefined || retryAfter > over.retryAfter) over = { limit: limits[i] as CompiledLimit, retryAfter }
      }
      if (over !== undefined) throw new RateLimitedError(over.limit.max, over.limit.timeWindow, over.limit.label, over.retryAfter)
    }
  }
}
