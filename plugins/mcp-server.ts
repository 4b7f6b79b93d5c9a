import type { FastifyBaseLogger, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import {
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  validateHostHeader,
  validateOriginHeader
} from '@modelcontextprotocol/server'
import type { McpConnection, ServerFactory } from '../src/connections/connection.js'
import { InProcessConnection } from '../src/connections/in-process.js'
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_BATCH_LENGTH, DEFAULT_MAX_LISTEN_LIFETIME_MS, DEFAULT_MAX_LISTEN_STREAMS, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_STREAM_LIFETIME_MS, DEFAULT_SESSION_IDLE_MS, DEFAULT_TIMEOUT_MS } from '../src/defaults.js'
import { ForbiddenHostError, InvalidOptionsError, unavailable, type GatewayError } from '../src/errors.js'
import { StreamableHttpEndpoint } from '../src/http/endpoint.js'
import { jsonBodyParser } from '../src/http/json-body.js'
import { registerRestRoutes } from '../src/rest/routes.js'
import { normalizeOrigin } from './cors.js'

const OptionsSchema = Type.Object({
  /** Name in logs, tags, operation ids and `/ready`. Required: it is the server's identity. */
  name: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
  /** No 2025-era sessions, each request answered on its own (the seed's mode). Default `false`: sessions, as most clients expect. */
  stateless: Type.Optional(Type.Boolean()),
  /** Never answer a 2025-era session POST as SSE; messages the server sends mid-call go to the session's GET stream. Default `false`: a POST is answered as JSON, or as SSE once the server sends progress, a log or a request during it. */
  jsonResponse: Type.Optional(Type.Boolean()),
  /** Per-call timeout of a REST call, in ms. Default `DEFAULT_TIMEOUT_MS`. */
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Most 2025-era sessions at once; beyond it the least recently used one without a call in flight is closed. Default `DEFAULT_MAX_SESSIONS`. */
  maxSessions: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Idle time after which a session is closed, in ms; an open GET stream is not activity. Default `DEFAULT_SESSION_IDLE_MS`. */
  sessionIdleMs: Type.Optional(Type.Integer({ minimum: 1000 })),
  /** Longest life of a session's GET stream, in ms; the client reconnects. Default `DEFAULT_MAX_STREAM_LIFETIME_MS`. */
  maxStreamLifetimeMs: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Longest life of a 2026-07-28 `subscriptions/listen` stream, in ms; the client re-subscribes. Default `DEFAULT_MAX_LISTEN_LIFETIME_MS`. */
  maxListenLifetimeMs: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Most `subscriptions/listen` streams open at once on this endpoint. Default `DEFAULT_MAX_LISTEN_STREAMS`. */
  maxListenStreams: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Most messages in a JSON-RPC batch from a 2025-03-26 client (later revisions have no batches). Default `DEFAULT_MAX_BATCH_LENGTH`. */
  maxBatchLength: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Largest request body in bytes. Default `DEFAULT_BODY_LIMIT`. */
  bodyLimit: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Host header names accepted (DNS rebinding protection); `*` accepts any. Default: localhost, 127.0.0.1, [::1], for the default loopback bind. */
  allowedHosts: Type.Optional(Type.Array(Type.String())),
  /** Origin hostnames accepted from browsers; `*` accepts any. Requests without Origin pass. Default: localhost-class. */
  allowedOrigins: Type.Optional(Type.Array(Type.String())),
  /** The gateway is not ready (`/ready` 503) while this server is down. Default `false`: a server that is down degrades the gateway, which keeps serving the others. */
  required: Type.Optional(Type.Boolean()),
  /** Scopes a caller's token or API key must hold for any call of this server; 403 `insufficient_scope` naming them otherwise. Default: none. */
  scopes: Type.Optional(Type.Array(Type.String())),
  /** The prefix of this server's tool and prompt names on `/mcp` (`<namespace><separator><name>`); `false` shows its names as they are. Default: `name`, so two servers' names never meet. */
  namespace: Type.Optional(Type.Union([Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }), Type.Literal(false)])),
  /** Its own tool or prompt name → the name `/mcp` shows instead, before the namespace (`{ "add": "sum" }`). Default: none. Only `/mcp` reads it: the server's own endpoint, REST, policy and metrics keep its own names. */
  rename: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }))),
  /** Serve only `/mcp`: no REST routes, not in the registry. Default `false`; the aggregated endpoint sets it, its servers being registered themselves. */
  endpointOnly: Type.Optional(Type.Boolean())
})

export type McpServerPluginOptions = Static<typeof OptionsSchema> & {
  /** Builds an in-process server (see `servers/`). Give this or `connection`. */
  factory?: ServerFactory
  /** A connection to the server, for servers not built in process. */
  connection?: McpConnection
}

