import { PROTOCOL_VERSION_META_KEY, TRACEPARENT_META_KEY, TRACESTATE_META_KEY, type AuthInfo, type McpServer, type RequestId, type Result, type Server, type ServerContext } from '@modelcontextprotocol/server'
import type { CallContext, CallGate, CallMethod, ListMethod, McpRequestInfo, ServerScope } from '../connections/connection.js'
import {
  CallError,
  InternalError,
  InvalidOptionsError,
  isGatewayError,
  PromptNotFoundError,
  ResourceNotFoundError,
  ToolNotFoundError,
  ToolTimeoutError,
  toJsonRpcError,
  type GatewayError
} from '../errors.js'
import { carryAuthInfo, interceptHandlers, type Handler } from '../mcp/handlers.js'

// The call pipeline: the one place every request to a mounted server passes, whatever the way
// in (REST, a server's own MCP endpoint in either protocol era, the aggregated `/mcp`), so a
// check placed here holds on every path at once. Authorization, rate limits, metrics and traces
// are filters of it.
//
// Filters run in a fixed order, whatever the order they were added in:
//   0. `around`  (traces): wraps everything below, refusals included, so a span covers the
//      whole call and the server is reached inside it (an upstream request made there
//      carries the span's context on). Several nest in the order they were added, the first
//      outermost. It must run `run` once and answer with what it answers.
//   1. `allows`  (authorization): one decision for listing an item and for calling it, so the
//      two never disagree; a refused call answers exactly like an unknown name and never
//      reaches the server (platformatic/mcp's `canAccessTool`).
//   2. `admit`   (admission: rate limits): runs only for calls authorization let through, so a
//      denied call spends no quota; throws a catalogue error (429) to refuse.
//   3. the call itself.
//   4. `observe` (metrics, traces, audit): sees every call's outcome and duration, refusals
//      included; it never changes the answer: its failure is logged and swallowed.
// The chain is composed once, when the gateway is ready (`freeze`); with no filter at all
// nothing is wrapped and the hot paths are what they were without a pipeline, and without an
// `around` no call builds what only a tracer reads (`call.mcp`).

export type { CallContext, CallGate, CallMethod, ListMethod, McpRequestInfo, WayIn } from '../connections/connection.js'

export type Outcome = 'ok' | 'tool_error' | 'denied' | 'rate_limited' | 'failed' | 'timeout'

export interface CallOutcome {
  outcome: Outcome
  durationMs: number
  /** The failure, for outcomes other than ok and tool_error. */
  error?: unknown
}

export interface CallFilter {
  /** Names the filter in logs. */
  readonly name: string
  /** Whether the caller may see and call this item (`call.name` is always set). Must not throw. */
  allows?: (call: CallContext) => boolean
  /** Before a call reaches the server: throw a catalogue error to refuse it. */
  admit?: (call: CallContext) => void | Promise<void>
  /** After every call, refusals included. Its failure never changes the answer. */
  observe?: (call: CallContext, outcome: CallOutcome) => void
  /**
   * Around every call and list, refusals included (a span). Must call `run` once and settle
   * as it settles: what `run` answers or throws is the answer.
   */
  around?: Around
}

/** A filter step that wraps the rest of the chain. */
export type Around = <T>(call: CallContext, run: () => Promise<T>) => Promise<T>

/** Where an observer's failure is reported. */
export interface PipelineLog {
  warn (object: Record<string, unknown>, message: string): void
}

/** The call of a list item: what `allows` is asked about each item of a list. */
const ITEM_CALL: Record<ListMethod, CallMethod> = {
  'tools/list': 'tools/call',
  'prompts/list': 'prompts/get',
  'resources/list': 'resources/read',
  'resources/templates/list': 'resources/read'
}
/** Where a list result keeps its items, and which field of an item names it. */
const LIST_ITEMS: Record<ListMethod, { key: string, name: string }> = {
  'tools/list': { key: 'tools', name: 'name' },
  'prompts/list': { key: 'prompts', name: 'name' },
  'resources/list': { key: 'resources', name: 'uri' },
  'resources/templates/list': { key: 'resourceTemplates', name: 'uriTemplate' }
}
const CALLS = new Set<string>(['tools/call', 'prompts/get', 'resources/read', 'resources/subscribe'])

