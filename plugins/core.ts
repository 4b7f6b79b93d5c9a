import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import type { McpConnection } from '../src/connection.js'
import {
  BodyTooLargeError,
  InvalidArgumentsError,
  InvalidJsonError,
  RouteNotFoundError,
  ServerNotFoundError,
  UnsupportedMediaTypeError
} from '../src/errors.js'
import { ErrorBody, ReadyBody } from '../src/rest-schemas.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every mounted MCP server by name, whatever its state: `/ready` and the 404 handler read it. */
    mcpServers: Map<string, McpConnection>
    /** OpenAPI component schemas contributed by mounted servers (tool `$defs`). */
    openApiComponents: Map<string, Record<string, unknown>>
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
}

const ReadyDescription = 'Readiness: every mounted server and its state; 503 while any server is down.'

/**
 * The gateway's cross-cutting parts: the OpenAPI document and its two viewers, one error
 * handler, one not-found handler, and the liveness and readiness endpoints.
 */
async function core (app: FastifyInstance, options: CorePluginOptions): Promise<void> {
  app.decorate('mcpServers', new Map<string, McpConnection>())
  app.decorate('openApiComponents', new Map<string, Record<string, unknown>>())
  app.addSchema(ErrorBody)

  // Registered before any route, so every route (the tools of each server) is documented.
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: options.title ?? 'MCP Gateway',
        description: 'Every tool of every mounted MCP server as a REST operation. MCP clients use `/<server>/mcp`.',
        version: options.version ?? '0.1.0'
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
    const servers = [...app.mcpServers.values()].map(connection => ({
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
    if (server !== undefined && (kind === 'tools' || kind === 'mcp') && !app.mcpServers.has(server)) {
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
    const retryAfter = (gatewayError as { retryAfter?: number }).retryAfter
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter))
    // A 5xx message may carry internals (paths, upstream errors): clients get the code only,
    // unless the error is one of ours, whose messages are written for clients.
    const message = statusCode >= 500 && !isGatewayCode(gatewayError.code)
      ? 'Internal server error'
      : gatewayError.message
    const code = isGatewayCode(gatewayError.code) ? gatewayError.code : statusCode >= 500 ? 'GW_ERR_INTERNAL' : gatewayError.code ?? 'GW_ERR_BAD_REQUEST'
    return sendError(request, reply, statusCode, code, message, (gatewayError as { details?: unknown }).details)
  })
}

function isGatewayCode (code: string | undefined): code is string {
  return code !== undefined && code.startsWith('GW_ERR_')
}

/** Maps Fastify's own errors onto the gateway's, so clients see one vocabulary of codes. */
function toGatewayError (error: FastifyError, request: FastifyRequest): FastifyError & { details?: unknown } {
  if (error.validation !== undefined) {
    const details = error.validation.map(issue => ({
      field: fieldOf(issue.instancePath, issue.params),
      message: issue.message ?? 'is invalid'
    }))
    const summary = details.map(d => d.field === '' ? d.message : `'${d.field}' ${d.message}`).join('; ')
    return Object.assign(new InvalidArgumentsError(summary), { details })
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new UnsupportedMediaTypeError(request.headers['content-type'] ?? 'none')
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new BodyTooLargeError(request.routeOptions.bodyLimit ?? 0)
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new InvalidJsonError('the body is empty')
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new InvalidJsonError(error.message)
  }
  if (error instanceof SyntaxError && error.statusCode === 400) return new InvalidJsonError(error.message)
  return error
}

/** The bad field as a dotted path: `/a/0` → `a.0`; a missing required property names itself. */
function fieldOf (instancePath: string, params: Record<string, unknown>): string {
  const path = instancePath.split('/').filter(Boolean).map(p => p.replaceAll('~1', '/').replaceAll('~0', '~'))
  if (typeof params.missingProperty === 'string') path.push(params.missingProperty)
  if (typeof params.additionalProperty === 'string') path.push(params.additionalProperty)
  return path.join('.')
}

const JSON_RPC_CODES: Record<number, number> = { 400: -32600, 404: -32601, 413: -32600, 415: -32600 }

async function sendError (request: FastifyRequest, reply: FastifyReply, statusCode: number, code: string, message: string, details?: unknown): Promise<FastifyReply> {
  void reply.code(statusCode).type('application/json')
  if (request.routeOptions.config.mcp === true) {
    // MCP clients read JSON-RPC: the gateway's code travels in `error.data`.
    const body = request.body as { id?: unknown } | undefined
    const id = typeof body?.id === 'string' || typeof body?.id === 'number' ? body.id : null
    return reply.send({ jsonrpc: '2.0', error: { code: JSON_RPC_CODES[statusCode] ?? -32000, message, data: { code } }, id })
  }
  return reply.send({
    statusCode,
    code,
    error: STATUS_CODES[statusCode] ?? 'Error',
    message,
    ...(details !== undefined && { details })
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
