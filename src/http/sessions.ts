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
import { JsonRpcCode, toJsonRpcError, TooManySessionsError } from '../errors.js'
import { callerKey } from '../mcp/input-rounds.js'
import { carryOrigin, interceptHandlers } from '../mcp/handlers.js'
import type { CallPipeline } from '../pipeline/pipeline.js'
import { SessionTransport } from './session-transport.js'
import type { Refusal, Replica, SessionSignal, SharedSessions } from './shared-sessions.js'
import { acceptsJsonAndSse, isSupportedLegacyVersion, rejectJsonRpc } from './sse.js'

export interface SessionOptions {
  /** Never upgrade a 2025-era session POST to SSE; mid-call messages go to the GET stream. */
  jsonResponse: boolean
  /**
   * Most 2025-era sessions kept at once; a new `initialize` beyond it closes the least
   * recently used session with no call in flight, or answers 503 when every one has a call.
   */
  maxSessions: number
  /** A session with no request for this long is closed (an open GET stream is not a request). */
  sessionIdleMs: number
  /** Longest life of a session's GET stream, after which the client reconnects. */
  maxStreamLifetimeMs: number
  pipeline: CallPipeline | undefined
  /** The sessions' records and channels, when other gateway instances serve them too; absent alone. */
  shared?: SharedSessions
  log: FastifyBaseLogger
}

interface Session {
  transport: SessionTransport
  server: McpServer | Server
  /** When the session's last POST came; the table's order follows it. */
  lastSeen: number
  /** Who opened it (`callerKey`): a request with another identity's credentials does not find it. */
  caller: string
  /** With other instances: when this one last touched the session's record, and its ear on the session's channel. */
  shared?: { touchedAt: number, unsubscribe: () => void }
}

/**
 * `isInitializeRequest`, asked only of a message named `initialize`: its schema requires that
 * method, and a zod parse that fails (every other message of a session) costs microseconds.
 */
function isInitialize (message: unknown): boolean {
  return (message as { method?: unknown } | null)?.method === 'initialize' && isInitializeRequest(message)
}

/** Why a session is not served here, beyond the store's reasons: no room, or shutting down. */
type NotServed = Refusal | 'full' | 'closing'

/**
 * `Retry-After` of a refused `initialize` when every session has a call in flight, in
 * seconds: a session becomes evictable as soon as its call answers, and most answer within
 * seconds; a longer wait would only keep a client out for longer than it needs.
 */
const SESSIONS_BUSY_RETRY_AFTER_S = 5

/**
 * The 2025-era sessions of one mounted server: one SDK server instance per session, framed
 * on HTTP by `SessionTransport`. The SDK server owns the protocol; transport-level checks
 * answer as the SDK's session transport does, with the same statuses.
 *
 * The table is bounded without locking anyone out: at `maxSessions` a new session closes
 * the least recently used one with no call in flight (the spec's answer for a session the
 * server ended: its client gets 404 and initializes again). The map is kept in order of use
 * (a session is re-inserted on each POST), so the oldest come first, for eviction and for
 * the idle sweep alike.
 */
export class SessionTable {
  #connection: McpConnection
  #options: SessionOptions
  /** In order of last use, least recent first. */
  #sessions = new Map<string, Session>()
  /** Sessions past the cap check, still connecting their server: they hold a slot. */
  #opening = 0
  #sweeper: NodeJS.Timeout
  #closing = false
  #shared: SharedSessions | undefined
  /** Replicas being made, by session id: concurrent requests of one session wait for one replica. */
  #adopting = new Map<string, Promise<Session | NotServed>>()

  constructor (connection: McpConnection, options: SessionOptions) {
    this.#connection = connection
    this.#options = options
    this.#shared = options.shared
    this.#sweeper = setInterval(() => { this.#sweep() }, Math.min(options.sessionIdleMs, 60_000))
    this.#sweeper.unref()
  }

