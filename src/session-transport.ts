import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import {
  isJSONRPCRequest,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type RequestId,
  type Transport,
  type TransportSendOptions
} from '@modelcontextprotocol/server'
import { hijack, sseFrame, startSse } from './http-exchange.js'

const KEEP_ALIVE_MS = 15_000

/**
 * Proxies and load balancers cut connections that stay silent, and a tool may think for
 * minutes: an SSE comment every 15 s keeps the stream alive and is ignored by clients (the
 * SDK's own transports send one at the same pace).
 */
function keepAlive (res: ServerResponse): void {
  const timer = setInterval(() => { res.write(': keep-alive\n\n') }, KEEP_ALIVE_MS).unref()
  res.once('close', () => { clearInterval(timer) })
}

/** One POST waiting for the answers to the requests it carried. */
class PostExchange {
  readonly #transport: SessionTransport
  readonly #request: FastifyRequest
  readonly #reply: FastifyReply
  readonly #batch: boolean
  readonly #order: RequestId[]
  readonly #pending: Set<RequestId>
  readonly #answers = new Map<RequestId, JSONRPCMessage>()
  #res: ServerResponse | undefined
  #done = false
  readonly finished: Promise<void>
  #finish!: () => void

  constructor (transport: SessionTransport, request: FastifyRequest, reply: FastifyReply, ids: RequestId[], batch: boolean) {
    this.#transport = transport
    this.#request = request
    this.#reply = reply
    this.#batch = batch
    this.#order = ids
    this.#pending = new Set(ids)
    this.finished = new Promise(resolve => { this.#finish = resolve })
    reply.raw.once('close', () => {
      if (this.#done) return
      this.#done = true
      // The client went away: the server should stop working on what it asked for.
      for (const id of this.#pending) transport.abandon(id)
      this.#finish()
    })
  }

  /** A message the server relates to one of this POST's requests: streams the answer as SSE. */
  stream (message: JSONRPCMessage): boolean {
    if (this.#done) return false
    if (this.#res === undefined) {
      const res = hijack(this.#request, this.#reply).res
      startSse(res, { 'mcp-session-id': this.#transport.sessionId })
      keepAlive(res)
      this.#res = res
    }
    this.#res.write(sseFrame(message))
    return true
  }

  /** Records one answer; a JSON batch answer keeps request order (JSON-RPC allows any). */
  answer (id: RequestId, message: JSONRPCMessage): void {
    if (this.#done || !this.#pending.delete(id)) return
    if (this.#res !== undefined) this.#res.write(sseFrame(message))
    else this.#answers.set(id, message)
    if (this.#pending.size > 0) return
    this.#done = true
    if (this.#res !== undefined) {
      this.#res.end()
    } else {
      void this.#reply.code(200).header('mcp-session-id', this.#transport.sessionId).type('application/json')
        .send(JSON.stringify(this.#batch ? this.#order.map(id => this.#answers.get(id)) : this.#answers.get(this.#order[0])))
    }
    this.#finish()
  }
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
 * Not supported: resumption of a broken stream (`Last-Event-ID`), which the SDK offers only
 * with an event store; clients re-issue their request instead.
 */
export class SessionTransport implements Transport {
  readonly sessionId: string
  onclose?: () => void
  onerror?: (error: Error) => void
  onmessage?: <T extends JSONRPCMessage>(message: T) => void
  readonly #jsonResponse: boolean
  readonly #exchanges = new Map<RequestId, PostExchange>()
  #standalone: ServerResponse | undefined
  #closed = false

  constructor (sessionId: string, options: { jsonResponse: boolean }) {
    this.sessionId = sessionId
    this.#jsonResponse = options.jsonResponse
  }

  async start (): Promise<void> {}

  get hasStandaloneStream (): boolean { return this.#standalone !== undefined }

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
        jsonrpc: '2.0', id: duplicate.id, error: { code: -32600, message: `Request id ${JSON.stringify(duplicate.id)} is already in flight in this session` }
      }))
      return
    }
    const exchange = requests.length > 0
      ? new PostExchange(this, request, reply, requests.map(message => message.id), Array.isArray(body))
      : undefined
    for (const message of requests) this.#exchanges.set(message.id, exchange as PostExchange)
    for (const message of messages) this.onmessage?.(message)
    if (exchange === undefined) {
      void reply.code(202).header('mcp-session-id', this.sessionId).send()
      return
    }
    await exchange.finished
  }

  /** Opens the session's standalone SSE stream (GET); one at a time, as the spec allows. */
  handleGet (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { res } = hijack(request, reply)
    startSse(res, { 'mcp-session-id': this.sessionId })
    this.#standalone = res
    keepAlive(res)
    return new Promise(resolve => {
      res.once('close', () => {
        if (this.#standalone === res) this.#standalone = undefined
        resolve()
      })
    })
  }

  /** The client stopped waiting for `id`: the server is told, as a client would tell it. */
  abandon (id: RequestId): void {
    if (!this.#exchanges.delete(id)) return
    this.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'the HTTP client disconnected' } })
  }

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (this.#closed) return
    if ('id' in message && ('result' in message || 'error' in message)) {
      const exchange = this.#exchanges.get(message.id as RequestId)
      this.#exchanges.delete(message.id as RequestId)
      exchange?.answer(message.id as RequestId, message)
      return
    }
    const related = options?.relatedRequestId === undefined ? undefined : this.#exchanges.get(options.relatedRequestId)
    if (related !== undefined && !this.#jsonResponse && related.stream(message)) return
    if (this.#standalone !== undefined) {
      this.#standalone.write(sseFrame(message))
      return
    }
    if ('id' in message) {
      // A server→client request with no stream to carry it would only time out later.
      throw new Error(`No open stream in session ${this.sessionId} to deliver '${(message as JSONRPCRequest).method}'`)
    }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#standalone?.end()
    this.#standalone = undefined
    for (const id of [...this.#exchanges.keys()]) {
      this.#exchanges.get(id)?.answer(id, { jsonrpc: '2.0', id, error: { code: -32000, message: 'Session closed' } })
    }
    this.#exchanges.clear()
    this.onclose?.()
  }
}
