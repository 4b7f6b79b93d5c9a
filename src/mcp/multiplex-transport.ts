import type {
  AuthInfo,
  JSONRPCMessage,
  JSONRPCNotification,
  JSONRPCRequest,
  RequestId,
  Transport,
  TransportSendOptions
} from '@modelcontextprotocol/server'
import { CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY } from '@modelcontextprotocol/server'
import { GATEWAY_INFO } from '../defaults.js'
import { JsonRpcCode } from '../errors.js'

/** One HTTP exchange waiting on the shared connection. */
export interface Exchange {
  /** Receives the final response, with the client's own request id restored. */
  respond (message: JSONRPCMessage): void
  /** Receives notifications the server relates to this request (progress, log messages). */
  notify (message: JSONRPCMessage): void
  /**
   * Answers a server→client request the server relates to this request (sampling,
   * elicitation), when the exchange has a client to ask; without it, such a request is refused.
   */
  ask?: (request: JSONRPCRequest) => Promise<Record<string, unknown>>
  /** The HTTP request it came with, where there is one: its id, the client's address, and who is calling (the handler's `ctx.http.authInfo`). */
  origin?: { requestId?: string, ip?: string, authInfo?: AuthInfo }
}

interface Pending extends Exchange {
  clientId: RequestId
}

/**
 * A transport that lets one long-lived SDK server connection answer many concurrent
 * stateless HTTP requests.
 *
 * Written here because the SDK has no such transport: its stateless HTTP entry builds and
 * connects a fresh server for every request, which is most of its cost per request, and its
 * session transport serves one client. Each request gets a connection-unique id on the way
 * in, so two clients that both send `"id": 1` never collide, and its own id back on the way
 * out. Notifications the server relates to a request go to that request's exchange; the
 * rest (list changes) go to `onUnrelated`, or are dropped. A server→client request (sampling,
 * elicitation) goes to the exchange it belongs to when that exchange can ask its client (see
 * `send`); otherwise (stateless serving has no way back to the client) it is refused at once
 * rather than left to time out.
 */
export class MultiplexTransport implements Transport {
  onclose?: () => void
  onerror?: (error: Error) => void
  onmessage?: <T extends JSONRPCMessage>(message: T) => void
  #pending = new Map<number, Pending>()
  #nextId = 1
  #closed = false
  #onClosed: (() => void) | undefined
  #onUnrelated: ((message: JSONRPCNotification) => void) | undefined

  /**
   * @param options.onClosed runs when the connection ends, before waiting exchanges are answered.
   * @param options.onUnrelated receives notifications tied to no request (list changes).
   */
  constructor (options: { onClosed?: () => void, onUnrelated?: (message: JSONRPCNotification) => void } = {}) {
    this.#onClosed = options.onClosed
    this.#onUnrelated = options.onUnrelated
  }

  get closed (): boolean { return this.#closed }

  async start (): Promise<void> {}

  /**
   * Sends one client request to the server; returns the id it travels under. `deliver`, when
   * given, hands the renumbered request to the server a quicker way than the transport's
   * receiver, and answers false where it cannot (the request then takes the receiver).
   */
  request (message: JSONRPCRequest, exchange: Exchange, deliver?: (message: JSONRPCRequest) => boolean): number {
    const id = this.#nextId++
    if (this.#closed) {
      exchange.respond(closedResponse(message.id))
      return id
    }
    this.#pending.set(id, { ...exchange, clientId: message.id })
    const renumbered = { ...message, id }
    if (deliver === undefined || !deliver(renumbered)) this.onmessage?.(renumbered)
    return id
  }

  /** Where a request in flight came from, by the id it travels under (see `carryAuthInfo`). */
  originOf (id: RequestId): Exchange['origin'] {
    return this.#pending.get(id as number)?.origin
  }

  /** The id the client gave a request in flight, by the id it travels under. */
  clientIdOf (id: RequestId): RequestId | undefined {
    return this.#pending.get(id as number)?.clientId
  }

  /** Sends a client notification (such as `notifications/initialized`) to the server. */
  notify (message: JSONRPCNotification): void {
    if (!this.#closed) this.onmessage?.(message)
  }

  /** The client went away: stop waiting, and tell the server so the handler can stop. */
  cancel (id: number, reason: string): void {
    if (!this.#pending.delete(id)) return
    this.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason } })
  }

