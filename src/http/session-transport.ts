import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import {
  type AuthInfo,
  isJSONRPCRequest,
  isJSONRPCNotification,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type MessageExtraInfo,
  type RequestId,
  type Transport,
  type TransportSendOptions
} from '@modelcontextprotocol/server'
import { JsonRpcCode, type GatewayError } from '../errors.js'
import { hijack, sseFrame, startSse } from './sse.js'

const KEEP_ALIVE_MS = 15_000
/** Streams kept for resumption per session, beyond those still in progress. */
const MAX_RESUMABLE = 100

/**
 * Proxies and load balancers cut connections that stay silent, and a tool may think for
 * minutes: an SSE comment every 15 s keeps the stream alive and is ignored by clients (the
 * SDK's own transports send one at the same pace).
 */
export function keepAlive (res: ServerResponse): void {
  const timer = setInterval(() => { res.write(': keep-alive\n\n') }, KEEP_ALIVE_MS).unref()
  res.once('close', () => { clearInterval(timer) })
}

/** Client reconnection delay announced in priming events, in ms. */
const RETRY_MS = 1000
/** Server→client requests awaiting their answer per replica, beyond which the oldest (timed out, surely) are forgotten. */
const MAX_OUTGOING = 1000

/**
 * What the transport of a session that other gateway instances serve too needs of them
 * (`shared-sessions.ts`). Absent for a gateway alone, which then pays nothing for it.
 */
export interface SessionPeer {
  /**
   * Unique to this replica among every instance's replicas of every session: it starts the
   * ids of the POST streams it opens and of the server→client requests it sends, so an
   * answer or a resume landing on another instance finds its way back here.
   */
  readonly prefix: string
  /** A client message (an answer, a notification) that belongs to a request this replica does not hold. */
  forward (message: JSONRPCMessage): void
  /** A server message no stream here can carry: for the instance holding the session's GET stream. */
  toStream (message: JSONRPCMessage): void
  /** A POST's stream that a client may resume elsewhere: the requests it answers, and each of its events. */
  streamOpened (streamId: string, requests: JSONRPCRequest[]): void
  storeEvent (streamId: string, message: JSONRPCMessage): void
}

/** Where the messages of requests in flight go: the POST that carried them, or a re-run's stream. */
interface Exchange {
  /** The HTTP request that brought the requests: its id and the client's address, for the pipeline's audit. */
  readonly origin: { requestId: string, ip: string }
  /** A message the server relates to one of the requests; false when the exchange cannot carry it. */
  stream (message: JSONRPCMessage): boolean
  answer (id: RequestId, message: JSONRPCMessage): void
  /** A filter refused one of the requests (a rate limit). */
  refuse (err: GatewayError): void
}

/**
 * One POST waiting for the answers to the requests it carried.
 *
 * Answered as one JSON body unless the server sends something related first, then as an SSE
 * stream. Stream events carry ids (`<stream>:<n>`) and are kept while the exchange lives, so
 * a client whose stream broke, or was closed on purpose (`ctx.http.closeSSE()`, SEP-1699
 * polling), can resume with `GET` and `Last-Event-ID` and get the rest, answers included.
 */
class PostExchange implements Exchange {
  readonly streamId: string
  readonly #transport: SessionTransport
  readonly #request: FastifyRequest
  readonly #reply: FastifyReply
  readonly #batch: boolean
  readonly #priming: boolean
  readonly #requests: JSONRPCRequest[]
  readonly #order: RequestId[]
  readonly #pending: Set<RequestId>
  readonly #answers = new Map<RequestId, JSONRPCMessage>()
  /** Every event sent on the stream, for resumption; empty until the exchange streams. */
  readonly #events: string[] = []
  /** Where events go now: the POST's own stream, a resuming GET, or nowhere (detached). */
  #live: ServerResponse | undefined
  #streaming = false
  #complete = false
  /** A filter's refusal of this POST's one request: its JSON answer takes the refusal's status and headers. */
  #refusal: GatewayError | undefined
  /** The POST's HTTP response is over (answered, streamed to the end, closed or gone). */
  readonly finished: Promise<void>
  #finish!: () => void

