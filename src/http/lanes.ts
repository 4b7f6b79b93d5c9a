import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  isJSONRPCRequest,
  type AuthInfo,
  type InboundClassificationOutcome,
  type JSONRPCMessage,
  type JSONRPCNotification,
  type JSONRPCRequest,
  McpServer,
  type RequestId,
  type Server
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import type { McpConnection } from '../connections/connection.js'
import { JsonRpcCode, type GatewayError } from '../errors.js'
import { carryOrigin, interceptHandlers } from '../mcp/handlers.js'
import { listenForListChanges, MultiplexTransport } from '../mcp/multiplex-transport.js'
import { forwardRounds } from '../mcp/round-forwarding.js'
import type { CallPipeline, ServedBy } from '../pipeline/pipeline.js'
import type { Cluster } from '../stores/cluster.js'
import { acceptsJsonAndSse, hijack, isSupportedLegacyVersion, sseFrame, startSse } from './sse.js'

/**
 * Plain request/response methods: no stream of their own, no server state between calls.
 * Only these take a shared lane; everything else (initialize, server/discover,
 * subscriptions/listen, notifications, logging/setLevel, batches) goes to the SDK's HTTP
 * entry, which owns those semantics.
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
const MODERN_ERROR_STATUS: Record<number, number> = { [JsonRpcCode.MethodNotFound]: 404, [JsonRpcCode.MissingRequiredClientCapability]: 400 }

/**
 * Modern revisions the shared lane serves. The SDK does not export its own list; a revision
 * not named here simply takes the SDK entry, which answers it from that list.
 */
const LANE_MODERN_REVISIONS = new Set(['2026-07-28'])

/** The request field `Mcp-Name` mirrors, per method (2026-07-28 standard headers). */
const NAMED_PARAM: Record<string, string> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' }

/** A long-lived SDK connection pinned to one protocol era, shared by stateless requests. */
export interface Lane {
  era: 'legacy' | 'modern'
  mux: MultiplexTransport
  handle: StdioServerHandle
  /** The protocol object of the instance the entry built last: the one it serves with. */
  built: { protocol?: object }
  /**
   * The quicker way the lane's requests reach its instance, once the entry has pinned it
   * (`directDelivery`); null where the SDK offers none, so it is looked for once.
   */
  deliver?: ((message: JSONRPCRequest) => boolean) | null
}

export interface LaneOptions {
  /** Whether 2025-era stateless requests may take a lane (the server is mounted `stateless`). */
  stateless: boolean
  pipeline: CallPipeline | undefined
  /** The cluster this instance belongs to: its 2026-07-28 calls' input rounds are continued on any instance. Absent when it runs alone. */
  cluster?: Cluster
  /** Where the list changes a modern lane's instance announces go (the SDK entry's listen streams). */
  publish: (notification: JSONRPCNotification) => void
  log: FastifyBaseLogger
}

/**
 * The shared lanes of one mounted server: one long-lived server connection per protocol era,
 * opened with the SDK's own era-pinning entry (`serveStdio`, which takes any transport) over
 * a multiplexing transport, answering every ordinary stateless request of that era. The
 * SDK's stateless HTTP entry builds a server instance per request, its dominant cost; a lane
 * builds one for its life.
 *
 * Known difference on a lane: handlers see no `ctx.http.req` (the HTTP request), as under
 * stdio; `ctx.http.authInfo` carries the caller, as it does in sessions.
 */
export class Lanes {
  #connection: McpConnection
  #options: LaneOptions
  #lanes = new Map<string, Lane>()
  /** The filters' refusals of requests in flight, by the exchange's origin: answered with their own HTTP status and headers. */
  #refusals = new WeakMap<object, GatewayError>()

  constructor (connection: McpConnection, options: LaneOptions) {
    this.#connection = connection
    this.#options = options
  }

  /**
   * The shared lane for this request, when it may take one: a plain request whose
   * transport-level checks (Accept, protocol version, standard headers) all hold. Anything
   * irregular goes to the SDK entry, so clients get the SDK's own answers to bad requests.
   */
  laneFor (route: InboundClassificationOutcome, request: FastifyRequest): Lane | undefined {
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
    // `no-claim` is the classifier's answer for a body that passed `isJSONRPCRequest` already.
    const body = request.body as JSONRPCRequest
    if ((route.reason !== 'no-claim' && !isJSONRPCRequest(body)) || !SHARED_LANE_METHODS.has(body.method)) return undefined
    if (!isSupportedLegacyVersion(version)) return undefined
    return this.#lane('legacy', 'legacy')
  }