  get size (): number { return this.#sessions.size }

  /** Sessions with their GET (SSE) stream open; counted when asked (a metrics scrape), not kept. */
  get streamCount (): number {
    let open = 0
    for (const session of this.#sessions.values()) if (session.transport.hasStandaloneStream) open++
    return open
  }

  /** The revision a session negotiated, if it exists and has been initialized. */
  protocolVersionOf (sessionId: string): string | undefined {
    return this.#sessions.get(sessionId)?.transport.protocolVersion
  }

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
    let session = this.#sessions.get(sessionId)
    if (session === undefined && this.#shared !== undefined) {
      // Another instance opened it, or this one dropped its replica (idle, evicted).
      const adopted = await this.#adopt(sessionId, callerKey(request.identity))
      if (typeof adopted === 'string') {
        this.#refuse(adopted, reply)
        return
      }
      session = adopted
    }
    // A session id is not a credential: presented by another caller it is unknown, so a
    // leaked or guessed id gives nobody else the session (MCP spec, security best practices:
    // session hijacking).
    if (session === undefined || session.caller !== callerKey(request.identity)) {
      rejectJsonRpc(reply, 404, JsonRpcCode.SessionNotFound, 'Session not found')
      return
    }
    if (request.method === 'POST') {
      // Re-inserting keeps the map in order of use. A GET is not use: a held stream alone
      // must not keep an abandoned session alive.
      session.lastSeen = Date.now()
      this.#sessions.delete(sessionId)
      this.#sessions.set(sessionId, session)
      if (session.shared !== undefined) this.#shared?.touch(sessionId, session.shared)
    }
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
          if (resumed !== false) await resumed
          else if (this.#shared === undefined || !(await this.#resumeElsewhere(this.#shared, sessionId, transport, lastEventId, request, reply))) {
            if (!reply.sent) rejectJsonRpc(reply, 400, JsonRpcCode.ServerError, `Bad Request: no stream to resume after event '${lastEventId}'`)
          }
          return
        }
        if (transport.hasStandaloneStream) {
          rejectJsonRpc(reply, 409, JsonRpcCode.ServerError, 'Conflict: Only one SSE stream is allowed per session')
          return
        }
        await transport.handleGet(request, reply)
        return
      case 'DELETE':
        if (this.#shared !== undefined) {
          // The record first: a replica elsewhere must not outlive a session its client ended.
          try {
            await this.#shared.delete(sessionId)
          } catch (err) {
            this.#shared.unavailable(reply, err)
            return
          }
        }
        await transport.close()
        void reply.code(200).send()
        return
      default: {
        const body = request.body as JSONRPCMessage | JSONRPCMessage[]
        if (Array.isArray(body) ? body.some(isInitialize) : isInitialize(body)) {
          rejectJsonRpc(reply, 400, JsonRpcCode.InvalidRequest, 'Invalid Request: Server already initialized')
          return
        }
        if (this.#shared !== undefined) this.#shareLevel(this.#shared, sessionId, body)
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
    if (this.#sessions.size + this.#opening >= this.#options.maxSessions && !this.#evictOne()) {
      const err = new TooManySessionsError(this.#connection.name, this.#options.maxSessions, SESSIONS_BUSY_RETRY_AFTER_S)
      const rpc = toJsonRpcError(err, this.#connection.name)
      reply.headers(err.headers)
      rejectJsonRpc(reply, err.statusCode ?? 503, rpc.code, rpc.message, null, rpc.data)
      return
    }
    const id = randomUUID()
    const caller = callerKey(request.identity)
    let shared: Session['shared']
    if (this.#shared !== undefined) {
      // Stored before the client learns the id: its next request may reach another instance.
      try {
        const params = (request.body as { params?: Record<string, unknown> }).params ?? {}
        shared = { touchedAt: Date.now(), unsubscribe: await this.#shared.create(id, caller, params, signal => { this.#onSignal(id, signal) }) }
      } catch (err) {
        this.#shared.unavailable(reply, err)
        return
      }
    }
    const { transport, server } = this.#build(id)
    this.#opening++
    try {
      await server.connect(transport)
    } finally {
      this.#opening--
    }
    this.#sessions.set(id, { transport, server, lastSeen: Date.now(), caller, ...(shared !== undefined && { shared }) })
    this.#options.log.debug({ sessionId: id }, 'mcp session opened')
    await transport.handlePost(request.body as unknown as JSONRPCMessage, request, reply)
  }

  /** A session's server instance, connected to nothing yet, and its transport. */
  #build (id: string): { transport: SessionTransport, server: McpServer | Server } {
    const transport = new SessionTransport(id, {
      jsonResponse: this.#options.jsonResponse,
      maxStreamLifetimeMs: this.#options.maxStreamLifetimeMs,
      ...(this.#shared !== undefined && { peer: this.#shared.peer(id) })
    })
    const created = this.#connection.createServer(undefined, 'session')
    const server = this.#options.pipeline?.wrapServer(created, { server: this.#connection.name, scope: 'session', originOf: id => transport.originOf(id), refused: (id, err) => { transport.refused(id, err) } }) ??
      // Without a pipeline of its own (the aggregate, which runs it per member), the instance is
      // told where each request came from, for its members' calls.
      interceptHandlers(created, (_method, handler) => carryOrigin(handler, id => transport.originOf(id)))
    transport.onclose = () => { this.#forget(id) }
    return { transport, server }
  }

  /** A replica of a session another instance opened; concurrent requests of the session share one. */
  async #adopt (id: string, caller: string): Promise<Session | NotServed> {
    let adopting = this.#adopting.get(id)
    if (adopting === undefined) {
      adopting = this.#replicate(id, caller).finally(() => { this.#adopting.delete(id) })
      this.#adopting.set(id, adopting)
    }
    return await adopting
  }

  /**
   * Re-creates a session from its record, as `#open` made it: a new server instance, told
   * the client's own `initialize` (then `initialized`, and the log level the client set),
   * whose answers nobody sees. An in-process server or a shared upstream holds nothing per
   * session that this loses; a pinned one (`isolation: "session"`) does, and is refused.
   */
  async #replicate (id: string, caller: string): Promise<Session | NotServed> {
    const shared = this.#shared as SharedSessions
    if (this.#closing) return 'closing'
    let record
    try {
      record = await shared.find(id, caller)
    } catch (err) {
      this.#options.log.warn({ err }, 'shared session store failed')
      return 'unavailable'
    }
    if (typeof record === 'string') return record
    if (this.#sessions.size + this.#opening >= this.#options.maxSessions && !this.#evictOne()) return 'full'
    const { transport, server } = this.#build(id)
    this.#opening++
    let unsubscribe: () => void
    try {
      const subscribed = shared.subscribe(id, signal => { this.#onSignal(id, signal) })
      await server.connect(transport)
      unsubscribe = await subscribed
    } catch (err) {
      this.#options.log.warn({ err }, 'shared session channel failed')
      await server.close().catch(() => {})
      return 'unavailable'
    } finally {
      this.#opening--
    }
    const initialized = await transport.replay('initialize', record.initialize)
    if (!('result' in initialized)) {
      unsubscribe()
      await server.close().catch(() => {})
      return 'unknown'
    }
    transport.notify('notifications/initialized')
    if (record.logLevel !== undefined) await transport.replay('logging/setLevel', { level: record.logLevel })
    // Touched on its first use here, which is the request that made it.
    const session: Session = { transport, server, lastSeen: Date.now(), caller: record.caller, shared: { touchedAt: 0, unsubscribe } }
    this.#sessions.set(id, session)
    this.#options.log.debug({ sessionId: id, owner: record.owner }, 'mcp session replicated')
    return session
  }

  #refuse (reason: NotServed, reply: FastifyReply): void {
    switch (reason) {
      case 'unknown':
        rejectJsonRpc(reply, 404, JsonRpcCode.SessionNotFound, 'Session not found')
        return
      case 'unavailable':
        this.#shared?.unavailable(reply)
        return
      case 'pinned':
        // A documented limit: the session's upstream connection lives in another, live,
        // instance's process, and only a load balancer routing on Mcp-Session-Id can bring
        // the request there. 421 Misdirected Request says so: this instance cannot answer it.
        rejectJsonRpc(reply, 421, JsonRpcCode.ServerError, 'Misdirected Request: this session is served by another gateway instance only (its server keeps a connection per session); route requests by Mcp-Session-Id')
        return
      case 'closing':
        rejectJsonRpc(reply, 503, JsonRpcCode.ServerError, 'Server is shutting down')
        return
      case 'full': {
        const err = new TooManySessionsError(this.#connection.name, this.#options.maxSessions, SESSIONS_BUSY_RETRY_AFTER_S)
        const rpc = toJsonRpcError(err, this.#connection.name)
        reply.headers(err.headers)
        rejectJsonRpc(reply, err.statusCode ?? 503, rpc.code, rpc.message, null, rpc.data)
      }
    }
  }

  /** What another replica of a session tells this one. */
  #onSignal (id: string, signal: SessionSignal): void {
    const transport = this.#sessions.get(id)?.transport
    if (transport === undefined) return
    switch (signal.kind) {
      case 'client':
        transport.receive(signal.message)
        return
      case 'server':
        transport.writeToStream(signal.message)
        return
      case 'level':
        transport.replay('logging/setLevel', { level: signal.level }).catch(() => {})
        return
      case 'close':
        // Its record is gone already: only the replica closes.
        transport.close().catch(() => {})
    }
  }

  /** A `logging/setLevel` in a POST: stored and told to every replica, which each apply it. */
  #shareLevel (shared: SharedSessions, id: string, body: JSONRPCMessage | JSONRPCMessage[]): void {
    for (const message of Array.isArray(body) ? body : [body]) {
      if (!('method' in message) || message.method !== 'logging/setLevel' || !('id' in message)) continue
      const level = message.params?.level
      if (typeof level === 'string') shared.setLevel(id, level)
    }
  }

  /**
   * A GET with `Last-Event-ID` for a stream this instance does not hold; false when no
   * instance does. A request of the stream whose instance died may run again on this
   * replica, as the caller of this GET (the session's own: `handle` checked), through the
   * pipeline like any call.
   */
  async #resumeElsewhere (shared: SharedSessions, id: string, transport: SessionTransport, lastEventId: string, request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
    const log = this.#options.log
    const replica: Replica = {
      tools: () => this.#connection.tools(),
      running: requestId => transport.running(requestId),
      rerun: (message, send) => {
        const started = transport.rerun(message, { ...(request.identity !== undefined && { authInfo: request.identity }), origin: { requestId: request.id, ip: request.ip }, send })
        if (started) log.info({ sessionId: id, requestId: message.id, method: message.method }, 'mcp request run again: the instance running it stopped')
        return started
      }
    }
    try {
      return await shared.resume(id, lastEventId, request, reply, replica)
    } catch (err) {
      if (reply.sent) reply.raw.end()
      else shared.unavailable(reply, err)
      return true
    }
  }

  #forget (id: string): void {
    const session = this.#sessions.get(id)
    if (session === undefined) return
    session.shared?.unsubscribe()
    this.#sessions.delete(id)
    this.#options.log.debug({ sessionId: id }, 'mcp session closed')
    session.server.close().catch(err => { this.#options.log.warn({ err }, 'closing mcp session failed') })
  }

  /**
   * Closes the least recently used session with no call in flight; false when every session
   * has one. Its client's next request gets 404 and it initializes again, as the spec says.
   */
  #evictOne (): boolean {
    for (const [id, session] of this.#sessions) {
      if (session.transport.busy) continue
      this.#options.log.debug({ sessionId: id }, 'closing least recently used mcp session: session limit reached')
      // Synchronous up to onclose, which forgets the session: its slot is free on return.
      session.transport.close().catch(() => {})
      return true
    }
    return false
  }

  #sweep (): void {
    const idleSince = Date.now() - this.#options.sessionIdleMs
    for (const [id, session] of this.#sessions) {
      // In order of use: the first recent one ends the idle ones.
      if (session.lastSeen >= idleSince) break
      // A long call is not idleness; an open GET stream is (it ends by itself, see
      // maxStreamLifetimeMs, and a listening client reconnects or initializes again).
      if (session.transport.busy) continue
      this.#options.log.info({ sessionId: id }, 'closing idle mcp session')
      // The transport's onclose forgets the session and closes its server.
      session.transport.close().catch(() => {})
    }
  }

  /** First step of shutdown: refuse new sessions and end the GET streams, which never end on their own. */
  closeStreams (): void {
    this.#closing = true
    clearInterval(this.#sweeper)
    for (const session of this.#sessions.values()) session.transport.endStandaloneStream()
  }

  /** Shutdown after the drain timeout: every session's calls still in flight are cancelled. */
  cancelAll (reason: string): void {
    for (const session of this.#sessions.values()) session.transport.cancelAll(reason)
  }

  /** Last step of shutdown, once in-flight requests are done. */
  async close (): Promise<void> {
    this.closeStreams()
    const sessions = [...this.#sessions.values()]
    this.#sessions.clear()
    // Only this instance's replicas end: the records stay, for the other instances to serve.
    for (const session of sessions) session.shared?.unsubscribe()
    await Promise.allSettled(sessions.map(async s => { await s.transport.close(); await s.server.close() }))
  }
}
