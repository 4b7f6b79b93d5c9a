import type { FastifyBaseLogger } from 'fastify'
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
import type { CallToolResult, McpRequestContext, Server } from '@modelcontextprotocol/server'
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_TIMEOUT_MS } from '../defaults.js'
import { CallError, fromSdkError, invalidParams } from '../errors.js'
import { paramHeaderValues, toolParamHeaders } from '../mcp/param-headers.js'
import { allPages, askDownstream, legacyParams, LIST_CHANGED } from '../mcp/protocol.js'
import { relayServer } from '../mcp/relay-server.js'
import { Backoff } from './backoff.js'
import type { ListKind, McpConnection, McpMessage, RelayOptions, RelaySession, ServerScope, ServerState } from './connection.js'
import { ModernLink } from './modern-link.js'
import { closeLink, openLink, type Link, type LinkEvents, type UpstreamTransport } from './upstream-link.js'

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
  log?: FastifyBaseLogger
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

  #sessionLinks = new Map<RelaySession, Promise<Link>>()
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
  /** Progress routes of requests in flight, by the progress token the gateway gave them. */
  #progress = new Map<string, (progress: Progress) => void>()
  #progressTokens = 0

  constructor (name: string, options: UpstreamOptions) {
    this.name = name
    this.#options = options
    this.#log = options.log
    this.#backoff = new Backoff(options.retry)
    this.#modern = new ModernLink(onClosed => this.#open(undefined, {}, true, onClosed), options.log)
  }

  get state (): ServerState { return this.#state }
  get failure (): string | undefined { return this.#failure }
  get retryAfter (): number | undefined {
    return this.#state === 'down' ? this.#backoff.retryAfter : undefined
  }

  /** The shared connection's child process, for stdio upstreams that are up. */
  get pid (): number | undefined { return this.#shared?.pid }

  tools (): readonly Tool[] { return this.#tools }
  capabilities (): ServerCapabilities { return this.#capabilities }
  instructions (): string | undefined { return this.#instructions }

  /**
   * Connects at boot. Idempotent, so the gateway can start every upstream at once and each
   * mount plugin then awaits its own: boot takes as long as the slowest, not the sum.
   */
  start (): Promise<void> {
    this.#starting ??= this.#connectShared().catch(err => {
      this.#down(err instanceof Error ? err.message : String(err))
      throw err
    })
    return this.#starting
  }

  async #connectShared (): Promise<void> {
    const link = await this.#open(undefined, { sampling: {}, elicitation: { form: {}, url: {} } }, false, closed => {
      if (this.#shared !== closed) return
      this.#shared = undefined
      this.#down(closed.pid === undefined ? 'the connection closed' : `the server process (pid ${closed.pid}) exited`)
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

  /** Marks the server down and, unless the gateway is closing, schedules the next attempt. */
  #down (reason: string): void {
    if (this.#closing) return
    this.#state = 'down'
    this.#failure = reason
    const delay = this.#backoff.schedule(() => {
      this.#connectShared().then(() => {
        this.#log?.info({ tools: this.#tools.map(tool => tool.name) }, 'upstream mcp server is back')
        for (const kind of ['tools', 'prompts', 'resources'] as const) this.#changed(kind)
      }, err => { this.#down(err instanceof Error ? err.message : String(err)) })
    })
    if (delay !== undefined) this.#log?.warn({ reason, retryInMs: delay }, 'upstream mcp server is down')
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
      log: this.#log
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
      }, err => { this.#log?.warn({ err }, 'listing upstream tools after a change failed') })
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
      this.#sessionLinks.delete(session)
      if (own === undefined) return
      // Tracked until it is closed, so `close()` waits for the session's child too.
      const closing: Promise<void> = own.then(closeLink, () => {}).catch(() => {}).finally(() => { this.#closingLinks.delete(closing) })
      this.#closingLinks.add(closing)
    }
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
      const result = await link.client.request({ method: method as RequestMethod, ...(params !== undefined && { params }) }, PASSTHROUGH, {
        ...(signal !== undefined && { signal }),
        timeout: token === undefined ? timeoutMs : MAX_TIMER_MS,
        ...(modern !== undefined && { allowInputRequired: true }),
        // Only an HTTP upstream reads headers; stdio has none to send.
        ...(modern !== undefined && method === 'tools/call' && this.#options.transport.kind !== 'stdio' && { headers: this.#mirroredHeaders(params) })
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
      const error = timedOut || failed.code === 'REQUEST_TIMEOUT' ? new CallError('REQUEST_TIMEOUT', `No answer within ${timeoutMs} ms`) : failed
      // Over HTTP nothing announces a remote going away: a request that cannot reach it
      // (refused, reset, its session gone) takes the server down and starts the reconnects.
      if (error.code === 'CONNECTION_CLOSED' && this.#options.transport.kind !== 'stdio') {
        if (link === this.#shared) {
          this.#shared = undefined
          this.#down(error.message)
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

  /** A session's own upstream connection, opened on its first request. */
  async #sessionLink (session: RelaySession): Promise<Link> {
    let link = this.#sessionLinks.get(session)
    if (link === undefined) {
      const { sampling, elicitation, roots } = session.clientCapabilities() ?? {}
      // A session's connection that fails or ends is opened anew on its next request.
      const forget = (): void => { if (this.#sessionLinks.get(session) === link) this.#sessionLinks.delete(session) }
      link = this.#open(session, {
        ...(sampling !== undefined && { sampling }),
        ...(elicitation !== undefined && { elicitation }),
        ...(roots !== undefined && { roots })
      }, false, forget)
      this.#sessionLinks.set(session, link)
      link.catch(forget)
    }
    return await link
  }

  async close (): Promise<void> {
    this.#closing = true
    this.#state = 'closed'
    this.#backoff.cancel()
    const links = [...this.#sessionLinks.values()]
    this.#sessionLinks.clear()
    const shared = this.#shared
    this.#shared = undefined
    await Promise.allSettled([
      shared === undefined ? undefined : closeLink(shared),
      this.#modern.close(),
      ...links.map(async link => { await closeLink(await link) }),
      ...this.#closingLinks
    ])
  }
}

async function listTools (client: Link['client'], timeout = DEFAULT_TIMEOUT_MS): Promise<Tool[]> {
  return await allPages<Tool>(async params => await client.request({ method: 'tools/list', params }, { timeout }), 'tools')
}