  #lane (key: string, era: 'legacy' | 'modern'): Lane {
    let lane = this.#lanes.get(key)
    if (lane === undefined) {
      // A list change announced by the shared instance reaches the 2026-07-28 clients
      // listening for it on `subscriptions/listen` streams, which the SDK entry serves.
      const mux = new MultiplexTransport({ onUnrelated: message => { this.#options.publish(message) } })
      const built: { protocol?: object } = {}
      const handle = serveStdio(ctx => {
        const instance = this.#instance(ctx, mux)
        built.protocol = instance instanceof McpServer ? instance.server : instance
        return instance
      }, {
        transport: mux,
        legacy: era === 'modern' ? 'reject' : 'serve',
        onerror: err => { this.#options.log.debug({ err }, 'mcp lane error') }
      })
      if (era === 'modern') {
        // Under this entry a 2026-07-28 instance's list changes go only to listen
        // subscriptions on its own connection, so the gateway holds one open for the
        // lifetime of the lane and passes what arrives to the HTTP listen streams.
        listenForListChanges(mux, key)
      }
      lane = { era, mux, handle, built }
      this.#lanes.set(key, lane)
    }
    return lane
  }

  #instance (ctx: Parameters<McpConnection['createServer']>[0], mux: MultiplexTransport): McpServer | Server {
    const server = this.#connection.createServer(ctx, 'shared')
    forwardRounds(server, this.#options.cluster)
    const servedBy: ServedBy & { authInfoOf: (id: RequestId) => AuthInfo | undefined } = {
      server: this.#connection.name,
      scope: 'shared',
      originOf: id => mux.originOf(id),
      clientIdOf: id => mux.clientIdOf(id),
      authInfoOf: id => mux.originOf(id)?.authInfo,
      refused: (id, err) => {
        const origin = mux.originOf(id)
        if (origin !== undefined) this.#refusals.set(origin, err)
      }
    }
    // Without a pipeline of its own (the aggregate, which runs it per member), the instance is
    // told where each request came from, for its members' calls.
    return this.#options.pipeline?.wrapServer(server, servedBy) ?? interceptHandlers(server, (_method, handler) => carryOrigin(handler, id => mux.originOf(id)))
  }

  /** Answers one request on a lane: JSON, or SSE once the server sends a related notification. */
  async serve (lane: Lane, message: JSONRPCRequest, request: FastifyRequest, reply: FastifyReply): Promise<void> {
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
      // Only what someone reads is carried: the caller for the handler, the request id and the
      // client's address for the pipeline.
      const identity = request.identity
      const origin = identity !== undefined || this.#options.pipeline === undefined || this.#options.pipeline.active
        ? { requestId: request.id, ip: request.ip, ...(identity !== undefined && { authInfo: identity }) }
        : undefined
      id = lane.mux.request(message, {
        ...(origin !== undefined && { origin }),
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
          // The entry has pinned the instance that answered: later requests may take the quicker way.
          lane.deliver ??= directDelivery(lane.built.protocol) ?? null
          if (done) return
          done = true
          res.off('close', onClose)
          if (streaming) {
            res.end(sseFrame(response))
          } else {
            // A call the filters refused (a rate limit) is answered with the refusal's own
            // status and headers (429, Retry-After), in either era; other errors as the SDK entry would.
            const refusal = origin === undefined ? undefined : this.#refusals.get(origin)
            const status = refusal !== undefined && 'error' in response
              ? refusal.statusCode ?? 200
              : lane.era === 'modern' && 'error' in response ? MODERN_ERROR_STATUS[response.error.code] ?? 200 : 200
            if (refusal?.headers !== undefined && 'error' in response) void reply.headers(refusal.headers)
            void reply.code(status).type('application/json').send(JSON.stringify(response))
          }
          resolve()
        }
      }, lane.deliver ?? undefined)
    })
  }

  /** Shutdown after the drain timeout: every call still in flight on a lane is cancelled. */
  cancelAll (reason: string): void {
    for (const lane of this.#lanes.values()) lane.mux.cancelAll(reason)
  }

  async close (): Promise<void> {
    const lanes = [...this.#lanes.values()]
    this.#lanes.clear()
    await Promise.allSettled(lanes.map(lane => lane.handle.close()))
  }
}

/**
 * The quicker way into a lane's instance, where it can be had: straight to its protocol's
 * request dispatch, past the SDK entry's per-message work, which for a pinned connection is
 * only checks that cannot fail for these requests (the entry's and the transport receiver's
 * message guards; on a 2026-07-28 connection its `initialize` and `subscriptions/listen`
 * handling, none of which a lane request is). The endpoint has found each a valid JSON-RPC
 * request already, with a valid envelope where it carries one. Those checks are zod parses of
 * the whole message: some ten microseconds of a 2026-07-28 call, and a third of what it left
 * for the collector. The instance dispatches, answers and is cancelled exactly as through the
 * entry: its handlers, its abort controller (a cancellation still travels through the entry),
 * its answer through its own transport.
 *
 * Relies on `Protocol._onrequest(message, extra)`, private in SDK v2.4 (the dispatch its
 * transport's receiver calls for a request). Should an upgrade remove it, this answers
 * undefined and every request takes the entry (slower, not wrong); the test 'the SDK internals
 * a lane relies on' (test/plugins/stateless-lane.test.ts) fails. Once the instance is
 * gone (the lane closing), requests take the entry again, which answers them.
 */
function directDelivery (protocol: object | undefined): ((message: JSONRPCRequest) => boolean) | undefined {
  const dispatch = (protocol as { _onrequest?: unknown } | undefined)?._onrequest
  if (protocol === undefined || typeof dispatch !== 'function') return undefined
  const connected = protocol as { transport?: unknown }
  return message => {
    if (connected.transport === undefined) return false
    dispatch.call(protocol, message, undefined)
    return true
  }
}
