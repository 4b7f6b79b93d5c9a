import { existsSync, readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { AuthInfo } from '@modelcontextprotocol/server'
import { ServerRegistry, type MountedServer } from '../src/connections/registry.js'
import { DEFAULT_DRAIN_TIMEOUT_MS, GATEWAY_INFO } from '../src/defaults.js'
import {
  BadRequestError,
  BodyTooLargeError,
  InternalError,
  InvalidArgumentsError,
  InvalidJsonError,
  InvalidOptionsError,
  isGatewayError,
  jsonRpcCodeFor,
  RouteNotFoundError,
  ServerNotFoundError,
  ShuttingDownError,
  UnsupportedMediaTypeError,
  type GatewayError
} from '../src/errors.js'
import { DEFAULT_MAX_JSON_DEPTH, jsonBodyParser } from '../src/http/json-body.js'
import type { Retained } from '../src/http/retained.js'
import { errorBody } from '../src/http/server-options.js'
import { CallPipeline, type CallFilter } from '../src/pipeline/pipeline.js'
import { ErrorBody, errorResponse, HealthBody, ReadyBody, ServerReadyBody, withExample } from '../src/rest/schemas.js'
import type { AuthOptions, SecurityOptions } from '../src/security.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every mounted MCP server, whatever its state, and their lifecycle: `/ready`, `/mcp` and the 404 handler read it. */
    mcpRegistry: ServerRegistry
    /** The filters every call to a mounted server passes, on every way in (src/pipeline). */
    callPipeline: CallPipeline
    /** OpenAPI component schemas contributed by mounted servers (tool `$defs`). */
    openApiComponents: Map<string, Record<string, unknown>>
    /** Deepest JSON nesting a request body may have (the core option `maxJsonDepth`); the MCP routes' own parser reads it. */
    maxJsonDepth: number
    /** Whether the gateway is draining, and what to cancel when the drain times out. */
    gatewayShutdown: Shutdown
    /** What outlives this build of the app across config reloads; absent unless the command reloads. */
    gatewayRetained: Retained | undefined
    /** The gateway's security settings (src/security.ts), set by the gateway plugin; absent when the core plugin is used on its own. */
    gatewaySecurity?: SecurityOptions
    /** Servers the config turns off (the core option `disabled`): `/ready` lists them as `disabled`. */
    disabledServers: readonly string[]
  }
  interface FastifyRequest {
    /** Who is calling, once authenticated; handlers of in-process servers see it as `ctx.http.authInfo`. */
    identity: AuthInfo | undefined
  }
  interface FastifyReply {
    /** The catalogue code of the error this reply answers with, for the request's one log line. */
    gatewayErrorCode: string | undefined
  }
  interface FastifyContextConfig {
    /** Set on MCP protocol routes: their errors are JSON-RPC error objects. */
    mcp?: boolean
  }
}

export interface CorePluginOptions {
  /** Title of the OpenAPI document. Default: `MCP Gateway`. */
  title?: string
  /** Version of the OpenAPI document. Default: the package version. */
  version?: string
  /** Filters of the call pipeline, in addition to those plugins add before the gateway is ready. */
  filters?: CallFilter[]
  /** Deepest nesting of arrays and objects in a JSON body; deeper is a 400. Default `DEFAULT_MAX_JSON_DEPTH` (64), see src/http/json-body.ts. */
  maxJsonDepth?: number
  /**
   * Longest wait, in ms, for calls in flight when shutdown begins; then they are cancelled,
   * each answered with an error. Default `DEFAULT_DRAIN_TIMEOUT_MS`.
   */
  drainTimeoutMs?: number
  /** What outlives this build of the app when the command reloads its config (src/http/retained.ts). */
  retained?: Retained
  /** One line per completed request (the filters plugin's `requestLines`): a refusal is named on it, not on a line of its own. */
  requestLines?: boolean
  /**
   * Names of the servers the config turns off (`"disabled": true`). Default: none. They are
   * never mounted; `/ready` lists them with state `disabled`, so an operator sees them, and
   * they never make the gateway unready.
   */
  disabled?: string[]
}

const DisabledOption = Type.Array(Type.String({ minLength: 1 }))

/** The gateway's shutdown as the mounted servers see it. */
export interface Shutdown {
  /** Set once shutdown has begun: new requests are refused, `/ready` answers 503. */
  readonly draining: boolean
  /** Runs when the drain timeout passes with calls still in flight: cancel them. */
  onDrainTimeout (abort: () => void | Promise<void>): void
}

