import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  classifyInboundRequest,
  createMcpHandler,
  isInitializeRequest,
  McpServer,
  type McpHttpHandler,
  type McpRequestContext,
  type Server
} from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport, toNodeHandler, type NodeMcpRequestHandler } from '@modelcontextprotocol/node'
import type { McpConnection } from './connection.js'

export interface StreamableHttpOptions {
  /** No 2025-era sessions: every request is answered on its own (the seed's mode). */
  stateless: boolean
  /** Answer 2025-era session requests with one JSON body instead of an SSE stream. */
  jsonResponse: boolean
  /** Most 2025-era sessions kept at once; a new `initialize` beyond it answers 503. */
  maxSessions: number
  /** A session with no request for this long is closed. */
  sessionIdleMs: number
  /** Largest request body, in bytes; the same bound Fastify applies to the route. */
  bodyLimit: number
  log: FastifyBaseLogger
}

interface Session {
  transport: NodeStreamableHTTPServerTransport
  server: McpServer | Server
  lastSeen: number
}

/**
 * Serves one mounted server over Streamable HTTP, both protocol eras on one URL:
 *
 * - 2026-07-28 requests (per-request `_meta` envelope) go to the SDK's `createMcpHandler`,
 *   which owns the validation ladder, `server/discover` and `subscriptions/listen`.
 * - 2025-era requests get a stateful session (`Mcp-Session-Id`, GET stream, DELETE,
 *   server→client requests), one SDK transport and server instance per session; or, with
 *   `stateless`, the SDK's stateless fallback answers each request on its own.
 *
 * The SDK's entry builds a server instance per request. Building one is the dominant cost
 * of its stateless path, so per-request instances come from a pool: a closed instance is
 * disconnected and reusable, and instances are never shared by two requests at once.
 */
export class StreamableHttpEndpoint {
  #connection: McpConnection
  #options: StreamableHttpOptions
  #handler: McpHttpHandler
  #nodeHandler: NodeMcpRequestHandler
  #sessions = new Map<string, Session>()
  #pools: Record<'legacy' | 'modern', Array<McpServer | Server>> = { legacy: [], modern: [] }
  #sweeper: NodeJS.Timeout
  #closing = false

  constructor (connection: McpConnection, options: StreamableHttpOptions) {
    this.#connection = connection
    this.#options = options
    this.#handler = createMcpHandler(ctx => this.#pooledServer(ctx), {
      legacy: options.stateless ? 'stateless' : 'reject',
      maxRequestBodySize: options.bodyLimit,
      onerror: err => { options.log.debug({ err }, 'mcp request rejected') }
    })
    this.#nodeHandler = toNodeHandler(this.#handler, {
      maxRequestBodySize: options.bodyLimit,
      onerror: err => { options.log.error({ err }, 'mcp handler failed') }
    })
    this.#sweeper = setInterval(() => { this.#sweep() }, Math.min(options.sessionIdleMs, 60_000))
    this.#sweeper.unref()
  }

  get sessionCount (): number { return this.#sessions.size }

  #pooledServer (ctx: McpRequestContext): McpServer | Server {
    const pool = this.#pools[ctx.era]
    const reused = pool.pop()
    if (reused !== undefined) return reused
    const server = this.#connection.createServer(ctx)
    const protocol = server instanceof McpServer ? server.server : server
    // createMcpHandler chains its own onclose in front of this one and restores it after
    // the exchange, so this runs once each time the instance is released.
    protocol.onclose = () => {
      if (!this.#closing && !pool.includes(server)) pool.push(server)
    }
    return server
  }

  /** Handles POST, GET and DELETE on `/<server>/mcp`. */
  async handle (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const headers = request.headers
    const route = classifyInboundRequest({
      httpMethod: request.method,
      body: request.body,
      ...(typeof headers['mcp-protocol-version'] === 'string' && { protocolVersionHeader: headers['mcp-protocol-version'] }),
      ...(typeof headers['mcp-method'] === 'string' && { mcpMethodHeader: headers['mcp-method'] }),
      ...(typeof headers['mcp-name'] === 'string' && { mcpNameHeader: headers['mcp-name'] })
    })
    const { raw, res } = hijack(request, reply)
    if (route.kind !== 'legacy' || this.#options.stateless) {
      await this.#nodeHandler(raw, res, request.body)
      return
    }
    await this.#handleSession(request, raw, res)
  }

  async #handleSession (request: FastifyRequest, raw: IncomingMessage, res: ServerResponse): Promise<void> {
    const sessionId = request.headers['mcp-session-id']
    if (typeof sessionId === 'string') {
      const session = this.#sessions.get(sessionId)
      if (session === undefined) {
        sendJsonRpcError(res, 404, -32001, 'Session not found')
        return
      }
      session.lastSeen = Date.now()
      await session.transport.handleRequest(raw, res, request.body)
      return
    }
    if (request.method !== 'POST' || !isInitializeRequest(request.body)) {
      sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required')
      return
    }
    if (this.#closing) {
      sendJsonRpcError(res, 503, -32000, 'Server is shutting down')
      return
    }
    if (this.#sessions.size >= this.#options.maxSessions) {
      sendJsonRpcError(res, 503, -32000, `Too many sessions (limit ${this.#options.maxSessions})`)
      return
    }
    const server = this.#connection.createServer()
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: randomUUID,
      enableJsonResponse: this.#options.jsonResponse,
      maxRequestBodySize: this.#options.bodyLimit,
      onsessioninitialized: id => {
        this.#sessions.set(id, { transport, server, lastSeen: Date.now() })
        this.#options.log.debug({ sessionId: id }, 'mcp session opened')
      },
      onsessionclosed: id => { this.#forget(id) }
    })
    transport.onclose = () => { if (transport.sessionId !== undefined) this.#forget(transport.sessionId) }
    await server.connect(transport)
    await transport.handleRequest(raw, res, request.body)
  }

  #forget (id: string): void {
    const session = this.#sessions.get(id)
    if (session === undefined) return
    this.#sessions.delete(id)
    this.#options.log.debug({ sessionId: id }, 'mcp session closed')
    session.server.close().catch(err => { this.#options.log.warn({ err }, 'closing mcp session failed') })
  }

  #sweep (): void {
    const idleSince = Date.now() - this.#options.sessionIdleMs
    for (const [id, session] of this.#sessions) {
      if (session.lastSeen < idleSince) {
        this.#options.log.info({ sessionId: id }, 'closing idle mcp session')
        session.transport.close().catch(() => {})
        this.#forget(id)
      }
    }
  }

  /** Ends open SSE streams and sessions so in-flight streams do not hold up shutdown. */
  async closeStreams (): Promise<void> {
    this.#closing = true
    clearInterval(this.#sweeper)
    const sessions = [...this.#sessions.values()]
    this.#sessions.clear()
    await Promise.allSettled(sessions.map(async s => { await s.transport.close(); await s.server.close() }))
    await this.#handler.close()
  }

  async close (): Promise<void> {
    await this.closeStreams()
    const pooled = [...this.#pools.legacy, ...this.#pools.modern]
    this.#pools = { legacy: [], modern: [] }
    await Promise.allSettled(pooled.map(s => s.close()))
  }
}

/**
 * Takes the response away from Fastify for the SDK transport. After `hijack()` Fastify sends
 * nothing on our behalf, so headers set by earlier hooks (request id, CORS) are copied over.
 */
function hijack (request: FastifyRequest, reply: FastifyReply): { raw: IncomingMessage, res: ServerResponse } {
  const res = reply.raw
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value)
  }
  reply.hijack()
  return { raw: request.raw, res }
}

function sendJsonRpcError (res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }))
}
