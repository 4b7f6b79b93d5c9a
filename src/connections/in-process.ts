import {
  LATEST_PROTOCOL_VERSION,
  McpServer,
  ProtocolError,
  SdkError,
  SdkErrorCode,
  type CallToolResult,
  type InitializeResult,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type Notification,
  type Progress,
  type RequestId,
  type Server,
  type ServerCapabilities,
  type ServerContext,
  type Tool,
  type TransportSendOptions
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import { GATEWAY_INFO } from '../defaults.js'
import { CallError, JsonRpcCode } from '../errors.js'
import { carryAuthInfo, interceptHandlers, type Handler } from '../mcp/handlers.js'
import { listenForListChanges, MultiplexTransport } from '../mcp/multiplex-transport.js'
import { allPages, askDownstream, LIST_CHANGED } from '../mcp/protocol.js'
import { sharedJsonSchemaValidator } from '../mcp/validator.js'
import { directTools, type DirectTools } from './direct-call.js'
import type { ListKind, McpConnection, RelayOptions, RelaySession, ServerFactory, ServerState } from './connection.js'

/** The revision of the connection of 2026-07-28 clients' requests (`#modernMux`); the SDK exports no list of its modern revisions. */
const MODERN_REVISION = '2026-07-28'

/**
 * An in-process server, reached over a multiplexing transport (see `multiplex-transport.ts`)
 * into one long-lived connection opened by the SDK's own serving entry. The gateway is that
 * connection's client: it initializes it, lists tools and calls them. Nothing is built per
 * call, and no SDK `Client` sits on the REST hot path: its result parsing and output
 * validation would repeat work the server has just done (the server validates
 * `structuredContent` against the `outputSchema` before answering). A server's question
 * during a call (sampling, elicitation) goes to the client that made it (`/mcp`).
 * Downstream MCP sessions get their own instance from the same factory (`createServer`).
 *
 * REST tool calls of an `McpServer` take a faster way (`callValidated`): the registered tool
 * of the connection's instance, run as the SDK's own `tools/call` handler runs it, with a
 * context built here, without the JSON-RPC round trip through the connection.
 *
 * The requests of 2026-07-28 clients (those `/mcp` relays, `RelayOptions.modern`) take a
 * second connection, opened by the same entry pinned to that revision, on their first one:
 * an instance of the 2026-07-28 era answers them as the server's own endpoint does (see
 * `#modernMux`), rather than the 2025 connection with the gateway asking in its stead.
 */
export class InProcessConnection implements McpConnection {
  readonly name: string
  #factory: ServerFactory
  #state: ServerState = 'starting'
  #failure: string | undefined
  #mux: MultiplexTransport | undefined
  #handle: StdioServerHandle | undefined
  /** The 2026-07-28 connection, opened on the first request of a 2026-07-28 client (`#modernMux`). */
  #modern: { mux: MultiplexTransport, handle: StdioServerHandle } | undefined
  #tools: Tool[] = []
  #initialized: InitializeResult | undefined
  #listeners = new Set<(kind: ListKind) => void>()
  /** How `callValidated` reaches the connection's instance directly; unset for a low-level `Server`. */
  #direct: DirectDispatch | undefined
  /** Calls on the direct way in flight, failed when the connection closes under them. */
  #directCalls = new DirectCalls()
  /** Ids of direct calls, below zero: the multiplexer numbers its requests from 1 up, so no id is ever both. */
  #nextDirectId = -1

  constructor (name: string, factory: ServerFactory) {
    this.name = name
    this.#factory = factory
  }

  get state (): ServerState { return this.#state }
  get failure (): string | undefined { return this.#failure }
  /** An in-process server does not come back once down: nothing to retry. */
  get retryAfter (): undefined { return undefined }

  async start (): Promise<void> {
    try {
      // The server ending its connection on its own (a crash, a tool that closes it) takes
      // it down: calls in flight fail with 502, later calls get 503.
      const mux = new ConnectionTransport({
        onClosed: () => {
          if (this.#state === 'up' || this.#state === 'starting') {
            this.#state = 'down'
            this.#failure = 'the server closed its connection'
          }
          // As the connection answers its own requests in flight, so the direct calls.
          for (const call of this.#directCalls.all()) call.closed(new CallError('CONNECTION_CLOSED', `Server '${this.name}' closed its connection`))
        },
        onUnrelated: message => { this.#onUnrelated(message.method) }
      })
      this.#mux = mux
      // Built here, not inside the entry, so a factory that throws fails the start with its
      // own error rather than an anonymous 'Internal server error' answer.
      let first: McpServer | Server | undefined = this.#connectionServer(mux)
      const factory = (): McpServer | Server => {
        const server = first ?? this.#connectionServer(mux)
        first = undefined
        return server
      }
      this.#handle = serveStdio(factory, { transport: mux })
      this.#initialized = await this.#request('initialize', {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        // What the gateway can pass on to the client of a call (`askDownstream`), as it
        // declares to upstreams: a call over REST, which has no client, is refused.
        capabilities: { sampling: {}, elicitation: { form: {}, url: {} } },
        clientInfo: GATEWAY_INFO
      }) as InitializeResult
      mux.notify({ jsonrpc: '2.0', method: 'notifications/initialized' })
      // A server with no tools (only prompts or resources) has no tools/list to ask.
      this.#tools = this.#initialized.capabilities.tools === undefined ? [] : await this.#listTools()
      this.#state = 'up'
    } catch (err) {
      // The error's own text (a path, a connection string) goes to the log, never into an answer.
      this.#failure = 'the server failed to start; see the log'
      await this.close().catch(() => {})
      this.#state = 'down'
      throw err
    }
  }

  async #listTools (): Promise<Tool[]> {
    return await allPages<Tool>(async params => await this.#request('tools/list', params) as Record<string, unknown>, 'tools')
  }

  #onUnrelated (method: string): void {
    const kind = LIST_CHANGED[method]
    if (kind === undefined) return
    const refreshed = kind === 'tools'
      ? this.#listTools().then(tools => { this.#tools = tools })
      : Promise.resolve()
    refreshed.then(() => { for (const listener of this.#listeners) listener(kind) }, () => {})
  }

  tools (): readonly Tool[] { return this.#tools }
  capabilities (): ServerCapabilities { return this.#initialized?.capabilities ?? {} }
  instructions (): string | undefined { return this.#initialized?.instructions }

  onListChanged (listener: (kind: ListKind) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** Relay servers built over this one (the aggregate's) hear of its list changes. */
  attach (session: RelaySession): () => void {
    return this.onListChanged(kind => { session.notify({ method: `notifications/${kind}/list_changed` }) })
  }

  async callTool (name: string, args: Record<string, unknown>, options: RelayOptions = {}): Promise<CallToolResult> {
    return await this.request('tools/call', { name, arguments: args }, options) as CallToolResult
  }

  /**
   * A tool call of the REST routes, whose arguments Fastify has validated against the tool's
   * `inputSchema`: answered as `callTool` answers it, without the JSON-RPC round trip (some
   * 20 µs and 20 KB a call). A registered tool of an `McpServer` runs as the server's own
   * `tools/call` handler runs it, without the SDK's stored chain (`direct-call.ts`): its
   * schema's parse of the arguments (zod's output reaches the tool: defaults, transforms,
   * refinements a JSON Schema cannot say), the `outputSchema` check of `structuredContent`, a
   * throw or a bad output turned into an `isError` result, the input-required seam and the
   * result's wire validation are the SDK's steps, copied; the parse of a request the gateway
   * built itself and the five nested async wrappers are what is left out. What that copy
   * cannot do exactly (an unknown, disabled or task-based tool, a server with an input size
   * limit, a subclass of `McpServer`) takes the stored chain (`directDispatch`), as before.
   *
   * What the connection's far end gave the handler is built here (`DirectCall`): the abort
   * signal, fired by the caller's signal, the timeout or the connection closing, with the
   * reasons the connection gives; progress to `onProgress`; the caller as
   * `ctx.http.authInfo`; every question to a client refused as a REST call's is; its
   * notifications and log messages through the server, whose checks apply, to nowhere, as a
   * REST call has no client to hear them.
   *
   * A low-level `Server`, an SDK without the stored handler, a server with no `tools/call`
   * handler, and a call with a client to ask or in the 2026-07-28 era take a connection
   * (`callTool`), as before.
   */
  // Not `async`: the promise of the call is the answer, with no second one wrapped around it.
  callValidated (name: string, args: Record<string, unknown>, options: Pick<RelayOptions, 'signal' | 'timeoutMs' | 'onProgress' | 'authInfo'> = {}): Promise<CallToolResult> {
    const direct = this.#direct
    const handler = direct?.handler()
    const relay = options as RelayOptions
    if (direct === undefined || handler === undefined || relay.downstream !== undefined || relay.modern === true) return this.callTool(name, args, options)
    if (this.#state !== 'up') return Promise.reject(new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`))
    const id = this.#nextDirectId--
    return new Promise<CallToolResult>((resolve, reject) => {
      new DirectCall(this.#directCalls, resolve, reject).start(handler, direct, id, name, args, options)
    })
  }

  /** Whether `callValidated` runs tools directly, rather than over the connection: for tests and diagnostics. */
  get directToolCalls (): boolean {
    return this.#direct?.handler() !== undefined
  }

  async request (method: string, params: Record<string, unknown> | undefined, options: RelayOptions = {}): Promise<Record<string, unknown>> {
    if (this.#state !== 'up') throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`)
    if (options.modern === true) return await this.#exchange(this.#modernMux(), method, params ?? {}, options) as Record<string, unknown>
    return await this.#request(method, params ?? {}, options) as Record<string, unknown>
  }

  /**
   * The connection of 2026-07-28 clients' requests: the SDK's entry pinned to that revision
   * (`legacy: 'reject'`), as the shared lanes of an endpoint are, so every request is served by
   * an instance of that era from the params as the client sent them (the relay puts back the
   * `_meta` envelope, `inputResponses` and `requestState` the SDK lifted off, see
   * `modernParams` in relay-server.ts). What the server answers comes back as it is: its own
   * `input_required` (its `inputRequests` keys, its `requestState`), which the relay passes to
   * the client, and its JSON-RPC errors, such as -32021 for a capability the client did not
   * declare. A request of the 2025 connection could not carry either: there the SDK's shim
   * turns the server's `input_required` into server→client requests, and the capabilities
   * are the gateway's, declared once at `initialize`.
   *
   * One instance for the connection's life, as on a lane. Should the server end this
   * connection on its own, the requests on it fail as on the other and the next 2026-07-28
   * request opens another.
   */
  #modernMux (): MultiplexTransport {
    if (this.#modern !== undefined && !this.#modern.mux.closed) return this.#modern.mux
    const mux = new MultiplexTransport({ onUnrelated: message => { this.#onUnrelated(message.method) } })
    const handle = serveStdio(() => this.#instance(mux), { transport: mux, legacy: 'reject' })
    // A 2026-07-28 instance announces its list changes only on listen subscriptions of its
    // own connection (a tool of a 2026-07-28 caller may change a list), so one is held open
    // for the connection's life and what arrives is handled as the 2025 connection's are.
    listenForListChanges(mux, MODERN_REVISION)
    this.#modern = { mux, handle }
    return mux
  }

  /** One request over the 2025 connection, with the SDK client's error codes for timeouts and closes. */
  #request (method: string, params: Record<string, unknown>, options: RelayOptions = {}): Promise<unknown> {
    const mux = this.#mux
    if (mux === undefined) return Promise.reject(new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`))
    return this.#exchange(mux, method, params, options)
  }

  /** One request over a connection of the server's (`mux`): progress, the caller's questions, cancellation, timeout. */
  #exchange (mux: MultiplexTransport, method: string, params: Record<string, unknown>, options: RelayOptions): Promise<unknown> {
    const { onProgress, downstream } = options
    if (onProgress !== undefined) {
      // The multiplexer routes the request's notifications to it, so any token is unique enough.
      params = { ...params, _meta: { ...(params._meta as object | undefined), progressToken: 1 } }
    }
    return new Promise((resolve, reject) => {
      let settled = false
      let timer: NodeJS.Timeout | undefined
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        return true
      }
      const id = mux.request({ jsonrpc: '2.0', id: 0, method, params }, {
        ...(options.authInfo !== undefined && { origin: { authInfo: options.authInfo } }),
        ask: async question => await askDownstream(downstream, { method: question.method, ...(question.params !== undefined && { params: question.params }) }),
        notify (message: JSONRPCMessage) {
          if (!('method' in message)) return
          if (message.method === 'notifications/progress') {
            const { progressToken: _token, ...progress } = message.params as Progress & { progressToken: unknown }
            onProgress?.(progress)
          } else if (downstream !== undefined) {
            downstream.notify({ method: message.method, ...(message.params !== undefined && { params: message.params }) }).catch(() => {})
          }
        },
        respond: (response) => {
          if (!settle()) return
          if (mux.closed) reject(new CallError('CONNECTION_CLOSED', `Server '${this.name}' closed its connection`))
          else if ('error' in response) reject(new CallError('PROTOCOL_ERROR', response.error.message, response.error.code, response.error.data))
          else resolve((response as { result: unknown }).result)
        }
      })
      const onAbort = (): void => {
        if (!settle()) return
        mux.cancel(id, 'the caller went away')
        reject(new CallError('ABORTED', 'The call was cancelled'))
      }
      if (settled) return
      if (options.signal?.aborted === true) {
        onAbort()
        return
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          if (!settle()) return
          mux.cancel(id, `timed out after ${options.timeoutMs} ms`)
          reject(new CallError('REQUEST_TIMEOUT', `No answer within ${options.timeoutMs} ms`))
        }, options.timeoutMs)
      }
    })
  }

  createServer (): McpServer | Server {
    return this.#factory({ jsonSchemaValidator: sharedJsonSchemaValidator })
  }

  /**
   * The instance behind the gateway's own connection: it sees the caller of each call
   * (`ctx.http.authInfo`). The entry builds one per connection; should it build another (a
   * probe it discards), the last one built is the one that serves, and calls go to it.
   */
  #connectionServer (mux: MultiplexTransport): McpServer | Server {
    const instance = this.#instance(mux)
    this.#direct = directDispatch(instance)
    return instance
  }

  /** An instance behind one of the gateway's connections (`mux`), which sees the caller of each request. */
  #instance (mux: MultiplexTransport): McpServer | Server {
    return interceptHandlers(this.createServer(), (_method, handler) => carryAuthInfo(handler, id => mux.originOf(id)?.authInfo))
  }

  async close (): Promise<void> {
    this.#state = 'closed'
    const handles = [this.#handle, this.#modern?.handle]
    this.#handle = undefined
    this.#mux = undefined
    this.#modern = undefined
    await Promise.all(handles.map(async handle => await handle?.close()))
  }
}

// --- The direct way of `callValidated` ---------------------------------------------------

/** The per-server half of a direct call's context, built once per connection. */
interface DirectDispatch {
  /** The stored `tools/call` handler, looked up per call: a server may install it late (its first tool registered later). */
  handler (): Handler | undefined
  /** A notification of a REST call (a log message, progress nobody asked for), sent with the server's checks to nowhere. */
  notify (notification: Notification): Promise<void>
  log: ServerContext['mcpReq']['log']
  /** The registered tools, run without the stored chain (`direct-call.ts`); unset where the SDK's internals are not as expected. */
  tools: DirectTools | undefined
}

/**
 * How `callValidated` reaches an `McpServer` instance: its registered tools, run directly where
 * that is exact (`tools`, see direct-call.ts), else the stored `tools/call` handler: the chain
 * the SDK itself dispatches a request to (its request checks, `McpServer`'s tool lookup and
 * argument parsing, the registered handler, the output checks), with every wrapper the gateway
 * installed (`interceptHandlers`). The only wrapper on an in-process instance is
 * `carryAuthInfo`, which has nothing to add to a direct call: its context carries the caller.
 *
 * The SDK has no public entry for the chain. It relies on `Protocol._getRequestHandler(method)`,
 * a protected accessor (SDK v2.4) documented as the one "role classes that dispatch synthesized
 * requests through the same stored handler chain" use, and on the handler's calling convention
 * (`Handler`, which `interceptHandlers` relies on already). Should an upgrade remove the
 * accessor, calls take the connection again (slower, not wrong) and
 * test/src/connections/in-process-fast.test.ts fails.
 */
function directDispatch (instance: McpServer | Server): DirectDispatch | undefined {
  if (!(instance instanceof McpServer)) return undefined
  const server = instance.server
  const accessor = (server as unknown as { _getRequestHandler?: unknown })._getRequestHandler
  if (typeof accessor !== 'function') return undefined
  // Related to a request id the multiplexer never has in flight (it counts from 1), so it
  // drops them, as it drops those of a REST call today: nobody is listening.
  const nowhere = { relatedRequestId: 0 }
  const notify = async (notification: Notification): Promise<void> => { await server.notification(notification, nowhere) }
  return {
    handler: () => (accessor as (method: string) => Handler | undefined).call(server, 'tools/call'),
    tools: directTools(instance),
    notify,
    // As the SDK's own `ctx.mcpReq.log`, less the level a client may set, which would only
    // decide whether a message nobody hears is sent (and no client sets one on this connection).
    log: async (level, data, logger) => {
      if (server.getCapabilities().logging !== undefined) await notify({ method: 'notifications/message', params: { level, data, logger } })
    }
  }
}

/**
 * The connection's multiplexer, which also answers the server's questions tied to a direct
 * call. The SDK's input-required shim (a tool returning `inputRequired()` on this 2025-era
 * connection) asks through the server, relating each question to the call's id; the
 * multiplexer has never seen that id and would refuse it in other terms than a REST call's.
 */
class ConnectionTransport extends MultiplexTransport {
  override async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    const related = options?.relatedRequestId
    if (typeof related !== 'number' || related >= 0 || !('method' in message) || !('id' in message)) return await super.send(message, options)
    const error = await restRefusal(message.method)
    this.onmessage?.({ jsonrpc: '2.0', id: message.id, error })
  }
}

/**
 * A server's question during a REST call, refused as the multiplexer refuses the question of
 * an exchange without a client (`askDownstream` failing): the error answer it sends.
 */
async function restRefusal (method: string): Promise<{ code: number, message: string, data?: unknown }> {
  try {
    await askDownstream(undefined, { method })
  } catch (err) {
    const { code, message, data } = err as { code?: unknown, message?: string, data?: unknown }
    return { code: typeof code === 'number' ? code : JsonRpcCode.InternalError, message: message ?? 'The client did not answer', ...(data !== undefined && { data }) }
  }
  // Without a client `askDownstream` always refuses; should it not, nobody answered all the same.
  return { code: JsonRpcCode.InternalError, message: 'The client did not answer' }
}

/** The same refusal as the tool's question gets it over the connection: the SDK's error, made from that answer. */
async function refuse (method: string): Promise<never> {
  const { code, message, data } = await restRefusal(method)
  throw ProtocolError.fromError(code, message, data)
}
const refuseSend = (async (request: { method: string }) => await refuse(request.method)) as ServerContext['mcpReq']['send']
const refuseElicitation = async (): Promise<never> => await refuse('elicitation/create')
const refuseSampling = async (): Promise<never> => await refuse('sampling/createMessage')
/** A REST call carries no multi-round-trip state. */
const noRequestState = (): undefined => undefined

/** The timer of a direct call: a plain function with arguments, so no closure is built per call. */
function timedOut (call: DirectCall, timeoutMs: number): void {
  call.end(new CallError('REQUEST_TIMEOUT', `No answer within ${timeoutMs} ms`), `timed out after ${timeoutMs} ms`)
}

/**
 * One call on the direct way: the handler's context, and the call's end, whichever comes
 * first: the answer, the caller's signal (it is the listener itself, `handleEvent`, so no
 * closure is built), the timeout, or the connection closing. Each aborts the handler's signal
 * with the reason the SDK gives it over the connection (the connection's cancellation reason,
 * or the SDK's `ConnectionClosed`) and settles as the connection's own requests do.
 */
class DirectCall {
  /** Its neighbours in the connection's list of calls in flight (`DirectCalls`). */
  previous: DirectCall | undefined
  next: DirectCall | undefined
  readonly #inflight: DirectCalls
  readonly #resolve: (result: CallToolResult) => void
  readonly #reject: (err: Error) => void
  #controller: AbortController | undefined
  /** Ended before its answer, and why: what the handler's signal says, whenever it is asked for. */
  #ended = false
  #reason: unknown
  /** The caller's signal, listened to while the call runs. */
  #signal: AbortSignal | undefined
  #timer: NodeJS.Timeout | undefined
  #settled = false

  constructor (inflight: DirectCalls, resolve: (result: CallToolResult) => void, reject: (err: Error) => void) {
    this.#inflight = inflight
    this.#resolve = resolve
    this.#reject = reject
  }

  start (handler: Handler, direct: DirectDispatch, id: RequestId, name: string, args: Record<string, unknown>, options: Pick<RelayOptions, 'signal' | 'timeoutMs' | 'onProgress' | 'authInfo'>): void {
    const { signal, timeoutMs, onProgress, authInfo } = options
    if (signal?.aborted === true) {
      this.#settled = true
      this.#reject(new CallError('ABORTED', 'The call was cancelled'))
      return
    }
    this.#inflight.add(this)
    if (signal !== undefined) {
      this.#signal = signal
      // Not `once`: it is removed when the call settles anyway, and `once` costs a wrapper.
      signal.addEventListener('abort', this)
    }
    if (timeoutMs !== undefined) this.#timer = setTimeout(timedOut, timeoutMs, this, timeoutMs)
    // Progress goes to whoever asked for it, by the token the request carries, as over the connection.
    const meta = onProgress === undefined ? undefined : { progressToken: id }
    const request: JSONRPCRequest = { jsonrpc: '2.0', id, method: 'tools/call', params: meta === undefined ? { name, arguments: args } : { name, arguments: args, _meta: meta } }
    const ctx: ServerContext = {
      mcpReq: new DirectRequest(this, id, meta, onProgress === undefined ? direct.notify : progressTo(onProgress, direct.notify), direct.log),
      http: authInfo === undefined ? undefined : { authInfo }
    }
    let answer: Promise<unknown>
    try {
      // The tool's own handler, run as McpServer runs it, where that can be done exactly; else the stored chain.
      answer = direct.tools?.run(name, args, request, ctx) ?? handler(request, ctx)
    } catch (err) {
      answer = Promise.reject(err)
    }
    answer.then(result => { this.#answered(result as CallToolResult) }, (err: unknown) => { this.#failed(err) })
  }

  /**
   * The handler's abort signal, made when the handler first asks for it: an `AbortSignal` is
   * the most expensive thing a call would build (an `EventTarget`: 1.7 KB and microseconds),
   * and most tools never look at theirs. Asked for after the call ended early, it is aborted already.
   */
  get signal (): AbortSignal {
    this.#controller ??= new AbortController()
    if (this.#ended && !this.#controller.signal.aborted) this.#controller.abort(this.#reason)
    return this.#controller.signal
  }

  /** The caller's signal fired: the client went away. */
  handleEvent (): void {
    this.end(new CallError('ABORTED', 'The call was cancelled'), 'the caller went away')
  }

  /** The connection closed under the call. */
  closed (err: CallError): void {
    this.end(err, new SdkError(SdkErrorCode.ConnectionClosed, 'Connection closed'))
  }

  /** Ends the call before its answer: the handler's signal aborts with `reason`, the caller gets `err`. */
  end (err: CallError, reason: unknown): void {
    if (!this.#settle()) return
    this.#ended = true
    this.#reason = reason
    this.#controller?.abort(reason)
    this.#reject(err)
  }

  #answered (result: CallToolResult): void {
    if (this.#settle()) this.#resolve(result)
  }

  /**
   * A throw out of the handler chain (a request the SDK refused, a bad result; the tool's own
   * throw is an `isError` result already), reported as the connection reports the error
   * answer the SDK's `Protocol` would have sent for it: the error's own code, else internal
   * error, with -32002 sent as -32602 as the 2025 era does (the connection speaks 2025).
   */
  #failed (err: unknown): void {
    if (!this.#settle()) return
    const { code, message, data } = (err ?? {}) as { code?: unknown, message?: string, data?: unknown }
    const rpcCode = Number.isSafeInteger(code) ? code as number : JsonRpcCode.InternalError
    this.#reject(new CallError('PROTOCOL_ERROR', message ?? 'Internal error', rpcCode === JsonRpcCode.ResourceNotFound ? JsonRpcCode.InvalidParams : rpcCode, data))
  }

  #settle (): boolean {
    if (this.#settled) return false
    this.#settled = true
    clearTimeout(this.#timer)
    this.#signal?.removeEventListener('abort', this)
    this.#inflight.delete(this)
    return true
  }
}

/**
 * The direct calls in flight on a connection, listed through the calls themselves. Not a
 * `Set`: a call is added and removed on every REST call, and a long-lived `Set` reallocates
 * its table now and then as entries come and go, in the old generation where the `Set`
 * lives, which only a full collection reclaims (measured with V8's sampling heap profiler:
 * the largest part of what a REST call left in the old generation).
 */
class DirectCalls {
  #first: DirectCall | undefined

  add (call: DirectCall): void {
    call.next = this.#first
    if (this.#first !== undefined) this.#first.previous = call
    this.#first = call
  }

  delete (call: DirectCall): void {
    if (call.previous !== undefined) call.previous.next = call.next
    else if (this.#first === call) this.#first = call.next
    else return
    if (call.next !== undefined) call.next.previous = call.previous
    call.previous = undefined
    call.next = undefined
  }

  /** The calls in flight now, as a list of their own: ending one removes it from this one. */
  all (): DirectCall[] {
    const calls: DirectCall[] = []
    for (let call = this.#first; call !== undefined; call = call.next) calls.push(call)
    return calls
  }
}

/**
 * A direct call's `ctx.mcpReq`. A class rather than an object literal for its `signal` getter:
 * a getter in a literal makes every context a slow, dictionary-mode object with an accessor of
 * its own (a kilobyte a call, as much as the rest of the call's own objects together); on the
 * prototype it costs nothing. The first read makes `signal` an own property, so a copy made
 * after it keeps it: the SDK's input-required shim reads it before it copies the context.
 */
class DirectRequest {
  readonly id: RequestId
  readonly method = 'tools/call'
  readonly _meta: { progressToken: RequestId } | undefined
  readonly requestState = noRequestState
  readonly send = refuseSend
  readonly notify: DirectDispatch['notify']
  readonly log: DirectDispatch['log']
  readonly elicitInput = refuseElicitation
  readonly requestSampling = refuseSampling
  readonly #call: DirectCall

  constructor (call: DirectCall, id: RequestId, meta: { progressToken: RequestId } | undefined, notify: DirectDispatch['notify'], log: DirectDispatch['log']) {
    this.#call = call
    this.id = id
    this._meta = meta
    this.notify = notify
    this.log = log
  }

  get signal (): AbortSignal {
    const signal = this.#call.signal
    Object.defineProperty(this, 'signal', { value: signal, enumerable: true, writable: true, configurable: true })
    return signal
  }
}

/** A call's `notify` when the caller asked for progress: progress to it, without its token, the rest as without. */
function progressTo (onProgress: (progress: Progress) => void, notify: DirectDispatch['notify']): DirectDispatch['notify'] {
  return async notification => {
    if (notification.method !== 'notifications/progress') return await notify(notification)
    const { progressToken: _token, ...progress } = notification.params as Progress & { progressToken: unknown }
    onProgress(progress)
  }
}