/** After cancelling what was in flight at the drain timeout: time for those answers to be sent before connections are cut. */
const CUT_AFTER_CANCEL_MS = 500

const ReadyDescription = 'Readiness for a load balancer: 200 while the gateway serves (servers that are down are listed, status `degraded`); 503 while it drains for shutdown or while a server marked `required` is down. Servers disabled in the config are listed as `disabled` and never make the gateway unready. With a shared Redis (`gateway.redis`), `redis.status` says whether it is reachable; a Redis that is down degrades the gateway (200, `degraded`) and never makes it unready, since calls that need no shared state are still served.'

/** The documented examples of `/ready` and `/ready/{server}`, one per state a probe can meet. */
const READY_EXAMPLES = {
  serving: {
    ready: { summary: 'Every enabled server up', value: { status: 'ready', servers: [{ name: 'files', state: 'up', tools: 14 }, { name: 'math', state: 'up', required: true, tools: 1 }, { name: 'legacy', state: 'disabled', tools: 0 }] } },
    degraded: { summary: 'A server down: listed, the gateway still serves', value: { status: 'degraded', servers: [{ name: 'files', state: 'down', tools: 0, error: 'the process exited with code 1', retryAfter: 4 }, { name: 'math', state: 'up', required: true, tools: 1 }] } },
    redisDown: { summary: 'The shared Redis down: the gateway still serves what needs no shared state', value: { status: 'degraded', servers: [{ name: 'files', state: 'up', tools: 14 }, { name: 'math', state: 'up', required: true, tools: 1 }], redis: { status: 'down' } } }
  },
  refusing: {
    unavailable: { summary: 'A required server down', value: { status: 'unavailable', servers: [{ name: 'files', state: 'up', tools: 14 }, { name: 'math', state: 'down', required: true, tools: 0, error: 'the server failed to start; see the log' }] } },
    draining: { summary: 'Shutting down', value: { status: 'draining', servers: [{ name: 'files', state: 'up', tools: 14 }, { name: 'math', state: 'up', required: true, tools: 1 }] } }
  },
  serverUp: { up: { summary: 'Up', value: { name: 'math', state: 'up', tools: 1 } } },
  serverDown: {
    down: { summary: 'Down, retried in 4 s', value: { name: 'files', state: 'down', tools: 0, error: 'the process exited with code 1', retryAfter: 4 } },
    disabled: { summary: 'Disabled in the config', value: { name: 'legacy', state: 'disabled', tools: 0 } }
  }
}

/**
 * The gateway's cross-cutting parts: the OpenAPI document and its two viewers, one error
 * handler, one not-found handler, and the liveness and readiness endpoints.
 */