  constructor (transport: SessionTransport, streamId: string, request: FastifyRequest, reply: FastifyReply, requests: JSONRPCRequest[], batch: boolean, priming: boolean) {
    this.streamId = streamId
    this.#transport = transport
    this.#request = request
    this.#reply = reply
    this.#batch = batch
    this.#priming = priming
    this.#requests = requests
    this.#order = requests.map(message => message.id)
    this.#pending = new Set(this.#order)
    this.finished = new Promise(resolve => { this.#finish = resolve })
    reply.raw.once('close', () => {
      this.#finish()
      if (this.#complete) return
      if (this.#streaming) {
        // Ended on purpose (closeSSE), or the client already resumed elsewhere.
        if (this.#live !== reply.raw) return
        this.#live = undefined
        // A stream that announced event ids may be resumed: keep working, keep the events.
        if (this.#priming) return
      }
      // The client is gone for good: the server should stop working for it.
      for (const id of this.#pending) transport.abandon(id)
      this.#complete = true
      transport.forget(this)
    })
  }

  get complete (): boolean { return this.#complete }

  /** The POST that carried this exchange's requests: its id and the client's address. */
  get origin (): { requestId: string, ip: string } {
    return { requestId: this.#request.id, ip: this.#request.ip }
  }

  /** A filter refused one of this POST's requests (a rate limit). */
  refuse (err: GatewayError): void {
    this.#refusal = err
  }

  /** A message the server relates to one of this POST's requests: the exchange streams. */
  stream (message: JSONRPCMessage): boolean {
    if (this.#complete) return false
    this.#openStream()
    this.#emit(message)
    return true
  }

  /**
   * Ends the POST's stream while its requests go on (`ctx.http.closeSSE()`): the client
   * resumes with `GET` and `Last-Event-ID` after the announced retry delay.
   */
  closeStream (): void {
    if (this.#complete || !this.#priming) return
    this.#openStream()
    const live = this.#live
    this.#live = undefined
    live?.end()
  }

  /** Replays the events after `lastSeq` on a resuming GET, then carries the rest. */
  resume (request: FastifyRequest, reply: FastifyReply, lastSeq: number): Promise<void> {
    const { res } = hijack(request, reply)
    startSse(res, { 'mcp-session-id': this.#transport.sessionId })
    for (const frame of this.#events.slice(lastSeq + 1)) res.write(frame)
    if (this.#pending.size === 0) {
      res.end()
      this.#transport.forget(this)
      return Promise.resolve()
    }
    this.#live?.end()
    this.#live = res
    keepAlive(res)
    return new Promise(resolve => { res.once('close', () => { if (this.#live === res) this.#live = undefined; resolve() }) })
  }

  /** Records one answer; a JSON batch answer keeps request order (JSON-RPC allows any). */
  answer (id: RequestId, message: JSONRPCMessage): void {
    if (!this.#pending.delete(id)) return
    if (this.#streaming) this.#emit(message)
    else this.#answers.set(id, message)
    if (this.#pending.size > 0) return
    this.#complete = true
    if (!this.#streaming) {
      // A refused request alone in its POST is answered with the refusal's HTTP status and
      // headers (429, Retry-After); in a batch the other answers keep it a 200.
      const refusal = this.#batch || !('error' in message) ? undefined : this.#refusal
      if (refusal?.headers !== undefined) void this.#reply.headers(refusal.headers)
      void this.#reply.code(refusal?.statusCode ?? 200).header('mcp-session-id', this.#transport.sessionId).type('application/json')
        .send(JSON.stringify(this.#batch ? this.#order.map(id => this.#answers.get(id)) : this.#answers.get(this.#order[0])))
      this.#finish()
    } else if (this.#live !== undefined) {
      this.#live.end()
      this.#live = undefined
      this.#transport.forget(this)
      this.#finish()
    }
    // Streamed while detached: the answers wait in the events for the client to resume.
  }

  #openStream (): void {
    if (this.#streaming) return
    this.#streaming = true
    const res = hijack(this.#request, this.#reply).res
    startSse(res, { 'mcp-session-id': this.#transport.sessionId })
    keepAlive(res)
    this.#live = res
    this.#transport.remember(this)
    // The priming event (SEP-1699): an event id before any message, so even a stream that
    // breaks at once can be resumed. Empty `data` is valid only for 2025-11-25 clients on.
    // With other instances, the stream is described in the shared store and its events kept
    // there (the priming event `<stream>:0` is not: the store numbers from 1, as here).
    if (this.#priming) {
      this.#transport.peer?.streamOpened(this.streamId, this.#requests)
      this.#write(`id: ${this.#nextEventId()}\nretry: ${RETRY_MS}\ndata: \n\n`)
    }
  }

  #emit (message: JSONRPCMessage): void {
    if (this.#priming) this.#transport.peer?.storeEvent(this.streamId, message)
    this.#write(`id: ${this.#nextEventId()}\n${sseFrame(message)}`)
  }

  #write (frame: string): void {
    this.#events.push(frame)
    this.#live?.write(frame)
  }

  #nextEventId (): string {
    return `${this.streamId}:${this.#events.length}`
  }
}

/**
 * A request of a POST stream run again here after the instance that ran it died
 * (`SessionTransport.rerun`): its messages, the answer included, go to `send`, which stores
 * them as the stream's next events; whoever follows the stream (resuming GETs, on any
 * instance) carries them to the client.
 */
class RerunExchange implements Exchange {
  readonly origin: { requestId: string, ip: string }
  readonly #send: (message: JSONRPCMessage) => void

  constructor (origin: { requestId: string, ip: string }, send: (message: JSONRPCMessage) => void) {
    this.origin = origin
    this.#send = send
  }

  stream (message: JSONRPCMessage): boolean {
    this.#send(message)
    return true
  }

  answer (_id: RequestId, message: JSONRPCMessage): void {
    this.#send(message)
  }

  // A refusal's HTTP status has no response to go on: the client sees the JSON-RPC error alone.
  refuse (): void {}
}

/**
 * The HTTP side of one 2025-era Streamable HTTP session, native to Node and Fastify.
 *
 * The SDK's session transport is written against web-standard `Request`/`Response`, and
 * converting every Node request and response into those costs more than the rest of a
 * session request; this one reads Fastify's parsed body and writes JSON or SSE directly.
 * The SDK server connected to it still owns the protocol: initialize, capabilities,
 * handlers, server→client requests, cancellation. This class only frames messages:
 *
 * - a POST's requests are answered on that POST, as one JSON body, or as an SSE stream once
 *   the server sends a message related to one of them (progress, a log, a sampling or
 *   elicitation request) and `jsonResponse` is off;
 * - unrelated server messages go to the session's standalone GET stream, if one is open;
 * - a POST of notifications or of responses (to server→client requests) answers 202.
 *
 * A POST's SSE stream can be resumed (`GET` with `Last-Event-ID`) while its requests are
 * pending and, once they are answered, until the client has read it to the end; at most
 * `MAX_RESUMABLE` streams are kept per session, finished ones evicted first. A client before
 * 2025-11-25 gets no priming event (it would choke on the empty data) and so cannot be
 * asked to reconnect; its broken streams are not resumable.
 */
export class SessionTransport implements Transport {
  readonly sessionId: string
  readonly peer: SessionPeer | undefined
  onclose?: () => void
  onerror?: (error: Error) => void
  onmessage?: <T extends JSONRPCMessage>(message: T, extra?: MessageExtraInfo) => void
  readonly #jsonResponse: boolean
  readonly #maxStreamLifetimeMs: number
  readonly #exchanges = new Map<RequestId, Exchange>()
  /** Streamed exchanges a client may still resume, by stream id. */
  readonly #streams = new Map<string, PostExchange>()
  #nextStream = 1
  #standalone: ServerResponse | undefined
  #closed = false
  #protocolVersion: string | undefined
  /**
   * With a peer: the server→client requests sent and not yet answered, by the id the client
   * sees (the peer's prefix and the server's own id) to the server's own id.
   */
  readonly #outgoing = new Map<string, RequestId>()
  /** Requests fed to the server by the gateway itself (`replay`), awaiting their answer. */
  readonly #replays = new Map<RequestId, (message: JSONRPCMessage) => void>()
  #nextReplay = 1

  constructor (sessionId: string, options: { jsonResponse: boolean, maxStreamLifetimeMs: number, peer?: SessionPeer }) {
    this.sessionId = sessionId
    this.peer = options.peer
    this.#jsonResponse = options.jsonResponse
    this.#maxStreamLifetimeMs = options.maxStreamLifetimeMs
  }

  async start (): Promise<void> {}

  /** The SDK server tells its transport the revision it negotiated at `initialize`. */
  setProtocolVersion (version: string): void {
    this.#protocolVersion = version
  }

  get protocolVersion (): string | undefined { return this.#protocolVersion }

  get hasStandaloneStream (): boolean { return this.#standalone !== undefined }

  /** Whether a request of this session awaits its answer: such a session is never evicted or swept. */
  get busy (): boolean { return this.#exchanges.size > 0 }

  /** Ends the GET stream, if open; the client may open another. */
  endStandaloneStream (): void {
    this.#standalone?.end()
    this.#standalone = undefined
  }

  /** Handles a POST carrying one message or a batch; resolves when its answer is complete. */
  async handlePost (body: JSONRPCMessage | JSONRPCMessage[], request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const messages = Array.isArray(body) ? body : [body]
    const requests = messages.filter(isJSONRPCRequest) as JSONRPCRequest[]
    const duplicate = requests.find(message => this.#exchanges.has(message.id))
    if (duplicate !== undefined) {
      void reply.code(400).header('mcp-session-id', this.sessionId).type('application/json').send(JSON.stringify({
        jsonrpc: '2.0', id: duplicate.id, error: { code: JsonRpcCode.InvalidRequest, message: `Request id ${JSON.stringify(duplicate.id)} is already in flight in this session` }
      }))
      return
    }
    const version = request.headers['mcp-protocol-version']
    const priming = !this.#jsonResponse && typeof version === 'string' && version >= '2025-11-25'
    let exchange: PostExchange | undefined
    if (requests.length > 0) {
      exchange = new PostExchange(this, `${this.peer?.prefix ?? ''}${this.#nextStream++}`, request, reply, requests, Array.isArray(body), priming)
    }
    for (const message of requests) this.#exchanges.set(message.id, exchange as PostExchange)
    const authInfo = request.identity
    for (const message of messages) {
      const closeSSEStream = exchange !== undefined && priming && isJSONRPCRequest(message)
        ? () => { exchange.closeStream() }
        : undefined
      const extra = closeSSEStream === undefined && authInfo === undefined
        ? undefined
        : { ...(closeSSEStream !== undefined && { closeSSEStream }), ...(authInfo !== undefined && { authInfo }) }
      if (this.peer !== undefined && !isJSONRPCRequest(message)) this.#fromClient(message, extra)
      else this.onmessage?.(message, extra)
    }
    if (exchange === undefined) {
      void reply.code(202).header('mcp-session-id', this.sessionId).send()
      return
    }
    await exchange.finished
  }

  /**
   * A client's answer or notification in a session other instances serve too: fed to this
   * replica's server when it holds what the message belongs to, else passed on to the
   * others. A notification that concerns no one request (roots list changed) goes to every
   * replica's server.
   */
  #fromClient (message: JSONRPCMessage, extra?: MessageExtraInfo): void {
    if (this.receive(message, extra)) {
      // Every replica was told `initialized` when it was made; cancellations concern one.
      if (isJSONRPCNotification(message) && message.method !== 'notifications/cancelled' && message.method !== 'notifications/initialized') this.peer?.forward(message)
      return
    }
    this.peer?.forward(message)
  }

  /**
   * A client message, POSTed here or passed on by another instance: fed to the server if it
   * is for this replica (an answer to a request it sent, the cancellation of a request it
   * runs, any other notification); false when it is not.
   */
  receive (message: JSONRPCMessage, extra?: MessageExtraInfo): boolean {
    if (this.#closed) return false
    if (isJSONRPCNotification(message)) {
      if (message.method === 'notifications/cancelled' && !this.#exchanges.has(message.params?.requestId as RequestId)) return false
      this.onmessage?.(message, extra)
      return true
    }
    if (!('id' in message) || isJSONRPCRequest(message)) return false
    const own = this.#outgoing.get(message.id as string)
    if (own === undefined) return false
    this.#outgoing.delete(message.id as string)
    this.onmessage?.({ ...message, id: own } as JSONRPCMessage, extra)
    return true
  }

  /** A server message another instance could not carry: on this instance's GET stream, if it has one. */
  writeToStream (message: JSONRPCMessage): void {
    this.#standalone?.write(sseFrame(message))
  }

  /**
   * Feeds the server a request of the gateway's own (re-creating a session from its stored
   * `initialize`); resolves with the server's answer, which no client sees.
   */
  async replay (method: string, params: Record<string, unknown> | undefined): Promise<JSONRPCMessage> {
    // Not a client's id: the client's own ids are numbers or strings it picked, never this shape.
    const id = `gateway-replay-${this.#nextReplay++}`
    const answered = new Promise<JSONRPCMessage>(resolve => { this.#replays.set(id, resolve) })
    this.onmessage?.({ jsonrpc: '2.0', id, method, ...(params !== undefined && { params }) } as JSONRPCMessage)
    return await answered
  }

  /** Feeds the server a notification of the gateway's own. */
  notify (method: string): void {
    this.onmessage?.({ jsonrpc: '2.0', method } as JSONRPCMessage)
  }

  /**
   * Runs a request of a POST stream again, as its client sent it (the instance that ran it
   * died; `SharedSessions.resume` decides it is safe), with the caller's identity, so it
   * passes the pipeline like any call. Its messages go to `send`, the answer last. False
   * when a request with its id is in flight here already (an earlier resume re-ran it).
   */
  rerun (message: JSONRPCRequest, options: { authInfo?: AuthInfo, origin: { requestId: string, ip: string }, send: (message: JSONRPCMessage) => void }): boolean {
    if (this.#closed || this.#exchanges.has(message.id)) return false
    this.#exchanges.set(message.id, new RerunExchange(options.origin, options.send))
    this.onmessage?.(message, options.authInfo === undefined ? undefined : { authInfo: options.authInfo })
    return true
  }

  /** Whether a request with this id is in flight here. */
  running (id: RequestId): boolean {
    return this.#exchanges.has(id)
  }

  /**
   * Resumes a POST's stream after `lastEventId` (`<stream>:<n>`); false when that stream is
   * not known here (never streamed, already read to the end, or evicted).
   */
  resume (lastEventId: string, request: FastifyRequest, reply: FastifyReply): Promise<void> | false {
    const [streamId, seq] = lastEventId.split(':')
    const exchange = this.#streams.get(streamId)
    const lastSeq = Number(seq)
    if (exchange === undefined || !Number.isInteger(lastSeq) || lastSeq < 0) return false
    return exchange.resume(request, reply, lastSeq)
  }

  /** The POST that carried a request still in flight: its HTTP request id and the client's address. */
  originOf (id: RequestId): { requestId: string, ip: string } | undefined {
    return this.#exchanges.get(id)?.origin
  }

  /** A filter refused a request in flight: its POST's JSON answer takes the refusal's status. */
  refused (id: RequestId, err: GatewayError): void {
    this.#exchanges.get(id)?.refuse(err)
  }

  /** A stream read to its end: nothing left to resume. */
  forget (exchange: PostExchange): void {
    this.#streams.delete(exchange.streamId)
  }

  /** An exchange that started streaming: its stream may be resumed from now on. */
  remember (exchange: PostExchange): void {
    this.#streams.set(exchange.streamId, exchange)
    if (this.#streams.size <= MAX_RESUMABLE) return
    // Drop the oldest finished stream; streams still waiting for answers stay.
    for (const [id, old] of this.#streams) {
      if (old.complete) {
        this.#streams.delete(id)
        return
      }
    }
  }

  /**
   * Opens the session's standalone SSE stream (GET); one at a time, as the spec allows. It
   * ends after `maxStreamLifetimeMs` (SEP-1699: a server may close a stream, and the client
   * reconnects), so a held socket alone never keeps a session alive. A 2025-11-25 client is
   * told first when to reconnect (`retry:` alone, with no event id: the client then opens a
   * fresh stream rather than resuming this one); an earlier one reconnects on its own terms.
   */
  handleGet (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { res } = hijack(request, reply)
    startSse(res, { 'mcp-session-id': this.sessionId })
    this.#standalone = res
    keepAlive(res)
    const version = request.headers['mcp-protocol-version'] ?? this.#protocolVersion
    const hint = typeof version === 'string' && version >= '2025-11-25'
    const lifetime = setTimeout(() => {
      if (this.#standalone !== res) return
      // Free the slot at once, so a reconnect that races the socket's close is not a 409.
      this.#standalone = undefined
      res.end(hint ? `retry: ${RETRY_MS}\n\n` : undefined)
    }, this.#maxStreamLifetimeMs).unref()
    return new Promise(resolve => {
      res.once('close', () => {
        clearTimeout(lifetime)
        if (this.#standalone === res) this.#standalone = undefined
        resolve()
      })
    })
  }

  /**
   * Gives up on every request in flight (shutdown after the drain timeout): each is answered
   * with an error on its stream, and the server is told each is cancelled.
   */
  cancelAll (reason: string): void {
    for (const [id, exchange] of [...this.#exchanges]) {
      this.#exchanges.delete(id)
      this.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason } })
      exchange.answer(id, { jsonrpc: '2.0', id, error: { code: JsonRpcCode.ServerError, message: reason } })
    }
  }

  /** The client stopped waiting for `id`: the server is told, as a client would tell it. */
  abandon (id: RequestId): void {
    if (!this.#exchanges.delete(id)) return
    this.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'the HTTP client disconnected' } })
  }

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (this.#closed) return
    if ('id' in message && ('result' in message || 'error' in message)) {
      const replayed = this.#replays.size === 0 ? undefined : this.#replays.get(message.id as RequestId)
      if (replayed !== undefined) {
        this.#replays.delete(message.id as RequestId)
        replayed(message)
        return
      }
      const exchange = this.#exchanges.get(message.id as RequestId)
      this.#exchanges.delete(message.id as RequestId)
      exchange?.answer(message.id as RequestId, message)
      return
    }
    if (this.peer !== undefined && isJSONRPCRequest(message)) message = this.#outgoingRequest(message)
    const related = options?.relatedRequestId === undefined ? undefined : this.#exchanges.get(options.relatedRequestId)
    if (related !== undefined && !this.#jsonResponse && related.stream(message)) return
    if (this.#standalone !== undefined) {
      this.#standalone.write(sseFrame(message))
      return
    }
    // A server→client request the server did not relate to a request (the SDK sends
    // `ctx.mcpReq.elicitInput` so) while no GET stream is open here: a POST stream of this
    // session still open here reaches the client for sure (the spec lets a server send
    // requests on it), where the GET stream may not be open yet or may be held by another
    // instance that has not made its replica yet.
    if ('id' in message && !this.#jsonResponse && this.#streamOnAnyExchange(message)) return
    if (this.peer !== undefined) {
      // The GET stream may be held by another instance: it writes the message if it is. Who
      // holds it is not recorded anywhere (that would cost a store write per GET and go stale
      // with a dead instance), so a server→client request that no instance can carry is not
      // refused here, as it is alone: it times out at the server (the SDK's request timeout).
      this.peer.toStream(message)
      return
    }
    if ('id' in message) {
      // A server→client request with no stream to carry it would only time out later.
      throw new Error(`No open stream in session ${this.sessionId} to deliver '${(message as JSONRPCRequest).method}'`)
    }
  }

  /** Streams `message` on the most recent exchange still waiting for answers; false when none is. */
  #streamOnAnyExchange (message: JSONRPCMessage): boolean {
    let latest: Exchange | undefined
    for (const exchange of this.#exchanges.values()) latest = exchange
    return latest?.stream(message) ?? false
  }

  /** Renames a server→client request so that its answer, wherever the client POSTs it, comes back to this replica. */
  #outgoingRequest (message: JSONRPCRequest): JSONRPCRequest {
    const id = `${this.peer?.prefix ?? ''}${message.id}`
    this.#outgoing.set(id, message.id)
    // Unanswered ones have timed out at the server long before a thousand more were sent.
    if (this.#outgoing.size > MAX_OUTGOING) this.#outgoing.delete(this.#outgoing.keys().next().value as string)
    return { ...message, id }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#standalone?.end()
    this.#standalone = undefined
    for (const id of [...this.#exchanges.keys()]) {
      this.#exchanges.get(id)?.answer(id, { jsonrpc: '2.0', id, error: { code: JsonRpcCode.ServerError, message: 'Session closed' } })
    }
    this.#exchanges.clear()
    this.#streams.clear()
    this.#outgoing.clear()
    for (const [id, resolve] of this.#replays) resolve({ jsonrpc: '2.0', id, error: { code: JsonRpcCode.ServerError, message: 'Session closed' } })
    this.#replays.clear()
    this.onclose?.()
  }
}
