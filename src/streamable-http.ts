import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  CLIENT_CAPABILITIES_META_KEY,
  CLIENT_INFO_META_KEY,
  classifyInboundRequest,
  PROTOCOL_VERSION_META_KEY,
  createMcpHandler,
  isInitializeRequest,
  isJSONRPCRequest,
  McpServer,
  SUPPORTED_PROTOCOL_VERSIONS,
  type InboundClassificationOutcome,
  type JSONRPCMessage,
  type JSONRPCNotification,
  type JSONRPCRequest,
  type McpHttpHandler,
  type McpRequestContext,
  type Server
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import { toNodeHandler, type NodeMcpRequestHandler } from '@modelcontextprotocol/node'
import type { McpConnection } from './connection.js'
import { acceptsJsonAndSse, hijack, rejectJsonRpc, sseFrame, startSse } from './http-exchange.js'
import { MultiplexTransport } from './multiplex-transport.js'
import { checkParamHeaders, HEADER_MISMATCH, toolParamHeaders } from './param-headers.js'
import { SessionTransport } from './session-transport.js'

export interface StreamableHttpOptions {
  /** No 2025-era sessions: every request is answered on its own (the seed's mode). */
  stateless: boolean
  /** Never upgrade a 2025-era session POST to SSE; mid-call messages go to the GET stream. */
  jsonResponse: boolean
  /** Most 2025-era sessions kept at once; a new `initialize` beyond it answers 503. */
  maxSessions: number
  /** A session with no request for this long is closed. */
  sessionIdleMs: number
  /** Largest request body, in bytes; the same bound Fastify applies to the route. */
  bodyLimit: number
  log: FastifyBaseLogger
}

/**
 * Plain request/response methods: no stream of their own, no server state between calls.
 * Only these take the shared-connection path; everything else (initialize,
 * server/discover, subscriptions/listen, notifications, logging/setLevel, batches) goes to
 * the SDK's HTTP entry, which owns those semantics.
 */
const SHARED_LANE_METHODS = new Set([
  'ping', 'tools/list', 'tools/call', 'prompts/list', 'prompts/get',
  'resources/list', 'resources/templates/list', 'resources/read', 'completion/complete'
])
/** 2026-07-28 removed `ping`; the SDK entry gives the 404 the revision asks for. */
const MODERN_LANE_METHODS = new Set([...SHARED_LANE_METHODS].filter(method => method !== 'ping'))

/**
 * HTTP status of a 2026-07-28 error answer, as the SDK entry gives it: errors are in-band
 * (200) except a missing client capability (400) and a method with no handler, which the
 * entry rejects before dispatch (404). 2025-era errors are always 200.
 */
const MODERN_ERROR_STATUS: Record<number, number> = { [-32601]: 404, [-32021]: 400 }

/**
 * Modern revisions the shared lane serves. The SDK does not export its own list; a revision
 * not named here simply takes the SDK entry, which answers it from that list.
 */
const LANE_MODERN_REVISIONS = new Set(['2026-07-28'])

/** The request field `Mcp-Name` mirrors, per method (2026-07-28 standard headers). */
const NAMED_PARAM: Record<string, string> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' }

/** A 2025-era `MCP-Protocol-Version` header the SDK serves; absent means 2025-03-26. */
function isSupportedLegacyVersion (version: string | string[] | undefined): boolean {
  return version === undefined || (typeof version === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(version))
}

/** A long-lived SDK connection pinned to one protocol era, shared by stateless requests. */
interface Lane {
  era: 'legacy' | 'modern'
  mux: MultiplexTransport
  handle: StdioServerHandle
}

interface Session {
  transport: SessionTransport
  server: McpServer | Server
  lastSeen: number
}

