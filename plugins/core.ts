import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import type { AuthInfo } from '@modelcontextprotocol/server'
import { ServerRegistry } from '../src/connections/registry.js'
import { GATEWAY_INFO } from '../src/defaults.js'
import {
  BadRequestError,
  BodyTooLargeError,
  InternalError,
  InvalidArgumentsError,
  InvalidJsonError,
  isGatewayError,
  jsonRpcCodeFor,
  RouteNotFoundError,
  ServerNotFoundError,
  UnsupportedMediaTypeError,
  type GatewayError
} from '../src/errors.js'
import { CallPipeline, type CallFilter } from '../src/pipeline/pipeline.js'
import { ErrorBody, ReadyBody } from '../src/rest/schemas.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every mounted MCP server, whatever its state, and their lifecycle: `/ready`, `/mcp` and the 404 handler read it. */
    mcpRegistry: ServerRegistry
    /** The filters every call to a mounted server passes, on every way in (src/pipeline). */
    callPipeline: CallPipeline
    /** OpenAPI component schemas contributed by mounted servers (tool `$defs`). */
    openApiComponents: Map<string, Record<string, unknown>>
  }
  interface FastifyRequest {
    /** Who is calling, once authenticated; handlers of in-process servers see it as `ctx.http.authInfo`. */
    identity: AuthInfo | undefined
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
}

const ReadyDescription = 'Readiness: every mounted server and its state; 503 while any server is down.'

/**
 * The gateway's cross-cutting parts: the OpenAPI document and its two viewers, one error
 * handler, one not-found handler, and the liveness and readiness endpoints.
 */
async function core (app: FastifyInstance, options: CorePluginOptions): Promise<void> {
  const registry = new ServerRegistry()
  const pipeline = new CallPipeline(app.log)
  for (const filter of options.filters ?? []) pipeline.add(filter)
  app.decorate('mcpRegistry', registry)
  app.decorate('callPipeline', pipeline)
  app.decorateRequest('identity', undefined)
  app.decorate('openApiComponents', new Map<string, Record<string, unknown>>())
  // Composed once: every filter a plugin adds is in by now.
  app.addHook('onReady', async () => { pipeline.freeze() })
  // The mount plugins' onClose hooks run first (children close before their parent), so
  // every endpoint is closed before the connections behind it.
  app.addHook('onClose', async () => { await registry.close() })
  app.addSchema(ErrorBody)

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
    transformObject (documentObject) {
      const document = 'openapiObject' in documentObject ? documentObject.openapiObject : documentObject.swaggerObject
      if (!('openapi' in document)) return document
      const extra = Object.fromEntries(app.openApiComponents) as Record<string, never>
      document.components = { ...document.components, schemas: { ...document.components?.schemas as Record<string, never>, ...extra } }
      return document
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  const redocBundle = readFileSync(createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js'))
  app.get('/redoc', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('text/html').send(REDOC_PAGE)
  })
  app.get('/redoc/redoc.standalone.js', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('application/javascript').header('cache-control', 'public, max-age=86400').send(redocBundle)
  })

  app.get('/health', {
    schema: {
      tags: ['gateway'],
      operationId: 'health',
      summary: 'Liveness: the process is up and serving HTTP.',
      response: { 200: Type.Object({ status: Type.Literal('ok') }) }
    }
  }, async () => ({ status: 'ok' as const }))

  app.get('/ready', {
    schema: {
      tags: ['gateway'],
      operationId: 'ready',
      summary: ReadyDescription,
      response: { 200: ReadyBody, 503: ReadyBody }
    }
  }, async (_request, reply) => {
    const servers = registry.connections().map(connection => ({
      name: connection.name,
      state: connection.state,
      tools: connection.tools().length,
      ...(connection.failure !== undefined && { error: connection.failure }),
      ...(connection.retryAfter !== undefined && { retryAfter: connection.retryAfter })
    }))
    const ready = servers.every(server => server.state === 'up')
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'degraded', servers })
  })

  // Graceful shutdown: Node's server.close() closes the connections idle at that moment, but
  // a keep-alive connection whose request was still in flight becomes idle afterwards and
  // would hold close() up for Fastify's 72 s keep-alive timeout. Once shutdown begins, a
  // connection idles for one millisecond at most.
  app.addHook('preClose', async () => { app.server.keepAliveTimeout = 1 })

  app.setNotFoundHandler(async (request) => {
    const [, server, kind] = new URL(request.url, 'http://gateway').pathname.split('/')
    if (server !== undefined && (kind === 'tools' || kind === 'mcp') && !registry.has(server)) {
      throw new ServerNotFoundError(server)
    }
    throw new RouteNotFoundError(request.method, request.url.split('?')[0])
  })

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const gatewayError = toGatewayError(error, request)
    const statusCode = gatewayError.statusCode ?? 500
    if (statusCode >= 500) {
      request.log.error({ err: error }, 'request failed')
    } else {
      request.log.info({ err: gatewayError }, 'request rejected')
    }
    if (gatewayError.headers !== undefined) void reply.headers(gatewayError.headers)
    return sendError(request, reply, gatewayError)
  })
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
  return reply.send({
    statusCode,
    code: error.code,
    error: STATUS_CODES[statusCode] ?? 'Error',
    message: error.message,
    ...(error.details !== undefined && { details: error.details })
  })
}

const REDOC_PAGE = `<!DOCTYPE html>
<html>
  <head>
    <title>MCP Gateway · ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/docs/json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
`

export default fp(core, { name: 'gateway-core', fastify: '5.x' })