async function core (app: FastifyInstance, options: CorePluginOptions): Promise<void> {
  // A reloading command keeps the registry and the pipeline across builds of the app.
  const retained = options.retained
  const registry = retained?.registry ?? new ServerRegistry()
  const pipeline = retained?.pipeline ?? new CallPipeline(app.log)
  for (const filter of options.filters ?? []) pipeline.add(filter)
  app.decorate('mcpRegistry', registry)
  app.decorate('callPipeline', pipeline)
  app.decorate('gatewayRetained', retained)
  app.decorateRequest('identity', undefined)
  app.decorateReply('gatewayErrorCode', undefined)
  app.decorate('openApiComponents', new Map<string, Record<string, unknown>>())
  // Composed once: every filter a plugin adds is in by now.
  app.addHook('onReady', async () => { pipeline.freeze() })
  // The mount plugins' onClose hooks run first (children close before their parent), so
  // every endpoint is closed before the connections behind it.
  app.addHook('onClose', async () => { if (retained === undefined || retained.closing) await registry.close() })
  app.addSchema(ErrorBody)
  app.addSchema(ServerReadyBody)
  app.addSchema(ReadyBody)
  if (options.disabled !== undefined && !Value.Check(DisabledOption, options.disabled)) {
    throw new InvalidOptionsError('core disabled must be an array of server names')
  }
  app.decorate('disabledServers', options.disabled ?? [])

  // Every route inherits this parser: a body is checked for UTF-8 and nesting depth before
  // anything (JSON.parse, validation, the SDK) recurses over it.
  const maxJsonDepth = options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH
  app.decorate('maxJsonDepth', maxJsonDepth)
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, jsonBodyParser(app, { maxDepth: maxJsonDepth }))

  // Registered before any route, so every route (the tools of each server) is documented.
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: options.title ?? 'MCP Gateway',
        description: 'Every tool of every mounted MCP server as a REST operation. MCP clients use `/<server>/mcp`.',
        version: options.version ?? GATEWAY_INFO.version
      }
    },
    // Shared schemas appear under their `$id` (`GatewayError`, `Readiness`), not `def-0`.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` },
    transformObject (documentObject) {
      const document = 'openapiObject' in documentObject ? documentObject.openapiObject : documentObject.swaggerObject
      if (!('openapi' in document)) return document
      const extra = Object.fromEntries(app.openApiComponents) as Record<string, never>
      document.components = { ...document.components, schemas: { ...document.components?.schemas as Record<string, never>, ...extra } }
      // Read when the document is first asked for, by then the gateway plugin has set them.
      const schemes = securitySchemes(app.gatewaySecurity?.auth)
      if (schemes !== undefined) {
        // Either credential will do, so each scheme is a requirement of its own (OR);
        // Swagger UI's "Authorize" button offers both and sends what is filled in.
        document.components.securitySchemes = schemes as Record<string, never>
        document.security = Object.keys(schemes).map(name => ({ [name]: [] }))
        // The load balancer's probes need no credentials: an empty requirement overrides the global one.
        for (const [path, item] of Object.entries(document.paths ?? {})) {
          if (path === '/health' || path === '/ready' || path.startsWith('/ready/')) {
            for (const operation of Object.values(item as Record<string, { security?: unknown[] }>)) operation.security = []
          }
        }
      }
      return document
    }
  })
  // Both viewers load nothing but the gateway's own files: they work offline, and behind a
  // firewall that lets no page reach a CDN.
  const favicon = { svg: readFileSync(`${ASSETS}favicon.svg`), ico: readFileSync(`${ASSETS}favicon.ico`) }
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    theme: {
      title: `${options.title ?? 'MCP Gateway'} · Swagger UI`,
      favicon: [
        { filename: 'favicon.svg', rel: 'icon', sizes: 'any', type: 'image/svg+xml', content: favicon.svg },
        { filename: 'favicon.ico', rel: 'alternate icon', sizes: '16x16 32x32 48x48', type: 'image/x-icon', content: favicon.ico }
      ]
    }
  })
  // Browsers ask for /favicon.ico whatever the page says; public, like the pages that show it.
  for (const [url, type, body] of [['/favicon.ico', 'image/x-icon', favicon.ico], ['/favicon.svg', 'image/svg+xml', favicon.svg]] as const) {
    app.get(url, { schema: { hide: true }, logLevel: 'warn', config: { public: true } }, async (_request, reply) => {
      return reply.type(type).header('cache-control', 'public, max-age=86400').send(body)
    })
  }

  // ReDoc's sidebar shows Redocly's logo from their CDN (`<img src="https://cdn.redoc.ly/...">`,
  // no option turns it off): the bundle is served with an empty image in its place, and the
  // page's CSP lets no image, font or fetch leave the gateway's origin should a later ReDoc
  // add one.
  const redocBundle = readFileSync(createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js'), 'utf8')
    .replaceAll(REDOCLY_LOGO, EMPTY_IMAGE)
  app.get('/redoc', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('text/html').header('content-security-policy', REDOC_CSP).send(redocPage(options.title ?? 'MCP Gateway'))
  })
  app.get('/redoc/redoc.standalone.js', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('application/javascript').header('cache-control', 'public, max-age=86400').send(redocBundle)
  })

  app.get('/health', {
    schema: {
      tags: ['gateway'],
      operationId: 'health',
      summary: 'Liveness: the process is up and serving HTTP.',
      description: 'Answers 200 whatever the servers\' states, and while the gateway drains: for a liveness probe, which restarts a process that no longer answers. Readiness is `/ready`.',
      response: { 200: withExample(HealthBody, 'The process serves HTTP', { ok: { summary: 'Alive', value: { status: 'ok' } } }) }
    }
  }, async () => ({ status: 'ok' as const }))

  // Readiness is for load balancers: one server that cannot start must not take every healthy
  // one out of rotation, so a server that is down degrades the gateway (200, listed) unless
  // the config marks it `required`.
  const statusOf = ({ name, connection, required }: MountedServer): Static<typeof ServerReadyBody> => ({
    name,
    state: connection.state,
    ...(required === true && { required }),
    tools: connection.tools().length,
    ...(connection.failure !== undefined && { error: connection.failure }),
    ...(connection.retryAfter !== undefined && { retryAfter: connection.retryAfter })
  })
  // Disabled servers are listed after the mounted ones and never count towards readiness.
  const disabledOf = (name: string): Static<typeof ServerReadyBody> => ({ name, state: 'disabled', tools: 0 })
  const disabled = (): Array<Static<typeof ServerReadyBody>> => app.disabledServers.filter(name => !registry.has(name)).map(disabledOf)
  // Under `allOf`: a response that is a bare `$ref` loses its examples in @fastify/swagger.
  const Readiness = { type: 'object', allOf: [Type.Ref('Readiness')] }
  const ServerReadiness = { type: 'object', allOf: [Type.Ref('ServerReadiness')] }
  app.get('/ready', {
    schema: {
      tags: ['gateway'],
      operationId: 'ready',
      summary: 'Readiness, for a load balancer',
      description: ReadyDescription,
      response: {
        200: withExample(Readiness, 'Serving: every enabled server up (`ready`), or some down and listed (`degraded`)', READY_EXAMPLES.serving),
        503: withExample(Readiness, 'Out of rotation: a `required` server is down (`unavailable`), or the gateway drains for shutdown (`draining`)', READY_EXAMPLES.refusing)
      }
    }
  }, async (_request, reply) => {
    const mounted = registry.servers().map(statusOf)
    // Read per request: the redis plugin decorates it after this plugin.
    const cluster = app.gatewayCluster
    const redis = cluster === undefined ? undefined : { status: cluster.available ? 'up' as const : 'down' as const }
    const status = shutdown.draining
      ? 'draining'
      : mounted.some(server => server.required === true && server.state !== 'up')
        ? 'unavailable'
        : mounted.every(server => server.state === 'up') && redis?.status !== 'down' ? 'ready' : 'degraded'
    const servers = [...mounted, ...disabled()]
    const reload = retained?.lastReload
    return reply.code(status === 'ready' || status === 'degraded' ? 200 : 503).send({ status, servers, ...(reload !== undefined && { reload }), ...(redis !== undefined && { redis }) })
  })
  app.get('/ready/:server', {
    schema: {
      tags: ['gateway'],
      operationId: 'readyServer',
      summary: 'Readiness of one server',
      description: 'Readiness of one server: 200 while it is up, 503 while it is not (starting, down, disabled in the config) or the gateway drains; for a load balancer that routes to one server\'s prefix.',
      params: Type.Object({ server: Type.String({ description: 'The server\'s name' }) }),
      response: {
        200: withExample(ServerReadiness, 'The server is up', READY_EXAMPLES.serverUp),
        404: errorResponse([new ServerNotFoundError('nobody')], () => 'no server of that name, mounted or disabled'),
        503: withExample(ServerReadiness, 'The server is not up (starting, down, disabled), or the gateway drains', READY_EXAMPLES.serverDown)
      }
    }
  }, async (request, reply) => {
    const name = (request.params as { server: string }).server
    const mounted = registry.get(name)
    if (mounted === undefined) {
      if (app.disabledServers.includes(name)) return reply.code(503).send(disabledOf(name))
      throw new ServerNotFoundError(name)
    }
    const status = statusOf(mounted)
    return reply.code(status.state === 'up' && !shutdown.draining ? 200 : 503).send(status)
  })

  // Shutdown, in this order: new requests on open connections are refused (503 with
  // `Connection: close`, so clients reconnect elsewhere; /health and /ready still answer),
  // calls in flight get `drainTimeoutMs` to finish, then whatever is left is cancelled by the
  // mounted servers (a JSON-RPC error on its stream, `notifications/cancelled` upstream), and
  // only then do the connections to the servers close (onClose).
  const drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS
  const aborts: Array<() => void | Promise<void>> = []
  let draining = false
  const shutdown: Shutdown = {
    get draining () { return draining },
    onDrainTimeout (abort) { aborts.push(abort) }
  }
  app.decorate('gatewayShutdown', shutdown)
  // After the body is parsed, so an MCP client's refusal carries its request id.
  // A callback hook, not an async one: it runs on every request, and all it does is one test.
  app.addHook('preValidation', (request, _reply, done) => {
    if (draining && request.routeOptions.url !== '/health' && request.routeOptions.url !== '/ready' && request.routeOptions.url !== '/ready/:server') done(new ShuttingDownError())
    else done()
  })
  let drainTimer: NodeJS.Timeout | undefined
  // Node's fetch (undici) opens a spare connection when a client aborts a streaming response
  // (a `subscriptions/listen` stream the SDK client ends, an SSE stream; nodejs/undici#5845)
  // and never sends a request on it. server.close() does not count it as idle and the
  // keep-alive timeout does not apply to it, so close() would wait for the client's own
  // keep-alive (4 s). Nothing was asked on such a connection: it is closed at shutdown.
  const unused = new Set<Socket>()
  const connected = (socket: Socket): void => {
    unused.add(socket)
    socket.once('close', () => { unused.delete(socket) })
  }
  const requested = (request: IncomingMessage): void => { unused.delete(request.socket) }
  // Over HTTPS a request's socket is the TLS one, known once the handshake is done.
  const accepted = app.server instanceof TlsServer ? 'secureConnection' : 'connection'
  app.server.on(accepted, connected)
  app.server.on('request', requested)
  app.addHook('preClose', async () => {
    draining = true
    // A build replaced by a config reload: the server, its connections and every kept
    // endpoint serve on under the next build, so nothing is drained or cut.
    if (retained !== undefined && !retained.closing) return
    // Node's server.close() closes the connections idle at that moment, but a keep-alive
    // connection whose request was still in flight becomes idle afterwards and would hold
    // close() up for Fastify's 72 s keep-alive timeout: once shutdown begins, a connection
    // idles for one millisecond at most.
    app.server.keepAliveTimeout = 1
    for (const socket of unused) socket.destroy()
    drainTimer = setTimeout(() => {
      app.log.warn({ drainTimeoutMs }, 'calls still in flight after the drain timeout: cancelling them')
      for (const abort of aborts) Promise.resolve().then(abort).catch(err => { app.log.warn({ err }, 'cancelling calls in flight failed') })
      // Whatever is left (a request the SDK's own entry holds) has its connection closed,
      // once the answers just written have had a moment to leave.
      setTimeout(() => { app.server.closeAllConnections() }, CUT_AFTER_CANCEL_MS).unref()
    }, drainTimeoutMs).unref()
  })
  app.addHook('onClose', async () => {
    clearTimeout(drainTimer)
    // The server outlives a build replaced by a config reload.
    app.server.off(accepted, connected)
    app.server.off('request', requested)
  })

  app.setNotFoundHandler(async (request) => {
    // Split rather than parsed with `new URL`, which throws on paths such as `//[`.
    const [, server, kind] = request.url.split('?')[0].split('/')
    if (server !== undefined && (kind === 'tools' || kind === 'mcp') && !registry.has(server)) {
      throw new ServerNotFoundError(server)
    }
    throw new RouteNotFoundError(request.method, request.url.split('?')[0])
  })

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const gatewayError = toGatewayError(error, request)
    const statusCode = gatewayError.statusCode ?? 500
    // A refusal is the client's business, and the catalogue's 503s are states rather than
    // faults (a server down logs its own state change once, at warn; draining; full): none is
    // worth a stack per request, which flooded the log while a server was down. Only faults
    // are errors.
    if (statusCode >= 500 && statusCode !== 503) {
      request.log.error({ err: error }, 'request failed')
    } else if (statusCode === 503) {
      request.log.debug({ code: gatewayError.code, message: gatewayError.message }, 'request refused for now')
    } else if (error.code === 'ECONNRESET') {
      // The client went away while its body was being read: there is nobody to answer.
      request.log.debug({ code: error.code, message: error.message }, 'request aborted by the client')
    } else if (options.requestLines === true) {
      // The request's one line (plugins/filters.ts) names the code.
      reply.gatewayErrorCode = gatewayError.code
      request.log.debug({ code: gatewayError.code, message: gatewayError.message }, 'request rejected')
    } else {
      request.log.info({ code: gatewayError.code, message: gatewayError.message }, 'request rejected')
    }
    if (gatewayError.headers !== undefined) void reply.headers(gatewayError.headers)
    return sendError(request, reply, gatewayError)
  })
}