/**
 * Serves one mounted server over Streamable HTTP, both protocol eras on one URL:
 *
 * - 2026-07-28 requests (per-request `_meta` envelope) go to the SDK's `createMcpHandler`,
 *   which owns the validation ladder, `server/discover` and `subscriptions/listen`.
 * - 2025-era requests get a stateful session (`Mcp-Session-Id`, GET stream, DELETE,
 *   server→client requests): one SDK server instance per session, framed on HTTP by
 *   `SessionTransport`; or, with `stateless`, the SDK's stateless fallback answers each
 *   request on its own.
 *
 * The SDK's entry builds a server instance per request, the dominant cost of its stateless
 * path. So ordinary stateless requests (2026-07-28 ones, and 2025-era ones with `stateless`)
 * are answered on a shared lane: one long-lived connection per era, opened with the SDK's
 * own era-pinning entry (`serveStdio`, which takes any transport) over a multiplexing
 * transport. What the lane does not take goes to `createMcpHandler`, whose per-request
 * instances come from a pool: a closed instance is disconnected and reusable, and is never
 * shared by two requests at once.
 *
 * Known difference on the lane: handlers see no `ctx.http` (the HTTP request), as under
 * stdio. Nothing in the gateway passes `authInfo` yet; when authentication lands, requests
 * carrying it must take the SDK entry or the lane must learn to carry it.
 */
export class StreamableHttpEndpoint {
  #connection: McpConnection
  #options: StreamableHttpOptions
  #handler: McpHttpHandler
  #nodeHandler: NodeMcpRequestHandler
  #sessions = new Map<string, Session>()
  #lanes = new Map<string, Lane>()
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
    const server = this.#connection.createServer(ctx, 'shared')
    const protocol = server instanceof McpServer ? server.server : server
    // createMcpHandler chains its own onclose in front of this one and restores it after
    // the exchange, so this runs once each time the instance is released.
    const own = protocol.onclose
    protocol.onclose = () => {
      own?.()
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
    if (route.kind === 'modern' && route.messageKind === 'request' && route.message.method === 'tools/call' && this.#rejectParamHeaders(route.message, request, reply)) return
    const lane = this.#laneFor(route, request)
    if (lane !== undefined) {
      await this.#serveOnLane(lane, request.body as JSONRPCRequest, request, reply)
      return
    }
    if (route.kind !== 'legacy' || this.#options.stateless) {
      const { raw, res } = hijack(request, reply)
      await this.#nodeHandler(raw, res, request.body)
      return
    }
    await this.#handleSession(request, reply)
  }

  /**
   * Checks a 2026-07-28 `tools/call` against the `Mcp-Param-*` headers its tool declares
   * and answers a disagreement (400, -32020); true when it did. The SDK checks them only for
   * its own `McpServer`, and a relayed server is not one, so the gateway checks every tool
   * here, against the tool list of the moment (an upstream's may change).
   */
  #rejectParamHeaders (message: JSONRPCRequest, request: FastifyRequest, reply: FastifyReply): boolean {
    const name = message.params?.name
    const tool = this.#connection.tools().find(candidate => candidate.name === name)
    if (tool === undefined) return false
    const declared = toolParamHeaders(tool)
    if (declared.length === 0) return false
    const mismatch = checkParamHeaders(declared, message.params?.arguments, request.headers)
    if (mismatch === undefined) return false
    this.#options.log.debug({ mismatch: mismatch.data.mismatch }, 'mcp request rejected')
    rejectJsonRpc(reply, 400, HEADER_MISMATCH, mismatch.message, message.id, mismatch.data)
    return true
  }

