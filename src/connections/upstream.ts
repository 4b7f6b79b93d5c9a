import type { FastifyBaseLogger } from 'fastify'
import { context, isSpanContextValid, trace } from '@opentelemetry/api'
import {
  ProtocolError,
  ProtocolErrorCode,
  type ClientCapabilities,
  type ListToolsResult,
  type RequestMethod,
  type ServerCapabilities,
  type Tool
} from '@modelcontextprotocol/client'
import type { Progress } from '@modelcontextprotocol/client'
import type { AuthInfo, CallToolResult, McpRequestContext, Server } from '@modelcontextprotocol/server'
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_ISOLATED_IDLE_MS, DEFAULT_MAX_ISOLATED, DEFAULT_TIMEOUT_MS } from '../defaults.js'
import { CallError, fromSdkError, invalidParams, TooManyIsolatedError } from '../errors.js'
import { paramHeaderValues, toolParamHeaders } from '../mcp/param-headers.js'
import { allPages, askDownstream, legacyParams, LIST_CHANGED } from '../mcp/protocol.js'
import { relayServer } from '../mcp/relay-server.js'
import { Backoff } from './backoff.js'
import type { ListKind, McpConnection, McpMessage, RelayOptions, RelaySession, ServerScope, ServerState } from './connection.js'
import { describeExit, describeFailure, Secrets, UpstreamFailure } from './failure.js'
import { ModernLink } from './modern-link.js'
import { closeLink, openLink, StderrLog, type Link, type LinkEvents, type UpstreamTransport } from './upstream-link.js'

export type { UpstreamTransport } from './upstream-link.js'

export interface UpstreamOptions {
  transport: UpstreamTransport
  /**
   * `shared` (default): one upstream connection for every downstream client, with each
   * request's progress, log messages and questions routed to the client that made it.
   * `session`: each 2025-era downstream session gets its own upstream connection (its own
   * child process, for stdio), for servers that keep per-user state.
   */
  isolation?: 'shared' | 'session'
  /** Tools to offer (all when absent) and tools to hide, by the upstream's names. */
  tools?: { allow?: string[], deny?: string[] }
  /** Longest wait for a connection and its `initialize`. Default `DEFAULT_CONNECT_TIMEOUT_MS`. */
  connectTimeoutMs?: number
  /** Per-request timeout of relayed MCP requests (progress resets it). Default `DEFAULT_TIMEOUT_MS`. */
  timeoutMs?: number
  /** Reconnect backoff: the first delay, doubled per failure up to the last. Default `DEFAULT_RETRY_INITIAL_MS` to `DEFAULT_RETRY_MAX_MS` (or to the first, if that is longer). */
  retry?: { initialMs?: number, maxMs?: number }
  /** With `isolation: "session"`: most per-session connections at once. Default `DEFAULT_MAX_ISOLATED`. */
  maxIsolated?: number
  /** With `isolation: "session"`: a per-session connection unused this long is closed. Default `DEFAULT_ISOLATED_IDLE_MS`. */
  isolatedIdleMs?: number
  log?: FastifyBaseLogger
}

/** A session's own upstream connection, and when it was last used. */
interface SessionLink {
  link: Promise<Link>
  lastUsed: number
  /** Closes the link once it has been unused for `isolatedIdleMs`; armed once it is open. */
  idle: NodeJS.Timeout | undefined
}

/**
 * The result schema of relayed requests: the result goes on as the upstream sent it. The
 * relay server validates what it answers, so parsing it here too (and, without a schema,
 * the SDK's per-call lookup of one) would only double the cost of every call.
 */