/**
 * The OpenAPI security schemes of the configured credentials, or none when no caller needs
 * any: `bearerAuth` for `Authorization: Bearer` (a JWT when JWTs are configured, else an API
 * key), `apiKey` for the `X-API-Key` header when API keys are configured.
 */
function securitySchemes (auth: AuthOptions | undefined): Record<string, Record<string, string>> | undefined {
  if (auth === undefined || auth.mode !== 'required') return undefined
  const hasKeys = auth.apiKeys.length > 0
  if (!hasKeys && auth.jwt === undefined) return undefined
  return {
    bearerAuth: {
      type: 'http',
      scheme: 'bearer',
      ...(auth.jwt !== undefined && { bearerFormat: 'JWT' }),
      description: auth.jwt !== undefined
        ? `A JWT access token from ${auth.jwt.issuer}${hasKeys ? ', or an API key' : ''}`
        : 'An API key'
    },
    ...(hasKeys && { apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'An API key' } })
  }
}

/**
 * Maps every error onto the catalogue, so clients see one vocabulary of codes: Fastify's own
 * (validation, content type, body) become the gateway's; any other 4xx is a bad request; and
 * anything else that is not one of ours is a fault of the gateway, whose message may carry
 * internals (paths, upstream errors) and so never reaches the client.
 */