  /**
   * The shared lane for this request, when it may take one: a plain request whose
   * transport-level checks (Accept, protocol version, standard headers) all hold. Anything
   * irregular goes to the SDK entry, so clients get the SDK's own answers to bad requests.
   */
  #laneFor (route: InboundClassificationOutcome, request: FastifyRequest): Lane | undefined {
    if (!acceptsJsonAndSse(request)) return undefined
    const version = request.headers['mcp-protocol-version']
    if (route.kind === 'modern') {
      if (route.messageKind !== 'request') return undefined
      const message = route.message
      const revision = route.classification.revision
      if (revision === undefined || !LANE_MODERN_REVISIONS.has(revision) || version !== revision) return undefined
      if (!MODERN_LANE_METHODS.has(message.method) || request.headers['mcp-method'] !== message.method) return undefined
      const named = NAMED_PARAM[message.method]
      if (named !== undefined && request.headers['mcp-name'] !== message.params?.[named]) return undefined
      return this.#lane(revision, 'modern')
    }
    if (route.kind !== 'legacy' || !this.#options.stateless || request.method !== 'POST') return undefined
    if (!isJSONRPCRequest(request.body) || !SHARED_LANE_METHODS.has(request.body.method)) return undefined
    if (!isSupportedLegacyVersion(version)) return undefined
    return this.#lane('legacy', 'legacy')
  }

  #lane (key: string, era: 'legacy' | 'modern'): Lane {
    let lane = this.#lanes.get(key)
    if (lane === undefined) {
      // A list change announced by the shared instance reaches the 2026-07-28 clients
      // listening for it on `subscriptions/listen` streams, which the SDK entry serves.
      const mux = new MultiplexTransport({ onUnrelated: message => { this.#publish(message) } })
      const handle = serveStdio(ctx => this.#connection.createServer(ctx, 'shared'), {
        transport: mux,
        legacy: era === 'modern' ? 'reject' : 'serve',
        onerror: err => { this.#options.log.debug({ err }, 'mcp lane error') }
      })
      if (era === 'modern') {
        // Under this entry a 2026-07-28 instance's list changes go only to listen
        // subscriptions on its own connection, so the gateway holds one open for the
        // lifetime of the lane and passes what arrives to the HTTP listen streams.
        mux.request({
          jsonrpc: '2.0',
          id: 0,
          method: 'subscriptions/listen',
          params: {
            notifications: { toolsListChanged: true, promptsListChanged: true, resourcesListChanged: true },
            _meta: {
              [PROTOCOL_VERSION_META_KEY]: key,
              [CLIENT_INFO_META_KEY]: { name: 'fastify-mcp-gateway', version: '1.0.0' },
              [CLIENT_CAPABILITIES_META_KEY]: {}
            }
          }
        }, { respond () {}, notify () {} })
      }
      lane = { era, mux, handle }
      this.#lanes.set(key, lane)
    }
    return lane
  }

  #publish (message: JSONRPCNotification): void {
    const notify = this.#handler.notify
    switch (message.method) {
      case 'notifications/tools/list_changed': notify.toolsChanged(); break
      case 'notifications/prompts/list_changed': notify.promptsChanged(); break
      case 'notifications/resources/list_changed': notify.resourcesChanged(); break
      case 'notifications/resources/updated':
        if (typeof message.params?.uri === 'string') notify.resourceUpdated(message.params.uri)
        break
    }
  }

  /** Answers one request on a lane: JSON, or SSE once the server sends a related notification. */
  async #serveOnLane (lane: Lane, message: JSONRPCRequest, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const res = reply.raw
    let streaming = false
    let done = false
    let id = 0
    await new Promise<void>(resolve => {
      const onClose = (): void => {
        if (done) return
        done = true
        lane.mux.cancel(id, 'the HTTP client disconnected')
        resolve()
      }
      res.once('close', onClose)
      id = lane.mux.request(message, {
        notify: (notification: JSONRPCMessage) => {
          if (done) return
          if (!streaming) {
            streaming = true
            hijack(request, reply)
            startSse(res)
          }
          res.write(sseFrame(notification))
        },
        respond: (response: JSONRPCMessage) => {
          if (done) return
          done = true
          res.off('close', onClose)
          if (streaming) {
            res.end(sseFrame(response))
          } else {
            const status = lane.era === 'modern' && 'error' in response ? MODERN_ERROR_STATUS[response.error.code] ?? 200 : 200
            void reply.code(status).type('application/json').send(JSON.stringify(response))
          }
          resolve()
        }
      })
    })
  }