export function isListMethod (method: string): method is ListMethod {
  return method in LIST_ITEMS
}
export function isCallMethod (method: string): method is CallMethod {
  return CALLS.has(method)
}

/** A denial's answer (or an unknown name's): nothing about it may differ from an unknown name's. */
function isUnknownItem (err: Error): boolean {
  return err instanceof ToolNotFoundError || err instanceof PromptNotFoundError || err instanceof ResourceNotFoundError
}

/** What a refused call answers: exactly what an unknown name answers. */
function unknownItem (call: CallContext): Error {
  const name = call.name ?? ''
  switch (call.method) {
    case 'tools/call': return new ToolNotFoundError(name, call.server)
    case 'prompts/get': return new PromptNotFoundError(name, call.server)
    default: return new ResourceNotFoundError(name, call.server)
  }
}

function outcomeOf (call: CallContext, result: unknown): Outcome {
  return call.method === 'tools/call' && (result as { isError?: unknown } | undefined)?.isError === true ? 'tool_error' : 'ok'
}

function failureOf (err: unknown): Outcome {
  if (err instanceof ToolTimeoutError || (err instanceof CallError && err.code === 'REQUEST_TIMEOUT')) return 'timeout'
  if (isGatewayError(err) && err.statusCode === 429) return 'rate_limited'
  return 'failed'
}


/** How a server instance built for an MCP endpoint is reached. */
export interface ServedBy {
  /** The mounted server's name. */
  server: string
  /** A session's own instance, or one shared by stateless requests. */
  scope: ServerScope
  /** The HTTP request that carried a JSON-RPC request in flight on this instance (its id, the client's address), where the transport knows it. */
  originOf?: (id: RequestId) => { requestId?: string, ip?: string } | undefined
  /**
   * Told when an admission filter refuses a request in flight (never of a denial, which must
   * answer as an unknown name does), so a transport that answers it as plain JSON can give
   * the answer the refusal's HTTP status and headers (429 and `Retry-After`).
   */
  refused?: (id: RequestId, err: GatewayError) => void
  /** The caller of a request in flight, for a transport that cannot hand it to the SDK itself. */
  authInfoOf?: (id: RequestId) => AuthInfo | undefined
  /** The id the client gave a request in flight, for a transport that renumbers requests (the shared lanes' multiplexing): what traces report as `jsonrpc.request.id`. */
  clientIdOf?: (id: RequestId) => RequestId | undefined
}

export class CallPipeline implements CallGate {
  #filters: CallFilter[] = []
  #frozen = false
  #allows: Array<(call: CallContext) => boolean> = []
  #admits: Array<(call: CallContext) => void | Promise<void>> = []
  #observers: CallFilter[] = []
  /** Whether any filter may refuse a call (`allows` or `admit`), composed at `freeze`. */
  #gated = false
  /** The `around` steps composed into one, or nothing when no filter has one. */
  #around: Around | undefined
  #log: PipelineLog | undefined
  /** Outlives one build of the gateway (config reload): it wraps every server, filters or not, since a reload may add some. */
  #reloadable: boolean
  /** The filters of the build under way (`reopen`), swapped in at its `freeze`. */
  #pending: CallFilter[] | undefined

  constructor (log?: PipelineLog, options: { reloadable?: boolean } = {}) {
    this.#log = log
    this.#reloadable = options.reloadable ?? false
  }

