import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  classifyInboundRequest,
  createMcpHandler,
  isJSONRPCRequest,
  McpServer,
  PROTOCOL_VERSION_META_KEY,
  SUPPORTED_PROTOCOL_VERSIONS,
  type InboundClassificationOutcome,
  type JSONRPCNotification,
  type JSONRPCRequest,
  type McpHttpHandler,
  type McpRequestContext,
  type Server
} from '@modelcontextprotocol/server'
import { toNodeHandler, type NodeMcpRequestHandler } from '@modelcontextprotocol/node'
import type { ListKind, McpConnection } from '../connections/connection.js'
import type { EndpointStats } from '../connections/registry.js'
import { JsonRpcCode } from '../errors.js'
import { checkParamHeaders, HEADER_MISMATCH, toolParamHeaders } from '../mcp/param-headers.js'
import { forwardRounds } from '../mcp/round-forwarding.js'
import type { CallPipeline } from '../pipeline/pipeline.js'
import type { Cluster } from '../stores/cluster.js'
import { Lanes } from './lanes.js'
import { SessionTable } from './sessions.js'
import { SharedSessions } from './shared-sessions.js'
import { hijack, rejectJsonRpc } from './sse.js'

export interface StreamableHttpOptions {
  /** No 2025-era sessions: every request is answered on its own (the seed's mode). */
  stateless: boolean
  /** Never upgrade a 2025-era session POST to SSE; mid-call messages go to the GET stream. */
  jsonResponse: boolean
  /**
   * Most 2025-era sessions kept at once; a new `initialize` beyond it closes the least
   * recently used session with no call in flight, or answers 503 when every one has a call.
   */
  maxSessions: number
  /** A session with no request for this long is closed (an open GET stream is not a request). */
  sessionIdleMs: number
  /** Longest life of a session's GET stream, in ms; the client then reconnects. */
  maxStreamLifetimeMs: number
  /** Longest life of a `subscriptions/listen` stream, in ms; the client then re-subscribes. */
  maxListenLifetimeMs: number
  /** Most `subscriptions/listen` streams open at once; one more is refused in-band (-32603). */
  maxListenStreams: number
  /** Most messages in a 2025-03-26 JSON-RPC batch; later revisions have no batches at all. */
  maxBatchLength: number
  /** Largest request body, in bytes; the same bound Fastify applies to the route. */
  bodyLimit: number
  /**
   * The filters every call passes; the endpoint puts them in front of each server instance
   * it builds. Absent for a connection that runs them itself for each member it dispatches
   * to (the aggregate), so a call passes them once, under the member's own names.
   */
  pipeline?: CallPipeline
  /**
   * What this instance shares with other gateway instances (sessions, stream events, the
   * broker, the listen bus). Absent when the gateway runs alone: everything stays in memory.
   */
  cluster?: Cluster
  log: FastifyBaseLogger
}

/** How long list changes reported together are gathered into one announcement, in ms. */
const LIST_CHANGE_COALESCE_MS = 20

/**
 * Serves one mounted server over Streamable HTTP, both protocol eras on one URL. It
 * classifies each request and hands it to one of three ways of answering:
 *
 * - a shared lane (`lanes.ts`): ordinary stateless requests (2026-07-28 ones, and 2025-era
 *   ones with `stateless`), answered on one long-lived connection per era;
 * - a 2025-era session (`sessions.ts`): `Mcp-Session-Id`, GET stream, DELETE, server→client
 *   requests;
 * - the SDK's `createMcpHandler` for everything else (initialize, `server/discover`,
 *   `subscriptions/listen`, batches, malformed requests), so clients get the SDK's own
 *   answers. Its per-request instances come from a pool: a closed instance is disconnected
 *   and reusable, and is never shared by two requests at once.
 */