const PASSTHROUGH = { '~standard': { version: 1 as const, vendor: 'fastify-mcp-gateway', validate: (value: unknown) => ({ value: value as Record<string, unknown> }) } }
/** The longest delay a Node timer takes; the gateway runs its own timeouts (see `request`). */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * An upstream MCP server: a child process over stdio, or a remote one over Streamable HTTP
 * or the legacy HTTP+SSE transport, reached with the SDK's client.
 *
 * The gateway holds one shared connection, opened at boot within `connectTimeoutMs`. When
 * it cannot be opened, or closes later (the child exits, the remote goes away), the server
 * is down: calls in flight fail (502), new ones get 503 with `Retry-After`, and the
 * connection is reopened with exponential backoff.
 *
 * Routing the upstream's messages: progress is tied to its request by the SDK's progress
 * tokens. Log messages and server→client requests (sampling, elicitation, roots) carry no
 * request id on stdio, so on a shared connection they go to the one downstream client with
 * a request in flight; when several clients have, a question is refused with an error that
 * points to `isolation: "session"` (never sent to a client it may not belong to), and a log
 * message goes to the gateway's log. A session's own connection routes everything to it.
 */
export class UpstreamConnection implements McpConnection {
  readonly name: string
  #options: UpstreamOptions
  #log: FastifyBaseLogger | undefined
  #state: ServerState = 'starting'
  #failure: string | undefined
  /** The entry's header, env and URL secrets, masked in everything logged about it. */
  #secrets: Secrets
  #stderr: StderrLog
  #shared: Link | undefined
  /** The link for 2026-07-28 requests, opened on the first one. */
  #modern: ModernLink
  #backoff: Backoff
  /** Where every link of this upstream reports (see `upstream-link.ts`). */
  #events: LinkEvents = {
    ask: async (link, request) => await this.#ask(link, request),
    progress: (token, progress) => { this.#progress.get(token)?.(progress) },
    unrelated: (link, notification) => { this.#unrelated(link, notification) },
    closed: () => {}
  }

  #sessionLinks = new Map<RelaySession, SessionLink>()
  /** Session links being closed after their session ended. */
  #closingLinks = new Set<Promise<void>>()
  #sessions = new Set<RelaySession>()
  #listeners = new Set<(kind: ListKind) => void>()
  #capabilities: ServerCapabilities = {}
  #instructions: string | undefined
  #tools: Tool[] = []
  #subscriptions = new Map<string, number>()
  #closing = false
  #starting: Promise<void> | undefined
  /** Attempts to bring the server back after it went down, for metrics. */
  #restarts = 0
  /** Progress routes of requests in flight, by the progress token the gateway gave them. */
  #progress = new Map<string, (progress: Progress) => void>()
  #progressTokens = 0
  /** Header name → what of the caller it carries (`id`, `sub` or a claim), for a Streamable HTTP upstream; see `forwardIdentity`. */
  #identityHeaders: Array<[header: string, field: string]> | undefined

  constructor (name: string, options: UpstreamOptions) {
    this.name = name
    this.#options = options
    this.#log = options.log
    this.#secrets = Secrets.of(options.transport)
    this.#stderr = new StderrLog(options.log, this.#secrets)
    this.#backoff = new Backoff(options.retry)
    this.#modern = new ModernLink(onClosed => this.#open(undefined, {}, true, onClosed), options.log)
  }

  get state (): ServerState { return this.#state }

  /**
   * Sends who the caller is (the gateway's `auth.forwardIdentity`: header name → `id`, `sub`
   * or a claim name) with each request to a Streamable HTTP upstream. Only these headers and
   * the entry's own configured `headers` ever reach an upstream: the caller's credentials
   * (`Authorization`, `X-API-Key`, cookies) never do, as the MCP authorization spec's "no
   * token passthrough" asks. An HTTP+SSE upstream's transport sends no per-request headers.
   */
  forwardIdentity (headers: Record<string, string>): void {
    if (this.#options.transport.kind !== 'http') return
    const entries = Object.entries(headers)
    this.#identityHeaders = entries.length > 0 ? entries : undefined
  }

  /** Why the server is down, in the gateway's words: never the upstream's error text, which may hold secrets. */
  get failure (): string | undefined { return this.#failure }
  get retryAfter (): number | undefined {
    return this.#state === 'down' ? this.#backoff.retryAfter : undefined
  }

  /** How many times the gateway has tried to bring the server back after it went down (each a new child process, for stdio), whether or not it came back. */
  get restarts (): number { return this.#restarts }

  /** Per-session connections open or opening (`isolation: "session"`): child processes, for stdio. */
  get isolatedCount (): number { return this.#sessionLinks.size }

  /** The shared connection's child process, for stdio upstreams that are up. */
  get pid (): number | undefined { return this.#shared?.pid }

  /** The last lines its child processes wrote on stderr, masked, oldest first (stdio only). */
  stderrTail (): readonly string[] { return this.#stderr.tail() }

  tools (): readonly Tool[] { return this.#tools }
  capabilities (): ServerCapabilities { return this.#capabilities }
  instructions (): string | undefined { return this.#instructions }

  /**
   * Connects at boot. Idempotent, so the gateway can start every upstream at once and each
   * mount plugin then awaits its own: boot takes as long as the slowest, not the sum.
   */
  start (): Promise<void> {
    this.#starting ??= this.#connectShared().catch(err => {
      const failure = this.#failed(err, true)
      this.#down(failure)
      // The mount logs this at error level: the gateway's words, and the real error masked.
      throw failure
    })
    return this.#starting
  }

  async #connectShared (): Promise<void> {
    const link = await this.#open(undefined, { sampling: {}, elicitation: { form: {}, url: {} } }, false, closed => {
      if (this.#shared !== closed) return
      this.#shared = undefined
      this.#down(new UpstreamFailure(closed.pid === undefined ? 'the connection closed' : describeExit(closed.exit, closed.pid), undefined))
    })
    try {
      const capabilities = link.client.getServerCapabilities() ?? {}
      const tools = capabilities.tools === undefined ? [] : await listTools(link.client, this.#options.connectTimeoutMs)
      if (this.#closing) throw new Error('the gateway is closing')
      this.#capabilities = capabilities
      this.#instructions = link.client.getInstructions()
      this.#tools = tools.filter(tool => this.#offers(tool.name))
    } catch (err) {
      await closeLink(link)
      throw err
    }
    this.#shared = link
    this.#modern.reset()
    this.#state = 'up'
    this.#failure = undefined
    this.#backoff.reset()
    this.#subscriptions.clear()
  }

  /** Any error of this upstream as an `UpstreamFailure`: the gateway's words, the real error masked. */
  #failed (err: unknown, starting = false): UpstreamFailure {
    return err instanceof UpstreamFailure ? err : new UpstreamFailure(describeFailure(err, { starting }), this.#secrets.error(err))
  }

  /**
   * Marks the server down and, unless the gateway is closing, schedules the next attempt. The
   * log gets the real error, masked, and the stderr of a start that failed, as one entry.
   */
  #down (failure: UpstreamFailure): void {
    if (this.#closing) return
    this.#state = 'down'
    this.#failure = failure.message
    const delay = this.#backoff.schedule(() => {
      this.#restarts++
      this.#connectShared().then(() => {
        this.#log?.info({ tools: this.#tools.map(tool => tool.name) }, 'upstream mcp server is back')
        for (const kind of ['tools', 'prompts', 'resources'] as const) this.#changed(kind)
      }, err => { this.#down(this.#failed(err, true)) })
    })
    if (delay === undefined) return
    const { transport } = this.#options
    this.#log?.warn({
      reason: failure.message,
      retryInMs: delay,
      // The command's name, never its arguments; the URL with its secrets masked.
      upstream: transport.kind === 'stdio' ? transport.command : this.#secrets.mask(transport.url),
      ...(failure.cause !== undefined && { err: failure.cause }),
      ...(failure.stderr !== undefined && { stderr: failure.stderr })
    }, 'upstream mcp server is down')
  }

  /**
   * Opens one client connection: the shared one, or a session's own (`session` given).
   * `onClosed` runs when it ends, for whatever reason, after its child is forgotten.
   */
  async #open (session: RelaySession | undefined, capabilities: ClientCapabilities, modern: boolean, onClosed: (link: Link) => void): Promise<Link> {
    return await openLink(this.#options.transport, {
      session,
      capabilities,
      modern,
      connectTimeoutMs: this.#options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      log: this.#log,
      secrets: this.#secrets,
      stderr: this.#stderr
    }, { ...this.#events, closed: onClosed })
  }

  #offers (tool: string): boolean {
    const { allow, deny } = this.#options.tools ?? {}
    return (allow === undefined || allow.includes(tool)) && !(deny?.includes(tool) ?? false)
  }

  /** A server→client request from the upstream, sent to the downstream client it belongs to. */
  async #ask (link: Link, request: McpMessage): Promise<Record<string, unknown>> {
    const callers = [...link.inflight.values()]
    if (callers.length === 0 && link.session !== undefined) return await link.session.ask(request)
    if (callers.length !== 1) {
      throw new ProtocolError(ProtocolErrorCode.InternalError, callers.length === 0
        ? `The gateway has no client to forward '${request.method}' to: no request is in flight`
        : `The gateway cannot tell which of ${callers.length} clients '${request.method}' is for on a shared connection; configure the server with isolation "session"`)
    }
    return await askDownstream(callers[0], request)
  }

  /** A notification from the upstream that the SDK did not tie to a request itself. */
  #unrelated (link: Link, notification: McpMessage): void {
    if (notification.method === 'notifications/message') {
      const callers = [...link.inflight.values()]
      const caller = callers.length === 1 ? callers[0] : undefined
      if (caller !== undefined) caller.notify(notification).catch(() => {})
      else if (link.session !== undefined) link.session.notify(notification)
      else this.#log?.info({ upstreamLog: notification.params }, 'upstream mcp server log message')
      return
    }
    if (link.session !== undefined) {
      link.session.notify(notification)
      return
    }
    const kind = LIST_CHANGED[notification.method]
    if (kind === 'tools') {
      listTools(link.client, this.#options.timeoutMs).then(tools => {
        this.#tools = tools.filter(tool => this.#offers(tool.name))
        this.#changed('tools')
      }, err => { this.#log?.warn({ err: this.#secrets.error(err) }, 'listing upstream tools after a change failed') })
      return
    }
    if (kind !== undefined) {
      this.#changed(kind)
      return
    }
    for (const session of this.#sessions) session.notify(notification)
  }

  #changed (kind: ListKind): void {
    for (const listener of this.#listeners) listener(kind)
    for (const session of this.#sessions) session.notify({ method: `notifications/${kind}/list_changed` })
  }

  onListChanged (listener: (kind: ListKind) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  attach (session: RelaySession): () => void {
    this.#sessions.add(session)
    return () => {
      this.#sessions.delete(session)
      const own = this.#sessionLinks.get(session)
      if (own !== undefined) this.#closeSessionLink(session, own)
    }
  }

  /** Forgets a session's own link and closes it, tracked until closed so `close()` waits for its child too. */
  #closeSessionLink (session: RelaySession, own: SessionLink): void {
    if (this.#sessionLinks.get(session) === own) this.#sessionLinks.delete(session)
    clearTimeout(own.idle)
    const closing: Promise<void> = own.link.then(closeLink, () => {}).catch(() => {}).finally(() => { this.#closingLinks.delete(closing) })
    this.#closingLinks.add(closing)
  }

  createServer (_ctx?: McpRequestContext, scope: ServerScope = 'shared'): Server {
    return relayServer(this, scope, this.#options.timeoutMs)
  }

  async callTool (name: string, args: Record<string, unknown>, options?: RelayOptions): Promise<CallToolResult> {
    return await this.request('tools/call', { name, arguments: args }, options) as CallToolResult
  }

  async request (method: string, params: Record<string, unknown> | undefined, options: RelayOptions & { session?: RelaySession } = {}): Promise<Record<string, unknown>> {
    const own = this.#options.isolation === 'session' && options.session?.scope === 'session'
    if (!own) {
      if (method === 'tools/list') return { tools: this.#tools }
      if (method === 'resources/subscribe' || method === 'resources/unsubscribe') {
        // One upstream subscription per URI while any session holds it.
        const uri = String(params?.uri)
        const holders = (this.#subscriptions.get(uri) ?? 0) + (method === 'resources/subscribe' ? 1 : -1)
        if (holders > 0) this.#subscriptions.set(uri, holders)
        else this.#subscriptions.delete(uri)
        if (method === 'resources/subscribe' ? holders > 1 : holders > 0) return {}
      }
    }
    if (method === 'tools/call' && !this.#offers(String(params?.name))) {
      throw invalidParams(`Tool ${String(params?.name)} not found`)
    }
    if (this.#state !== 'up') {
      throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}${this.#failure === undefined ? '' : `: ${this.#failure}`}`)
    }
    const modern = options.modern === true && !own ? await this.#modern.get() : undefined
    const link = own ? await this.#sessionLink(options.session as RelaySession) : modern ?? this.#shared
    if (link === undefined) throw new CallError('NOT_CONNECTED', `Server '${this.name}' is down`)
    // What a 2026-07-28 request carries means nothing to a 2025-era upstream.
    if (options.modern === true && modern === undefined) params = legacyParams(params)
    // Inside a span (the tracing filter's), the upstream's work joins its trace: the span's
    // context replaces whatever trace context the client sent in `_meta`.
    const traced = traceContext()
    if (traced !== undefined) params = { ...params, _meta: { ...withoutTraceContext(params?._meta), ...traced } }
    const key = Symbol(method)
    link.inflight.set(key, options.downstream)
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    // Without progress, the SDK client's timeout and the caller's signal do (either cancels
    // the call upstream). With progress, the timeout and the progress route are the gateway's
    // own: the client drops its progress handler as soon as the answer arrives, before it
    // runs the handlers of the notifications that came just ahead of it, so the last progress
    // would be lost; and progress resets the timeout, as a long tool reports.
    const token = options.onProgress === undefined ? undefined : `${++this.#progressTokens}`
    let signal = options.signal
    let timer: NodeJS.Timeout | undefined
    let timedOut = false
    let onAbort: (() => void) | undefined
    if (token !== undefined) {
      const controller = new AbortController()
      signal = controller.signal
      onAbort = () => { controller.abort(options.signal?.reason) }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      const armed = setTimeout(() => {
        timedOut = true
        controller.abort(new Error(`timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      timer = armed
      const onProgress = options.onProgress as NonNullable<RelayOptions['onProgress']>
      this.#progress.set(token, progress => {
        armed.refresh()
        onProgress(progress)
      })
      params = { ...params, _meta: { ...(params?._meta as object | undefined), progressToken: token } }
    }
    try {
      if (options.signal?.aborted === true) throw new CallError('ABORTED', 'The call was cancelled')
      // Only an HTTP upstream reads headers; stdio has none to send.
      const http = this.#options.transport.kind === 'http'
      const headers = {
        ...(modern !== undefined && method === 'tools/call' && this.#options.transport.kind !== 'stdio' && this.#mirroredHeaders(params)),
        ...(this.#identityHeaders !== undefined && options.authInfo !== undefined && identityHeaders(this.#identityHeaders, options.authInfo)),
        // The HTTP request to the upstream is part of the same trace, for its own HTTP spans.
        ...(http && traced)
      }
      const result = await link.client.request({ method: method as RequestMethod, ...(params !== undefined && { params }) }, PASSTHROUGH, {
        ...(signal !== undefined && { signal }),
        timeout: token === undefined ? timeoutMs : MAX_TIMER_MS,
        ...(modern !== undefined && { allowInputRequired: true }),
        ...(Object.keys(headers).length > 0 && { headers })
      }) as Record<string, unknown>
      // The client runs notification handlers a microtask late and settles responses at
      // once, so the upstream's last progress or log message before its answer may still be
      // queued: let it through first, or it would reach the client after the answer.
      if (token !== undefined || options.downstream !== undefined) await new Promise(resolve => setImmediate(resolve))
      if (method === 'tools/list' && own) {
        return { ...result, tools: (result as ListToolsResult).tools.filter(tool => this.#offers(tool.name)) }
      }
      return result
    } catch (err) {
      const failed = options.signal?.aborted === true ? new CallError('ABORTED', 'The call was cancelled') : fromSdkError(err)
      let error = timedOut || failed.code === 'REQUEST_TIMEOUT' ? new CallError('REQUEST_TIMEOUT', `No answer within ${timeoutMs} ms`) : failed
      // The client gets the gateway's words (on MCP paths the message reaches it); the
      // upstream's own (an HTTP error body, say) only the log, masked.
      if (error.code === 'CONNECTION_CLOSED') error = new CallError('CONNECTION_CLOSED', describeFailure(err, { exit: link.exit }))
      // Over HTTP nothing announces a remote going away: a request that cannot reach it
      // (refused, reset, its session gone) takes the server down and starts the reconnects.
      if (error.code === 'CONNECTION_CLOSED' && this.#options.transport.kind !== 'stdio') {
        if (link === this.#shared) {
          this.#shared = undefined
          this.#down(new UpstreamFailure(error.message, this.#secrets.error(err)))
        }
        if (link === modern) this.#modern.drop(link)
        link.client.close().catch(() => {})
      }
      throw error
    } finally {
      if (token !== undefined) {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort as () => void)
        this.#progress.delete(token)
      }
      link.inflight.delete(key)
      if (own) this.#touch(options.session as RelaySession)
    }
  }

  /**
   * The `Mcp-Param-*` headers of a 2026-07-28 `tools/call`, which an HTTP upstream checks
   * against the arguments. The gateway sends them itself: its client mirrors them only for
   * tools it listed on that connection, and the tools are listed on the 2025-era one.
   */
  #mirroredHeaders (params: Record<string, unknown> | undefined): Record<string, string> {
    const tool = this.#tools.find(candidate => candidate.name === params?.name)
    return tool === undefined ? {} : paramHeaderValues(toolParamHeaders(tool), params?.arguments)
  }

  /**
   * A session's own upstream connection, opened on its first request (and again after it
   * was closed idle), at most `maxIsolated` at once: past that the request is refused, so a
   * client that opens sessions in a loop cannot start a process each time.
   */
  async #sessionLink (session: RelaySession): Promise<Link> {
    let own = this.#sessionLinks.get(session)
    if (own === undefined) {
      const limit = this.#options.maxIsolated ?? DEFAULT_MAX_ISOLATED
      if (this.#sessionLinks.size >= limit) throw new TooManyIsolatedError(this.name, limit, this.#nextIdleClose())
      const { sampling, elicitation, roots } = session.clientCapabilities() ?? {}
      // A session's connection that fails or ends is opened anew on its next request.
      const forget = (): void => {
        if (this.#sessionLinks.get(session) !== entry) return
        this.#sessionLinks.delete(session)
        clearTimeout(entry.idle)
      }
      const link = this.#open(session, {
        ...(sampling !== undefined && { sampling }),
        ...(elicitation !== undefined && { elicitation }),
        ...(roots !== undefined && { roots })
      }, false, forget)
      const entry: SessionLink = { link, lastUsed: Date.now(), idle: undefined }
      own = entry
      this.#sessionLinks.set(session, entry)
      link.then(() => {
        if (this.#sessionLinks.get(session) !== entry) return
        const idleMs = this.#options.isolatedIdleMs ?? DEFAULT_ISOLATED_IDLE_MS
        entry.idle = setTimeout(() => { this.#closeIdle(session, entry, idleMs) }, idleMs)
        entry.idle.unref()
      }, forget)
    }
    this.#touch(session)
    return await own.link
  }

  /** The session's own link was used now: its idle time starts again. */
  #touch (session: RelaySession): void {
    const own = this.#sessionLinks.get(session)
    if (own === undefined) return
    own.lastUsed = Date.now()
    own.idle?.refresh()
  }

  /** Closes a session's link unused for `idleMs`; its next request opens another. */
  #closeIdle (session: RelaySession, own: SessionLink, idleMs: number): void {
    own.link.then(link => {
      if (this.#sessionLinks.get(session) !== own) return
      // A call still running (longer than idleMs) keeps it open.
      if (link.inflight.size > 0) {
        own.idle?.refresh()
        return
      }
      this.#log?.info({ idleMs, pid: link.pid }, 'closing an idle per-session upstream connection')
      this.#closeSessionLink(session, own)
    }, () => {})
  }

  /** Seconds until the soonest per-session link is closed idle, for `Retry-After`. */
  #nextIdleClose (): number {
    const idleMs = this.#options.isolatedIdleMs ?? DEFAULT_ISOLATED_IDLE_MS
    let soonest = Infinity
    for (const own of this.#sessionLinks.values()) soonest = Math.min(soonest, own.lastUsed + idleMs)
    return Math.max(1, Math.ceil((soonest - Date.now()) / 1000))
  }

  async close (): Promise<void> {
    this.#closing = true
    this.#state = 'closed'
    this.#backoff.cancel()
    this.#stderr.close()
    const links = [...this.#sessionLinks.values()]
    for (const own of links) clearTimeout(own.idle)
    this.#sessionLinks.clear()
    const shared = this.#shared
    this.#shared = undefined
    await Promise.allSettled([
      shared === undefined ? undefined : closeLink(shared),
      this.#modern.close(),
      ...links.map(async own => { await closeLink(await own.link) }),
      ...this.#closingLinks
    ])
  }
}

async function listTools (client: Link['client'], timeout = DEFAULT_TIMEOUT_MS): Promise<Tool[]> {
  return await allPages<Tool>(async params => await client.request({ method: 'tools/list', params }, { timeout }), 'tools')
}


/**
 * The caller's identity as headers: `id` is the identity's client id (the API key's id, the
 * token's `client_id` or `sub`), `sub` the token's subject, anything else a claim of the token.
 * A field the caller does not have sends no header. Values are made safe for a header: text
 * outside printable ASCII is percent-encoded, so a claim cannot inject a header line.
 */
function identityHeaders (fields: Array<[header: string, field: string]>, authInfo: AuthInfo): Record<string, string> {
  const extra = authInfo.extra as { sub?: unknown, claims?: Record<string, unknown> } | undefined
  const headers: Record<string, string> = {}
  for (const [header, field] of fields) {
    const value = field === 'id' ? authInfo.clientId : field === 'sub' ? extra?.sub : extra?.claims?.[field]
    const text = Array.isArray(value) ? value.filter(isScalar).join(',') : isScalar(value) ? String(value) : undefined
    if (text === undefined || text === '') continue
    headers[header] = /^[\x20-\x7e]*$/.test(text) ? text : encodeURIComponent(text)
  }
  return headers
}

/**
 * The W3C trace context of the active span (`traceparent`, and `tracestate` when it has one),
 * or nothing outside a span: without tracing nothing sets one, and this is a lookup in an
 * empty context.
 */
function traceContext (): { traceparent: string, tracestate?: string } | undefined {
  const span = trace.getSpanContext(context.active())
  if (span === undefined || !isSpanContextValid(span)) return undefined
  const state = span.traceState?.serialize()
  return {
    traceparent: `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, '0')}`,
    ...(state !== undefined && state !== '' && { tracestate: state })
  }
}

/** A request's `_meta` without the client's trace context, which the gateway's span replaces. */
function withoutTraceContext (meta: unknown): Record<string, unknown> | undefined {
  if (meta === undefined || meta === null) return undefined
  const { traceparent: _parent, tracestate: _state, ...rest } = meta as Record<string, unknown>
  return rest
}

function isScalar (value: unknown): value is string | number | boolean {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
}