  /**
   * 2025-era sessions. The SDK server of each session owns the protocol; the transport only
   * frames its messages on HTTP. Transport-level checks answer as the SDK's session
   * transport does, with the same statuses.
   */
  async #handleSession (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const sessionId = request.headers['mcp-session-id']
    const version = request.headers['mcp-protocol-version']
    if (!isSupportedLegacyVersion(version)) {
      rejectJsonRpc(reply, 400, -32000, `Bad Request: Unsupported protocol version: ${String(version)} (supported versions: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`)
      return
    }
    if (request.method === 'POST' && !acceptsJsonAndSse(request)) {
      rejectJsonRpc(reply, 406, -32000, 'Not Acceptable: Client must accept both application/json and text/event-stream')
      return
    }
    if (typeof sessionId !== 'string') {
      await this.#openSession(request, reply)
      return
    }
    const session = this.#sessions.get(sessionId)
    if (session === undefined) {
      rejectJsonRpc(reply, 404, -32001, 'Session not found')
      return
    }
    session.lastSeen = Date.now()
    const transport = session.transport
    switch (request.method) {
      case 'GET':
        if (!(request.headers.accept ?? '').includes('text/event-stream')) {
          rejectJsonRpc(reply, 406, -32000, 'Not Acceptable: Client must accept text/event-stream')
          return
        }
        const lastEventId = request.headers['last-event-id']
        if (typeof lastEventId === 'string') {
          const resumed = transport.resume(lastEventId, request, reply)
          if (resumed === false) rejectJsonRpc(reply, 400, -32000, `Bad Request: no stream to resume after event '${lastEventId}'`)
          else await resumed
          return
        }
        if (transport.hasStandaloneStream) {
          rejectJsonRpc(reply, 409, -32000, 'Conflict: Only one SSE stream is allowed per session')
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
          rejectJsonRpc(reply, 400, -32600, 'Invalid Request: Server already initialized')
          return
        }
        await transport.handlePost(body, request, reply)
      }
    }
  }

  async #openSession (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (request.method !== 'POST' || !isInitializeRequest(request.body)) {
      rejectJsonRpc(reply, 400, -32000, 'Bad Request: Mcp-Session-Id header is required')
      return
    }
    if (this.#closing) {
      rejectJsonRpc(reply, 503, -32000, 'Server is shutting down')
      return
    }
    if (this.#sessions.size >= this.#options.maxSessions) {
      rejectJsonRpc(reply, 503, -32000, `Too many sessions (limit ${this.#options.maxSessions})`)
      return
    }
    const id = randomUUID()
    const transport = new SessionTransport(id, { jsonResponse: this.#options.jsonResponse })
    const server = this.#connection.createServer(undefined, 'session')
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

  /**
   * First step of shutdown (preClose): refuse new sessions and end the streams that would
   * never end on their own (sessions' GET streams, `subscriptions/listen` streams), so the
   * server can close. Calls in flight are left to finish.
   */
  async closeStreams (): Promise<void> {
    this.#closing = true
    clearInterval(this.#sweeper)
    for (const session of this.#sessions.values()) session.transport.endStandaloneStream()
    await this.#handler.close()
  }

  /** Last step of shutdown (onClose), once in-flight requests are done: release everything. */
  async close (): Promise<void> {
    await this.closeStreams()
    const sessions = [...this.#sessions.values()]
    this.#sessions.clear()
    await Promise.allSettled(sessions.map(async s => { await s.transport.close(); await s.server.close() }))
    const lanes = [...this.#lanes.values()]
    this.#lanes.clear()
    await Promise.allSettled(lanes.map(lane => lane.handle.close()))
    const pooled = [...this.#pools.legacy, ...this.#pools.modern]
    this.#pools = { legacy: [], modern: [] }
    await Promise.allSettled(pooled.map(s => s.close()))
  }
}