  /** Adds a filter; only before the gateway is ready, since the chain is composed once. */
  add (filter: CallFilter): void {
    if (this.#pending !== undefined) {
      this.#pending.push(filter)
      return
    }
    if (this.#frozen) throw new InvalidOptionsError(`call filter '${filter.name}' added after the gateway was ready`)
    this.#filters.push(filter)
  }

  /**
   * Begins collecting the filters of a new build of the gateway (a config reload): calls keep
   * passing the current chain until the new build is ready and `freeze` swaps the new one in.
   */
  reopen (): void {
    if (!this.#reloadable) throw new InvalidOptionsError('the call pipeline was not made reloadable')
    if (this.#frozen) this.#pending = []
  }

  /** Composes the chain; called when the gateway (or a reloaded build of it) is ready. */
  freeze (): void {
    if (this.#pending !== undefined) {
      const filters = this.#pending
      this.#pending = undefined
      this.#compose(filters)
      return
    }
    if (this.#frozen) return
    this.#frozen = true
    this.#compose(this.#filters)
  }

  /** Builds the chain from `filters` and puts it in place at once, so no call sees half of it. */
  #compose (filters: CallFilter[]): void {
    const allows: Array<(call: CallContext) => boolean> = []
    const admits: Array<(call: CallContext) => void | Promise<void>> = []
    const observers: CallFilter[] = []
    for (const filter of filters) {
      if (filter.allows !== undefined) allows.push(filter.allows)
      if (filter.admit !== undefined) admits.push(filter.admit)
      if (filter.observe !== undefined) observers.push(filter)
    }
    // Composed innermost first, so the first added runs outermost.
    let composed: Around | undefined
    for (const { around } of [...filters].reverse()) {
      if (around === undefined) continue
      const inner = composed
      composed = inner === undefined ? around : async (call, run) => await around(call, async () => await inner(call, run))
    }
    this.#filters = filters
    this.#allows = allows
    this.#admits = admits
    this.#observers = observers
    this.#gated = allows.length > 0 || admits.length > 0
    this.#around = composed
  }

  /** Whether some filter wraps calls (a tracer): only then do the MCP ways in describe the request in `call.mcp`. */
  get wraps (): boolean {
    return this.#around !== undefined
  }

  /** Whether any filter is registered: without one, nothing needs to pass through. */
  get active (): boolean {
    return this.#reloadable || this.#filters.length > 0
  }

  /** Whether the caller may see and call the item `call` names. */
  allows (call: CallContext): boolean {
    for (const allows of this.#allows) {
      // A decision that throws denies, as a policy that cannot decide must.
      try {
        if (!allows(call)) return false
      } catch {
        return false
      }
    }
    return true
  }

  /**
   * Runs one call through the filters. A refusal by `allows` or `admit` is thrown before the
   * server is reached, shaped for the way in by `refuse` (REST keeps the catalogue error).
   */
  call<T> (call: CallContext, run: () => Promise<T>, refuse: (err: Error) => Error = err => err): Promise<T> {
    if (!this.active) return run()
    const around = this.#around
    if (around === undefined) {
      if (!this.#gated) return this.#observed(call, run)
      // `allows` alone (a policy, the scope filter) decide at once: nothing to wait for before the call.
      if (this.#admits.length === 0) return this.allows(call) ? this.#observed(call, run) : this.#denied(call, refuse)
      return this.#filtered(call, run, refuse)
    }
    return around(call, async () => await this.#filtered(call, run, refuse))
  }

  /** A call `allows` refused, as `#filtered` answers it: observed as denied, then refused as an unknown name. */
  async #denied (call: CallContext, refuse: (err: Error) => Error): Promise<never> {
    const error = unknownItem(call)
    this.#observe(call, { outcome: 'denied', error, durationMs: 0 })
    throw refuse(error)
  }

  /**
   * The common case, observers alone (metrics, the status page, audit): the call and then its
   * outcome, chained on the call's own promise rather than through two async frames, since
   * this runs on every call.
   */
  #observed<T> (call: CallContext, run: () => Promise<T>): Promise<T> {
    const started = performance.now()
    let running: Promise<T>
    try {
      running = run()
    } catch (err) {
      running = Promise.reject(err)
    }
    return running.then(result => {
      this.#observe(call, { outcome: outcomeOf(call, result), durationMs: performance.now() - started })
      return result
    }, (err: unknown) => {
      this.#observe(call, { outcome: failureOf(err), durationMs: performance.now() - started, error: err })
      throw err
    })
  }

  /** One call through `allows`, `admit`, the server and `observe`. */
  async #filtered<T> (call: CallContext, run: () => Promise<T>, refuse: (err: Error) => Error): Promise<T> {
    const started = performance.now()
    // Observers alone (metrics, the status page) are the common case: no refusal to wait for.
    if (this.#gated) {
      const refusal = await this.#refusal(call)
      if (refusal !== undefined) {
        this.#observe(call, { ...refusal, durationMs: performance.now() - started })
        throw refuse(refusal.error)
      }
    }
    return await this.#timed(call, started, run, result => outcomeOf(call, result))
  }

  /** Why the filters refuse a call, or nothing when it may go on. */
  async #refusal (call: CallContext): Promise<{ outcome: Outcome, error: Error } | undefined> {
    if (!this.allows(call)) return { outcome: 'denied', error: unknownItem(call) }
    if (this.#admits.length === 0) return undefined
    try {
      for (const admit of this.#admits) await admit(call)
    } catch (err) {
      return { outcome: failureOf(err), error: err instanceof Error ? err : new InternalError() }
    }
    return undefined
  }

  /** A list result without the items the caller may not see; the result itself when nothing is hidden. */
  list<R extends Record<string, unknown>> (call: CallContext & { method: ListMethod }, result: R): R {
    if (this.#allows.length === 0) return result
    const { key, name } = LIST_ITEMS[call.method]
    const items = result[key]
    if (!Array.isArray(items)) return result
    const item: CallContext = { ...call, method: ITEM_CALL[call.method] }
    const visible = items.filter(entry => this.allows({ ...item, name: String((entry as Record<string, unknown>)[name]) }))
    return visible.length === items.length ? result : { ...result, [key]: visible }
  }

  /** Runs a list request through the filters: observed, and its items filtered. */
  async listed<R extends Record<string, unknown>> (call: CallContext & { method: ListMethod }, run: () => Promise<R>): Promise<R> {
    if (!this.active) return await run()
    const listed = async (): Promise<R> => this.list(call, await this.#timed(call, performance.now(), run, () => 'ok'))
    const around = this.#around
    return around === undefined ? await listed() : await around(call, listed)
  }

  /** Runs the call itself, then tells the observers how it went. */
  async #timed<T> (call: CallContext, started: number, run: () => Promise<T>, outcome: (result: T) => Outcome): Promise<T> {
    let result: T
    try {
      result = await run()
    } catch (err) {
      this.#observe(call, { outcome: failureOf(err), durationMs: performance.now() - started, error: err })
      throw err
    }
    this.#observe(call, { outcome: outcome(result), durationMs: performance.now() - started })
    return result
  }

  #observe (call: CallContext, outcome: CallOutcome): void {
    for (const observer of this.#observers) {
      try {
        observer.observe?.(call, outcome)
      } catch (err) {
        this.#log?.warn({ err, filter: observer.name }, 'call observer failed')
      }
    }
  }

  /**
   * Puts the pipeline in front of an SDK server instance built for an MCP endpoint (a
   * session's, a shared lane's, or one of the SDK entry's): its calls and lists pass the
   * filters with the server's name and the way in (see `interceptHandlers` for how, and what
   * it relies on). Without a filter nothing is wrapped, but for putting back the caller's
   * identity where the transport lost it (`authInfoOf`, the shared lanes).
   */
  wrapServer<S extends McpServer | Server> (instance: S, servedBy: ServedBy): S {
    const { authInfoOf } = servedBy
    if (!this.active) return authInfoOf === undefined ? instance : interceptHandlers(instance, (_method, handler) => carryAuthInfo(handler, authInfoOf))
    return interceptHandlers(instance, (method, handler) => {
      const filtered = isCallMethod(method) ? this.#wrapCall(method, handler, servedBy, instance) : isListMethod(method) ? this.#wrapList(method, handler, servedBy, instance) : handler
      // The caller is put back first, so the filters see it too.
      return authInfoOf === undefined ? filtered : carryAuthInfo(filtered, authInfoOf)
    })
  }

  #wrapCall (method: CallMethod, handler: Handler, servedBy: ServedBy, instance: McpServer | Server): Handler {
    return async (request, ctx) => {
      const params = request.params as Record<string, unknown> | undefined
      const call = contextOf(servedBy, ctx, method, this.#around === undefined ? undefined : instance)
      call.name = String(method === 'tools/call' || method === 'prompts/get' ? params?.name : params?.uri)
      if (params?.arguments !== undefined) call.arguments = params.arguments as Record<string, unknown>
      return await this.call(call, async () => await handler(request, ctx), err => {
        if (isGatewayError(err) && !isUnknownItem(err)) servedBy.refused?.(ctx.mcpReq.id, err)
        return toJsonRpcError(err, servedBy.server)
      })
    }
  }

  #wrapList (method: ListMethod, handler: Handler, servedBy: ServedBy, instance: McpServer | Server): Handler {
    return async (request, ctx) => {
      const call = contextOf(servedBy, ctx, method, this.#around === undefined ? undefined : instance) as CallContext & { method: ListMethod }
      const result = await this.listed(call, async () => await handler(request, ctx) as Record<string, unknown>)
      // A list authorization filtered is the caller's own: a 2026-07-28 result says so
      // (SEP-2549 `cacheScope`, a field of the result itself, which wins over any hint the
      // server configured), so no shared cache hands it to another caller. Marked whether or
      // not this caller lost an item, since another caller may see less.
      return (this.#allows.length > 0 && ctx.mcpReq.envelope !== undefined ? { ...result, cacheScope: 'private' } : result) as Result
    }
  }
}

/**
 * The way in and the caller of a request an SDK server instance handles; with `described`
 * (the instance, given while a filter wraps calls), the request as a tracer describes it too.
 */
function contextOf (servedBy: ServedBy, ctx: ServerContext, method: CallContext['method'], described?: McpServer | Server): CallContext {
  // Built field by field rather than with conditional spreads: this runs on every call.
  const way = servedBy.scope === 'session' ? 'mcp-2025-session' : ctx.mcpReq.envelope !== undefined ? 'mcp-2026' : 'mcp-2025-stateless'
  const call: CallContext = { server: servedBy.server, method, way }
  const identity = ctx.http?.authInfo
  if (identity !== undefined) call.identity = identity
  const origin = servedBy.originOf?.(ctx.mcpReq.id)
  if (origin?.requestId !== undefined) call.requestId = origin.requestId
  if (origin?.ip !== undefined) call.ip = origin.ip
  if (described !== undefined) call.mcp = requestInfo(ctx, way, described, servedBy.clientIdOf?.(ctx.mcpReq.id))
  return call
}

/**
 * What a request says about itself: a 2026-07-28 request names its protocol version in its
 * `_meta` envelope, a 2025 one speaks what its connection negotiated. `traceparent` is no
 * reserved envelope key, so the SDK leaves it in `ctx.mcpReq._meta` in both eras.
 */
function requestInfo (ctx: ServerContext, way: CallContext['way'], instance: McpServer | Server, clientId: RequestId | undefined): McpRequestInfo {
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined
  const server = 'server' in instance ? instance.server : instance
  const protocolVersion = envelope === undefined ? server.getNegotiatedProtocolVersion() : envelope[PROTOCOL_VERSION_META_KEY]
  const meta = ctx.mcpReq._meta as Record<string, unknown> | undefined
  const traceparent = meta?.[TRACEPARENT_META_KEY]
  const tracestate = meta?.[TRACESTATE_META_KEY]
  return {
    id: clientId ?? ctx.mcpReq.id,
    ...(typeof protocolVersion === 'string' && { protocolVersion }),
    // Only a 2025-era session has one; a 2026-07-28 request is never part of a session.
    ...(way === 'mcp-2025-session' && ctx.sessionId !== undefined && { sessionId: ctx.sessionId }),
    ...(typeof traceparent === 'string' && { traceparent }),
    ...(typeof tracestate === 'string' && { tracestate })
  }
}