function toGatewayError (error: FastifyError, request: FastifyRequest): GatewayError {
  if (error.validation !== undefined) {
    return new InvalidArgumentsError(error.validation.map(issue => ({
      field: fieldOf(issue.instancePath, issue.params),
      message: issue.message ?? 'is invalid'
    })))
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new UnsupportedMediaTypeError(request.headers['content-type'] ?? 'none')
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new BodyTooLargeError(request.routeOptions.bodyLimit ?? 0)
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new InvalidJsonError('the body is empty')
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new InvalidJsonError(error.message)
  }
  if (error instanceof SyntaxError && error.statusCode === 400) return new InvalidJsonError(error.message)
  if (isGatewayError(error)) return error
  const statusCode = error.statusCode ?? 500
  if (statusCode >= 400 && statusCode < 500) {
    const refused = new BadRequestError(error.message)
    refused.statusCode = statusCode
    return refused
  }
  return new InternalError({ cause: error })
}

/** The bad field as a dotted path: `/a/0` → `a.0`; a missing required property names itself. */
function fieldOf (instancePath: string, params: Record<string, unknown>): string {
  const path = instancePath.split('/').filter(Boolean).map(p => p.replaceAll('~1', '/').replaceAll('~0', '~'))
  if (typeof params.missingProperty === 'string') path.push(params.missingProperty)
  if (typeof params.additionalProperty === 'string') path.push(params.additionalProperty)
  return path.join('.')
}