export class StreamableHttpEndpoint {
  #connection: McpConnection
  #options: StreamableHttpOptions
  #handler: McpHttpHandler
  #nodeHandler: NodeMcpRequestHandler
  /** The same entry, for `subscriptions/listen`: its stream ends after `maxListenLifetimeMs`. */
  #listenHandler: NodeMcpRequestHandler
  #lanes: Lanes
  #sessions: SessionTable
  #pools: Record<'legacy' | 'modern', Array<McpServer | Server>> = { legacy: [], modern: [] }
  #closing = false
  #detachLists: () => void
  /** List kinds whose change is about to be announced (`#announce`). */
  #announcing = new Set<ListKind>()
  /** Open `subscriptions/listen` streams, counted where their lifetime is bounded (`endAfter`). */
  #listening = { open: 0 }

  constructor (connection: McpConnection, options: StreamableHttpOptions) {
    this.#connection = connection
    this.#options = options
    this.#handler = createMcpHandler(ctx => this.#pooledServer(ctx), {
      legacy: options.stateless ? 'stateless' : 'reject',
      maxRequestBodySize: options.bodyLimit,
      maxSubscriptions: options.maxListenStreams,
      // Shared by every instance: a `list_changed` or `resources/updated` raised on one reaches
      // the listen streams held on all of them.
      ...(options.cluster !== undefined && { bus: options.cluster.busFor(connection.name) }),
      onerror: err => { options.log.debug({ err }, 'mcp request rejected') }
    })
    const nodeOptions = {
      maxRequestBodySize: options.bodyLimit,
      onerror: (err: Error) => { options.log.error({ err }, 'mcp handler failed') }
    }
    this.#nodeHandler = toNodeHandler(this.#handler, nodeOptions)
    // The SDK entry bounds how many listen streams are open, not how long one lives; a
    // client gone without closing its socket would hold its slot for ever.
    const handler = this.#handler
    this.#listenHandler = toNodeHandler({
      fetch: async (request, requestOptions) => endAfter(await handler.fetch(request, requestOptions), options.maxListenLifetimeMs, this.#listening)
    }, nodeOptions)
    // A list change reaches the `subscriptions/listen` streams (on every instance, with a
    // cluster's bus) from the connection itself, as well as from a lane's shared instance
    // (`#publish`): a listen client may never have made the 2026-07-28 call that brings up
    // the lane, and a reload or a new member changes the lists with no instance asking.
    this.#detachLists = connection.onListChanged(kind => { this.#announce(kind) })
    this.#lanes = new Lanes(connection, {
      stateless: options.stateless,
      pipeline: options.pipeline,
      ...(options.cluster !== undefined && { cluster: options.cluster }),
      publish: message => { this.#publish(message) },
      log: options.log
    })
    this.#sessions = new SessionTable(connection, {
      jsonResponse: options.jsonResponse,
      maxSessions: options.maxSessions,
      sessionIdleMs: options.sessionIdleMs,
      maxStreamLifetimeMs: options.maxStreamLifetimeMs,
      pipeline: options.pipeline,
      ...(options.cluster !== undefined && {
        shared: new SharedSessions(options.cluster, {
          server: connection.name,
          pinned: connection.pinsSessions === true,
          sessionIdleMs: options.sessionIdleMs,
          onerror: (err, what) => { options.log.warn({ err, what }, 'shared session state failed') }
        })
      }),
      log: options.log
    })
  }

  get sessionCount (): number { return this.#sessions.size }

  /** What the endpoint holds open right now, for metrics. */
  stats (): EndpointStats {
    return { sessions: this.#sessions.size, sessionStreams: this.#sessions.streamCount, listenStreams: this.#listening.open }
  }

  #pooledServer (ctx: McpRequestContext): McpServer | Server {
    const pool = this.#pools[ctx.era]
    const reused = pool.pop()
    if (reused !== undefined) return reused
    const created = this.#connection.createServer(ctx, 'shared')
    forwardRounds(created, this.#options.cluster)
    const server = this.#options.pipeline?.wrapServer(created, { server: this.#connection.name, scope: 'shared' }) ?? created
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
    if (Array.isArray(request.body) && this.#rejectBatch(request.body.length, request, reply)) return
    const headers = request.headers
    const version = headers['mcp-protocol-version']
    const route = classifyPlainLegacyRequest(request.method, request.body, version) ?? classifyInboundRequest({
      httpMethod: request.method,
      body: request.body,
      ...(typeof version === 'string' && { protocolVersionHeader: version }),
      ...(typeof headers['mcp-method'] === 'string' && { mcpMethodHeader: headers['mcp-method'] }),
      ...(typeof headers['mcp-name'] === 'string' && { mcpNameHeader: headers['mcp-name'] })
    })
    if (route.kind === 'modern' && route.messageKind === 'request' && route.message.method === 'tools/call' && this.#rejectParamHeaders(route.message, request, reply)) return
    const lane = this.#lanes.laneFor(route, request)
    if (lane !== undefined) {
      await this.#lanes.serve(lane, request.body as JSONRPCRequest, request, reply)
      return
    }
    if (route.kind !== 'legacy' || this.#options.stateless) {
      const { raw, res } = hijack(request, reply)
      // The SDK entry passes `req.auth` on to handlers as `ctx.http.authInfo`.
      if (request.identity !== undefined) (raw as typeof raw & { auth?: unknown }).auth = request.identity
      const listen = route.kind === 'modern' && route.messageKind === 'request' && route.message.method === 'subscriptions/listen'
      await (listen ? this.#listenHandler : this.#nodeHandler)(raw, res, request.body)
      return
    }
    await this.#sessions.handle(request, reply)
  }

  /**
   * Refuses a JSON-RPC batch the request's revision does not allow (400, Invalid Request);
   * true when it did. 2025-06-18 removed batching, so from it on any batch is refused; a
   * 2025-03-26 batch is capped, since each of its messages runs at once. The revision is the
   * later of the `MCP-Protocol-Version` header and the session's negotiated one, so leaving
   * the header out does not buy an older revision.
   */
  #rejectBatch (length: number, request: FastifyRequest, reply: FastifyReply): boolean {
    const header = request.headers['mcp-protocol-version']
    const sessionId = request.headers['mcp-session-id']
    const negotiated = typeof sessionId === 'string' ? this.#sessions.protocolVersionOf(sessionId) : undefined
    // No header and no session: 2025-03-26, as the spec reads a missing header.
    let version = '2025-03-26'
    for (const named of [header, negotiated]) if (typeof named === 'string' && named > version) version = named
    if (version >= '2025-06-18') {
      rejectJsonRpc(reply, 400, JsonRpcCode.InvalidRequest, `Invalid Request: JSON-RPC batches are not supported in protocol version ${version}`)
      return true
    }
    if (length <= this.#options.maxBatchLength) return false
    rejectJsonRpc(reply, 400, JsonRpcCode.InvalidRequest, `Invalid Request: a batch of ${length} messages is over the limit of ${this.#options.maxBatchLength}`)
    return true
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

  /** What a lane's shared instance announces: its own list changes (a tool it added mid-call) and resource updates. */
  #publish (message: JSONRPCNotification): void {
    switch (message.method) {
      case 'notifications/tools/list_changed': this.#announce('tools'); break
      case 'notifications/prompts/list_changed': this.#announce('prompts'); break
      case 'notifications/resources/list_changed': this.#announce('resources'); break
      case 'notifications/resources/updated':
        if (typeof message.params?.uri === 'string') this.#handler.notify.resourceUpdated(message.params.uri)
        break
    }
  }

  /**
   * Tells listen streams a list changed, once for changes that come together: the
   * connection and a lane's instance often report the same change a few ticks apart, and a
   * client re-lists on each notification. The notification goes out after the last of
   * them, so the list the client then reads has every change.
   */
  #announce (kind: ListKind): void {
    if (this.#announcing.has(kind)) return
    this.#announcing.add(kind)
    setTimeout(() => {
      this.#announcing.delete(kind)
      const notify = this.#handler.notify
      if (kind === 'tools') notify.toolsChanged()
      else if (kind === 'prompts') notify.promptsChanged()
      else notify.resourcesChanged()
    }, LIST_CHANGE_COALESCE_MS).unref()
  }

  /**
   * First step of shutdown (preClose): refuse new sessions and end the streams that would
   * never end on their own (sessions' GET streams, `subscriptions/listen` streams), so the
   * server can close. Calls in flight are left to finish.
   */
  async closeStreams (): Promise<void> {
    this.#closing = true
    this.#sessions.closeStreams()
    await this.#handler.close()
  }

  /**
   * Shutdown after the drain timeout: calls still in flight on lanes and in sessions are
   * answered with a JSON-RPC error on their streams and cancelled at the server (and so
   * upstream). The SDK entry's own exchanges end when their connections are closed.
   */
  cancelInFlight (): void {
    const reason = 'The gateway is shutting down: the call was cancelled'
    this.#lanes.cancelAll(reason)
    this.#sessions.cancelAll(reason)
  }

  /** Last step of shutdown (onClose), once in-flight requests are done: release everything. */
  async close (): Promise<void> {
    this.#detachLists()
    await this.closeStreams()
    await this.#sessions.close()
    await this.#lanes.close()
    const pooled = [...this.#pools.legacy, ...this.#pools.modern]
    this.#pools = { legacy: [], modern: [] }
    await Promise.allSettled(pooled.map(s => s.close()))
  }
}

/** The 2025-era revisions, each exactly as a header names it (no surrounding whitespace to strip). */
const LEGACY_REVISIONS: ReadonlySet<unknown> = new Set(SUPPORTED_PROTOCOL_VERSIONS.filter(version => version < '2026-07-28'))

/**
 * `classifyInboundRequest`'s answer for the commonest 2025-era request, without its cost:
 * a POST of one JSON-RPC request (not `initialize`) with no `_meta` envelope claim, and no
 * `MCP-Protocol-Version` header or a 2025-era one. Anything else is undefined, for the SDK.
 *
 * The SDK first tries the body as a JSON-RPC result and as an error response, and each
 * failing zod parse costs microseconds and kilobytes per request, more than the rest of
 * the classification. Its message schemas are strict, so a body that passes
 * `isJSONRPCRequest` (which the SDK asks next) is neither; what is left of its rules for
 * such a body with no envelope claim and no modern header is `legacy`/`no-claim`.
 */
function classifyPlainLegacyRequest (httpMethod: string, body: unknown, version: string | string[] | undefined): InboundClassificationOutcome | undefined {
  if (httpMethod !== 'POST' || (version !== undefined && !LEGACY_REVISIONS.has(version))) return undefined
  if (body === null || typeof body !== 'object' || Array.isArray(body) || !isJSONRPCRequest(body) || body.method === 'initialize') return undefined
  const meta = body.params?._meta
  if (meta !== null && typeof meta === 'object' && !Array.isArray(meta) && PROTOCOL_VERSION_META_KEY in meta) return undefined
  return version === undefined ? { kind: 'legacy', reason: 'no-claim' } : { kind: 'legacy', reason: 'no-claim', requestedVersion: version as string }
}

/**
 * An SSE response that ends after `ms`: the body is passed through until then, and the
 * source is cancelled at the end, which releases the SDK's listen subscription (and its slot
 * under `maxSubscriptions`). Any other response (an in-band refusal, JSON) passes unchanged.
 * `listening.open` counts the streams from here until they end, however they end.
 */
function endAfter (response: Response, ms: number, listening: { open: number }): Response {
  const source = response.body
  if (source === null || !(response.headers.get('content-type') ?? '').includes('text/event-stream')) return response
  const reader = source.getReader()
  let timer: NodeJS.Timeout | undefined
  let ended = false
  listening.open++
  const end = (controller: ReadableStreamDefaultController<Uint8Array>): void => {
    if (ended) return
    ended = true
    listening.open--
    clearTimeout(timer)
    controller.close()
  }
  const body = new ReadableStream<Uint8Array>({
    start (controller) {
      timer = setTimeout(() => {
        end(controller)
        reader.cancel().catch(() => {})
      }, ms).unref()
    },
    async pull (controller) {
      const { value, done } = await reader.read()
      if (ended) return
      if (done) end(controller)
      else controller.enqueue(value)
    },
    async cancel (reason) {
      if (!ended) listening.open--
      ended = true
      clearTimeout(timer)
      await reader.cancel(reason)
    }
  })
  return new Response(body, { status: response.status, headers: response.headers })
}