  /**
   * Gives up on every request in flight (shutdown after the drain timeout): each is answered
   * with an error, and the server is told each is cancelled.
   */
  cancelAll (reason: string): void {
    for (const [id, pending] of [...this.#pending]) {
      this.cancel(id, reason)
      pending.respond({ jsonrpc: '2.0', id: pending.clientId, error: { code: JsonRpcCode.ServerError, message: reason } })
    }
  }

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if ('id' in message && ('result' in message || 'error' in message)) {
      const pending = this.#pending.get(message.id as number)
      if (pending === undefined) return
      this.#pending.delete(message.id as number)
      pending.respond({ ...message, id: pending.clientId })
      return
    }
    const related = options?.relatedRequestId
    if ('id' in message && 'method' in message) {
      // The SDK relates a question to its request when the handler asks through
      // `ctx.mcpReq.send` or returns `inputRequired()`, not through `elicitInput` or
      // `requestSampling`: those go to the one request in flight, and are refused when there
      // are several rather than put to a client they may not belong to.
      const exchange = related !== undefined ? this.#pending.get(related as number) : this.#pending.size === 1 ? this.#pending.values().next().value : undefined
      const ask = exchange?.ask
      if (ask === undefined) {
        const reason = related === undefined && this.#pending.size > 1
          ? `'${message.method}' is related to no request and ${this.#pending.size} are in flight, so there is no telling whose client to ask (ask through ctx.mcpReq.send or inputRequired(), which relate it)`
          : `'${message.method}' needs a session: stateless serving has no way back to the client`
        const refusal = { jsonrpc: '2.0' as const, id: message.id, error: { code: JsonRpcCode.MethodNotFound, message: reason } }
        queueMicrotask(() => this.onmessage?.(refusal))
        return
      }
      ask(message).then(result => {
        this.onmessage?.({ jsonrpc: '2.0', id: message.id, result })
      }, (err: { code?: unknown, message?: string, data?: unknown }) => {
        const code = typeof err.code === 'number' ? err.code : JsonRpcCode.InternalError
        this.onmessage?.({ jsonrpc: '2.0', id: message.id, error: { code, message: err.message ?? 'The client did not answer', ...(err.data !== undefined && { data: err.data }) } })
      })
      return
    }
    if (related !== undefined) this.#pending.get(related as number)?.notify(message)
    else this.#onUnrelated?.(message as JSONRPCNotification)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#onClosed?.()
    for (const pending of this.#pending.values()) pending.respond(closedResponse(pending.clientId))
    this.#pending.clear()
    this.onclose?.()
  }
}

function closedResponse (id: RequestId): JSONRPCMessage {
  return { jsonrpc: '2.0', id, error: { code: JsonRpcCode.ServerError, message: 'Server is shutting down' } }
}

/**
 * Holds a `subscriptions/listen` open on a 2026-07-28 server instance's connection for the
 * connection's life: under the SDK's entry such an instance announces its list changes only
 * to listen subscriptions of its own connection, and what arrives goes to the transport's
 * `onUnrelated`.
 */
export function listenForListChanges (mux: MultiplexTransport, protocolVersion: string): void {
  mux.request({
    jsonrpc: '2.0',
    id: 0,
    method: 'subscriptions/listen',
    params: {
      notifications: { toolsListChanged: true, promptsListChanged: true, resourcesListChanged: true },
      _meta: { [PROTOCOL_VERSION_META_KEY]: protocolVersion, [CLIENT_INFO_META_KEY]: GATEWAY_INFO, [CLIENT_CAPABILITIES_META_KEY]: {} }
    }
  }, { respond () {}, notify () {} })
}