async function sendError (request: FastifyRequest, reply: FastifyReply, error: GatewayError): Promise<FastifyReply> {
  const statusCode = error.statusCode ?? 500
  void reply.code(statusCode).type('application/json')
  if (request.routeOptions.config.mcp === true) {
    // MCP clients read JSON-RPC: the gateway's code travels in `error.data`.
    const body = request.body as { id?: unknown } | undefined
    const id = typeof body?.id === 'string' || typeof body?.id === 'number' ? body.id : null
    return reply.send({ jsonrpc: '2.0', error: { code: jsonRpcCodeFor(statusCode), message: error.message, data: { code: error.code } }, id })
  }
  return reply.send(errorBody(error))
}

/** The gateway's static files (its favicon), beside this file in the sources and two levels up from dist/plugins once built (tsc copies no assets). */
const ASSETS = ((): string => {
  const beside = fileURLToPath(new URL('./status/', import.meta.url))
  return existsSync(beside) ? beside : fileURLToPath(new URL('../../plugins/status/', import.meta.url))
})()

const REDOCLY_LOGO = 'https://cdn.redoc.ly/redoc/logo-mini.svg'
const EMPTY_IMAGE = 'data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22/%3E'

/** ReDoc injects its styles and runs its search in a blob worker; nothing else may come from elsewhere. */
const REDOC_CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

function redocPage (title: string): string {
  return `<!DOCTYPE html>
<html>
  <head>
    <title>${escapeHtml(title)} · ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <link rel="icon" href="/favicon.svg" type="image/svg+xml">
    <link rel="alternate icon" href="/favicon.ico" type="image/x-icon">
  </head>
  <body>
    <redoc spec-url="/docs/json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
`
}

function escapeHtml (text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;')
}

export default fp(core, { name: 'gateway-core', fastify: '5.x' })
