import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  isInitializeRequest,
  SUPPORTED_PROTOCOL_VERSIONS,
  type JSONRPCMessage,
  type McpServer,
  type Server
} from '@modelcontextprotocol/server'
import type { McpConnection } from '../connections/connection.js'
import { JsonRpcCode } from '../errors.js'
import type { CallPipeline } from '../pipeline/pipeline.js'
import { SessionTransport } from './session-transport.js'
import { acceptsJsonAndSse, isSupportedLegacyVersion, rejectJsonRpc } from './sse.js'

export interface SessionOptions {
  /** Never upgrade a 2025-era session POST to SSE; mid-call messages go to the GET stream. */
  jsonResponse: boolean
  /** Most 2025-era sessions kept at once; a new `initialize` beyond it answers 503. */
  maxSessions: number
  /** A session with no request for this long is closed. */
  sessionIdleMs: number
  pipeline: CallPipeline | undefined
  log: FastifyBaseLogger
}

interface Session {
  transport: SessionTransport
  server: McpServer | Server
  lastSeen: number
}

/**
 * The 2025-era sessions of one mounted server: one SDK server instance per session, framed
 * on HTTP by `SessionTransport`. The SDK server owns the protocol; transport-level checks
 * answer as the SDK's session transport does, with the same statuses.
 */
export class SessionTable {
  #connection: McpConnection
  #options: SessionOptions
  #sessions = new Map<string, Session>()
  #sweeper: NodeJS.Timeout
  #closing = false

  constructor (connection: McpConnection, options: SessionOptions) {
    this.#connection = connection
    this.#options = options
    this.#sweeper = setInterval(() => { this.#sweep() }, Math.min(options.sessionIdleMs, 60_000))
    this.#sweeper.unref()
  }

  get size (): number { return this.#sessions.size }

  async handle (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const sessionId = request.headers['mcp-session-id']
    const version = request.headers['mcp-protocol-version']
    if (!isSupportedLegacyVersion(version)) {
      rejectJsonRpc(reply, 400, JsonRpcCode.ServerError, `Bad Request: Unsupported protocol version: ${String(version)} (supported versions: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`)
      return
    }
    if (request.method === 'POST' && !acceptsJsonAndSse(request)) {
      rejectJsonRpc(reply, 406, JsonRpcCode.ServerError, 'Not Acceptable: Client must accept both application/json and text/event-stream')
      return
    }
    if (typeof sessionId !== 'string') {
      await this.#open(request, reply)
      return
    }
    const session = this.#sessions.get(sessionId)
    if (session === undefined) {
      rejectJsonRpc(reply, 404, JsonRpcCode.SessionNotFound, 'Session not found')
      return
    }
    session.lastSeen = Date.now()
    const transport = session.transport
    switch (request.method) {
      case 'GET':
        if (!(request.headers.accept ?? '').includes('text/event-stream')) {
          rejectJsonRpc(reply, 406, JsonRpcCode.ServerError, 'Not Acceptable: Client must accept text/event-stream')
          return
        }
        const lastEventId = request.headers['last-event-id']
        if (typeof lastEventId === 'string') {
          const resumed = transport.resume(lastEventId, request, reply)
          if (resumed === false) rejectJsonRpc(reply, 400, JsonRpcCode.ServerError, `Bad Request: no stream to resume after event '${lastEventId}'`)
          else await resumed
          return
        }
        if (transport.hasStandaloneStream) {
          rejectJsonRpc(reply, 409, JsonRpcCode.ServerError, 'Conflict: Only one SSE stream is allowed per session')
          return
        }
        await transport.handleGet(request, reply)
        return
      case 'DELETE':
        await transport.close()
        void reply.code(200).send()
        return
      default: {
        const body = request.body as JSONRPCMessage | JSONRPCMessage[]
        if ((Array.isArray(body) ? body : [body]).some(message => isInitializeRequest(message))) {
          rejectJsonRpc(reply, 400, JsonRpcCode.InvalidRequest, 'Invalid Request: Server already initialized')
          return
        }
        await transport.handlePost(body, request, reply)
      }
    }
  }

  async #open (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (request.method !== 'POST' || !isInitializeRequest(request.body)) {
      rejectJsonRpc(reply, 400, JsonRpcCode.ServerError, 'Bad Request: Mcp-Session-Id header is required')
      return
    }
    if (this.#closing) {
      rejectJsonRpc(reply, 503, JsonRpcCode.ServerError, 'Server is shutting down')
      return
    }
    if (this.#sessions.size >= this.#options.maxSessions) {
      rejectJsonRpc(reply, 503, JsonRpcCode.ServerError, `Too many sessions (limit ${this.#options.maxSessions})`)
      return
    }
    const id = randomUUID()
    const transport = new SessionTransport(id, { jsonResponse: this.#options.jsonResponse })
    const created = this.#connection.createServer(undefined, 'session')
    const server = this.#options.pipeline?.wrapServer(created, { server: this.#connection.name, scope: 'session', requestIdOf: id => transport.requestIdOf(id) }) ?? created
    transport.onclose = () => { this.#forget(id) }
    await server.connect(transport)
    this.#sessions.set(id, { transport, server, lastSeen: Date.now() })
    this.#options.log.debug({ sessionId: id }, 'mcp session opened')
    await transport.handlePost(request.body as unknown as JSONRPCMessage, request, reply)
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
      // A client holding the GET stream open is listening, not idle.
      if (session.lastSeen < idleSince && !session.transport.hasStandaloneStream) {
        this.#options.log.info({ sessionId: id }, 'closing idle mcp session')
        // The transport's onclose forgets the session and closes its server.
        session.transport.close().catch(() => {})
      }
    }
  }

  /** First step of shutdown: refuse new sessions and end the GET streams, which never end on their own. */
  closeStreams (): void {
    this.#closing = true
    clearInterval(this.#sweeper)
    for (const session of this.#sessions.values()) session.transport.endStandaloneStream()
  }

  /** Last step of shutdown, once in-flight requests are done. */
  async close (): Promise<void> {
    this.closeStreams()
    const sessions = [...this.#sessions.values()]
    this.#sessions.clear()
    await Promise.allSettled(sessions.map(async s => { await s.transport.close(); await s.server.close() }))
  }
}