/**
 * Mounts one MCP server under the plugin's prefix: its Streamable HTTP endpoint at `/mcp`
 * for MCP clients of both protocol eras, and its REST routes (src/rest). The plugin owns the
 * server's HTTP side (options, Host/Origin checks, hooks, shutdown); the registry owns its
 * connection's lifecycle.
 *
 * Not wrapped in fastify-plugin: the prefix and the hooks stay with this server.
 */
const mcpServer: FastifyPluginAsync<McpServerPluginOptions> = async (app, options) => {
  const { factory, connection: givenConnection, ...plain } = options
  if (!Value.Check(OptionsSchema, plain)) {
    const issue = Value.Errors(OptionsSchema, plain).First()
    throw new InvalidOptionsError(`mcpServer ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  if ((factory === undefined) === (givenConnection === undefined)) {
    throw new InvalidOptionsError(`mcpServer '${plain.name}' needs exactly one of factory or connection`)
  }
  if (app.mcpRegistry === undefined) throw new InvalidOptionsError('register the core plugin before mcpServer')
  const name = plain.name
  const timeoutMs = plain.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const bodyLimit = plain.bodyLimit ?? DEFAULT_BODY_LIMIT
  const allowedHosts = plain.allowedHosts ?? localhostAllowedHostnames()
  // Hostnames, and the CORS origins whole (`https://app.example.com`): a browser origin the
  // gateway answers CORS requests from must not then be refused by this check.
  const allowedOrigins = [...plain.allowedOrigins ?? localhostAllowedOrigins(), ...(app.gatewaySecurity?.cors?.origins ?? []).map(normalizeOrigin)]
  const endpointOnly = plain.endpointOnly ?? false
  const log = app.log.child({ mcpServer: name })
  const connection = givenConnection ?? new InProcessConnection(name, factory as ServerFactory)
  const registry = app.mcpRegistry

  // After a config reload, a server the reload left untouched is mounted again on the
  // connection and endpoint that already serve it (src/http/retained.ts): nothing to start.
  const retained = app.gatewayRetained
  // `/mcp` is not a mounted server; its name may be a server's too.
  const retainedAs = endpointOnly ? `${app.prefix}/mcp` : name
  const kept = endpointOnly ? retained?.endpointOf(retainedAs, connection) !== undefined : registry.get(name)?.connection === connection
  if (!endpointOnly && !kept) {
    const entry = { name, prefix: app.prefix, connection, ...(plain.required === true && { required: true }), ...(plain.scopes !== undefined && { scopes: plain.scopes }), ...(plain.namespace !== undefined && { namespace: plain.namespace }), ...(plain.rename !== undefined && { rename: plain.rename }) }
    // A changed server replaces the old one, which serves until this build is swapped in.
    if (retained !== undefined && registry.has(name)) registry.replace(entry)
    else registry.add(entry)
  }
  // A server that fails to start is marked down and its routes answer 503; the gateway and
  // every other server keep serving.
  if (!kept) {
    try {
      await (endpointOnly ? connection.start() : registry.start(name))
      log.info({ tools: connection.tools().map(tool => tool.name) }, 'mcp server started')
    } catch (err) {
      // Options the connection refuses (`/mcp`'s name collisions) stop the boot, as a bad config does.
      if (err instanceof InvalidOptionsError) throw err
      log.error({ err }, 'mcp server failed to start; serving 503 for it')
    }
  }

  const endpoint = retained?.endpointOf(retainedAs, connection) ?? new StreamableHttpEndpoint(connection, {
    stateless: plain.stateless ?? false,
    jsonResponse: plain.jsonResponse ?? false,
    maxSessions: plain.maxSessions ?? DEFAULT_MAX_SESSIONS,
    sessionIdleMs: plain.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS,
    maxStreamLifetimeMs: plain.maxStreamLifetimeMs ?? DEFAULT_MAX_STREAM_LIFETIME_MS,
    maxListenLifetimeMs: plain.maxListenLifetimeMs ?? DEFAULT_MAX_LISTEN_LIFETIME_MS,
    maxListenStreams: plain.maxListenStreams ?? DEFAULT_MAX_LISTEN_STREAMS,
    maxBatchLength: plain.maxBatchLength ?? DEFAULT_MAX_BATCH_LENGTH,
    bodyLimit,
    // The aggregate passes each call through the pipeline itself, under its member's names.
    ...(!endpointOnly && { pipeline: app.callPipeline }),
    ...(app.gatewayCluster !== undefined && { cluster: app.gatewayCluster }),
    log
  })
  retained?.mounted(retainedAs, connection, endpoint, !endpointOnly)
  // Read when metrics are scraped: the endpoint's sessions and open streams (`/mcp`'s as `gateway`).
  registry.addEndpoint(name, () => endpoint.stats())

  // Fastify parses text/plain by default; a tool's arguments and MCP messages are JSON only,
  // so anything else is a 415 rather than a string that fails validation.
  app.removeContentTypeParser('text/plain')

  // Every request log line of this server carries its name; merged into the one child
  // logger Fastify makes per request anyway, rather than a second child per request.
  // The `{ mcpServer }` child of the parent Fastify hands in (the root logger) is made once
  // and kept while that parent and its level stay the same: a pino child takes its level at
  // creation, so a level set on the root later makes a new one.
  let parent: FastifyBaseLogger | undefined
  let parentLevel: string | undefined
  let serverLog: FastifyBaseLogger | undefined
  app.setChildLoggerFactory((logger, bindings, childOptions) => {
    if (serverLog === undefined || logger !== parent || logger.level !== parentLevel) {
      parent = logger
      parentLevel = logger.level
      serverLog = logger.child({ mcpServer: name })
    }
    return serverLog.child(bindings, childOptions)
  })

  const refuseHostOrOrigin = hostAndOriginCheck(allowedHosts, allowedOrigins)
  // A callback hook, not an async one: it runs on every request to the server.
  app.addHook('onRequest', (request, _reply, done) => {
    const refusal = refuseHostOrOrigin(request)
    if (refusal !== undefined) done(refusal)
    else if (connection.state !== 'up') done(unavailable({ server: name, state: connection.state, failure: connection.failure, retryAfter: connection.retryAfter }))
    else done()
  })

  let rest: { cancelInFlight: () => void } | undefined
  app.gatewayShutdown.onDrainTimeout(() => {
    endpoint.cancelInFlight()
    rest?.cancelInFlight()
  })
  // In-flight SSE streams would keep onClose waiting: end them first. A build of the app
  // replaced by a reload leaves the endpoint and connection to the next build (or to the
  // reload, which closes what the next build does not mount).
  const owned = (): boolean => retained === undefined || retained.closing
  app.addHook('preClose', async () => { if (owned()) await endpoint.closeStreams() })
  app.addHook('onClose', async () => {
    if (!owned()) return
    await endpoint.close()
    // A registered server's connection is the registry's to close, after every endpoint.
    if (endpointOnly) await connection.close()
  })

  const mcpRoute = { config: { mcp: true }, bodyLimit, schema: { hide: true } }
  const handleMcp = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => { await endpoint.handle(request, reply) }
  await app.register(async (mcp) => {
    // A GET or DELETE may carry `content-type: application/json` and no body; Fastify would
    // reject that as an empty JSON body. An empty POST still fails: the SDK answers it.
    mcp.removeContentTypeParser('application/json')
    mcp.addContentTypeParser('application/json', { parseAs: 'buffer' }, jsonBodyParser(mcp, { maxDepth: app.maxJsonDepth, emptyIsUndefined: true }))
    mcp.post('/mcp', mcpRoute, handleMcp)
    mcp.get('/mcp', mcpRoute, handleMcp)
    mcp.delete('/mcp', mcpRoute, handleMcp)
  })

  if (endpointOnly) return
  rest = registerRestRoutes(app, { name, connection, pipeline: app.callPipeline, timeoutMs, bodyLimit })
}

/** Most distinct Host or Origin values whose verdict is kept, per mount: far beyond the names a deployment answers to. */
const MAX_VERDICTS = 256
/** Longest header value whose verdict is kept: a longer one (a hostile client's) is checked each time, so it cannot fill the cache with large keys. */
const MAX_VERDICT_KEY_LENGTH = 256

/**
 * The Host/Origin check of one mount: a request's refusal, or undefined. A verdict depends on
 * the header's value alone, and a deployment sees few distinct values, so each value's verdict
 * (the refusal's message, or `null` to pass) is kept in a small map, emptied when full, rather
 * than parsing a URL on every request.
 */
function hostAndOriginCheck (allowedHosts: string[], allowedOrigins: string[]): (request: FastifyRequest) => GatewayError | undefined {
  const hostVerdict = allowedHosts.includes('*') ? undefined : cachedVerdict(host => refusalOf(validateHostHeader(host, allowedHosts)))
  // A whole origin is one of the CORS origins; the SDK's check compares hostnames only, so
  // none of those entries can match there.
  const originVerdict = allowedOrigins.includes('*')
    ? undefined
    : cachedVerdict(origin => origin !== undefined && allowedOrigins.includes(origin) ? null : refusalOf(validateOriginHeader(origin, allowedOrigins)))
  return request => {
    const refusal = hostVerdict?.(request.headers.host) ?? originVerdict?.(request.headers.origin) ?? null
    return refusal === null ? undefined : new ForbiddenHostError(refusal)
  }
}

function refusalOf (verdict: { ok: true } | { ok: false, message: string }): string | null {
  return verdict.ok ? null : verdict.message
}

function cachedVerdict (check: (value: string | undefined) => string | null): (value: string | undefined) => string | null {
  const verdicts = new Map<string, string | null>()
  return value => {
    if (value === undefined || value.length > MAX_VERDICT_KEY_LENGTH) return check(value)
    let verdict = verdicts.get(value)
    if (verdict === undefined) {
      verdict = check(value)
      if (verdicts.size >= MAX_VERDICTS) verdicts.clear()
      verdicts.set(value, verdict)
    }
    return verdict
  }
}

export default mcpServer
