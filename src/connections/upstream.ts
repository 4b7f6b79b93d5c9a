import type { FastifyBaseLogger } from 'fastify'
import { context, isSpanContextValid, trace } from '@opentelemetry/api'
import {
  CLIENT_CAPABILITIES_META_KEY,
  LOG_LEVEL_META_KEY,
  ProtocolError,
  ProtocolErrorCode,
  type ClientCapabilities,
  type LoggingLevel,
  type PriorDiscovery,
  type RequestMethod,
  type RequestOptions,
  type ServerCapabilities,
  type Tool
} from '@modelcontextprotocol/client'
import type { Progress } from '@modelcontextprotocol/client'
import type { AuthInfo, CallToolResult, McpRequestContext, Server } from '@modelcontextprotocol/server'
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_ISOLATED_IDLE_MS, DEFAULT_MAX_ISOLATED, DEFAULT_TIMEOUT_MS } from '../defaults.js'
import { CallError, fromSdkError, invalidParams, JsonRpcCode, TooManyIsolatedError } from '../errors.js'
import { callerKey, fulfilInputRequired } from '../mcp/input-rounds.js'
import { paramHeaderFault, paramHeaderValues, toolParamHeaders } from '../mcp/param-headers.js'
import { allPages, askDownstream, envelopedParams, INPUT_METHODS, legacyParams, LIST_CHANGED, NoClientToAskError, QUESTIONS, questionCapabilities } from '../mcp/protocol.js'
import { relayServer } from '../mcp/relay-server.js'
import { Backoff } from './backoff.js'
import type { ListKind, McpConnection, McpMessage, RelayOptions, RelaySession, ServerScope, ServerState } from './connection.js'
import { describeExit, describeFailure, Secrets, UpstreamFailure } from './failure.js'
import { ChangeStream, ModernLink } from './modern-link.js'
import { freshness, ToolCache, type ListCaller, type ListedTools } from './tool-list.js'
import { closeLink, openLink, StderrLog, verdictOf, type Link, type LinkEvents, type UpstreamTransport } from './upstream-link.js'

/**
 * What an upstream is served in, as its last connect found: `legacy`, it speaks 2025 only;
 * `modern`, 2026-07-28 (only, or over HTTP, where the gateway does not ask for 2025 once it
 * found 2026-07-28); `dual`, a stdio server that speaks both, a child each.
 */
type Revisions = 'legacy' | 'modern' | 'dual'

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
/** What the gateway declares on a shared link: the questions it can pass on to the client of a call (refused, per call, when there is none). */
const SHARED_CAPABILITIES: ClientCapabilities = { sampling: {}, elicitation: { form: {}, url: {} } }
/** What each verdict is called in the log. */
const REVISIONS: Record<Revisions, string> = { legacy: '2025 only', modern: '2026-07-28', dual: '2025 and 2026-07-28 (a child each)' }

/**
 * An upstream MCP server: a child process over stdio, or a remote one over Streamable HTTP
 * or the legacy HTTP+SSE transport, reached with the SDK's client.
 *
 * The gateway holds one shared connection, opened at boot within `connectTimeoutMs`. When
 * it cannot be opened, or closes later (the child exits, the remote goes away), the server
 * is down: calls in flight fail (502), new ones get 503 with `Retry-After`, and the
 * connection is reopened with exponential backoff.
 *
 * The revision: the gateway probes (see `openLink`), 2026-07-28 first, and serves each kind of
 * downstream client in the revision that serves it best:
 * - a server that speaks only 2025: everyone over its 2025 connection, as before (a
 *   2026-07-28 client's questions become `input_required` rounds, see `input-rounds.ts`);
 * - a server that speaks 2026-07-28: everyone over its 2026-07-28 connection, each caller
 *   with what the gateway can honour for it (see `#modernRequest`); there a question comes
 *   in the answer of the call that asks it, so on a shared connection the gateway always
 *   knows whose client to ask (a 2025 connection must refuse a question while several
 *   clients have calls in flight), and 2026-07-28 clients get the server's rounds as they are.
 *   Over HTTP that is all the gateway may learn: a client that found 2026-07-28 stays in it;
 *   and the 2025 side of the SDK v2's HTTP entry, the usual such server, is stateless and
 *   could neither ask a 2025 client nor tell it of a change anyway;
 * - a stdio server that speaks both (a new child answers `initialize`): 2026-07-28 clients
 *   over a 2026-07-28 child, 2025-era clients and REST over a 2025 one, since what such a
 *   server does for 2025 clients is what its 2025 side does (a handler that asks the 2025
 *   way, with `elicitInput` or `requestSampling`, can ask only there; its notifications may
 *   be 2025-only too). Two children: one per revision.
 * Where one revision serves everyone, a stdio server is one child. The verdict is kept: a
 * session's own connection opens in it without probing, and so does a reconnect to a server
 * that speaks 2026-07-28 (see `#connectShared`).
 *
 * Routing the upstream's messages: progress is tied to its request by the SDK's progress
 * tokens. On a 2025 connection, log messages and server→client requests (sampling,
 * elicitation, roots) carry no request id on stdio, so on a shared connection they go to the
 * one downstream client with a request in flight; when several clients have, a question is
 * refused with an error that points to `isolation: "session"` (never sent to a client it may
 * not belong to), and a log message goes to the gateway's log. A session's own connection
 * routes everything to it. On a 2026-07-28 connection the questions come in the answer of
 * the call that asks them (see `request`).
 */
export class UpstreamConnection implements McpConnection {
  readonly name: string
  get pinsSessions (): boolean { return this.#options.isolation === 'session' }
  #options: UpstreamOptions
  #log: FastifyBaseLogger | undefined
  #state: ServerState = 'starting'
  #failure: string | undefined
  /** The entry's header, env and URL secrets, masked in everything logged about it. */
  #secrets: Secrets
  #stderr: StderrLog
  #shared: Link | undefined
  /** What the server speaks, as the last connect found (see `#connectShared`). */
  #revisions: Revisions | undefined
  /** The probe's verdict on a server that speaks 2026-07-28: its links open in it without probing again. */
  #verdict: PriorDiscovery | undefined
  /** The link of the 2026-07-28 clients of a server that speaks both revisions. */
  #modern: ModernLink
  /** The change stream of each 2026-07-28 link. */
  #changes = new Map<Link, ChangeStream>()
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
  #tools: ToolCache<ListCaller & { authInfo: AuthInfo }>
  /** Tools left out of the lists because their `x-mcp-header` declarations are invalid: calls of them are refused as of unknown tools. */
  #excluded = new Set<string>()
  /** The log level each 2025-era session set (`logging/setLevel`), sent with its requests to a 2026-07-28 upstream, which has no such method. */
  #logLevels = new WeakMap<RelaySession, LoggingLevel>()
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
    this.#modern = new ModernLink(onClosed => this.#open(undefined, SHARED_CAPABILITIES, this.#verdict ?? 'probe', onClosed), options.log)
    this.#tools = new ToolCache(async caller => await this.#listTools(this.#shared, caller), () => { this.#changed('tools') }, (err, message) => {
      this.#log?.warn({ err: this.#secrets.error(err) }, message)
    })
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

  tools (): readonly Tool[] { return this.#tools.current() }
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

  /**
   * Opens the shared connection, finding out what the server speaks when that is not known:
   * a probe (2026-07-28 first), and for a stdio server that answers it in 2026-07-28, an
   * `initialize` to a second child, which becomes the shared one if it works (the server
   * speaks both; the probe's child is kept for 2026-07-28 clients) and is given up if not
   * (the probe's child serves everyone).
   *
   * Known verdicts are kept across reconnects, as the spec lets a client keep one for the
   * same server configuration, re-probing when it no longer holds (for stdio a probe costs a
   * process): a reconnect to a server that speaks 2026-07-28 opens in what it was found to
   * speak, and a failure forgets that, so the next attempt probes. A server found to speak
   * only 2025 is probed again: one that comes back may come back upgraded, and it would
   * still answer `initialize`.
   */
  async #connectShared (): Promise<void> {
    const previous = this.#revisions
    const verdict = this.#verdict
    this.#revisions = undefined
    let link: Link
    let revisions: Revisions
    let dualModern: Link | undefined
    try {
      ({ link, revisions, dualModern } = await this.#openShared(previous, verdict))
    } catch (err) {
      this.#verdict = undefined
      throw err
    }
    try {
      const capabilities = link.client.getServerCapabilities() ?? {}
      const listed: ListedTools = capabilities.tools === undefined
        ? { tools: [], expiresAt: Infinity, scope: 'public' }
        // Part of the start: within its timeout. (A stdio child that speaks 2026-07-28 is
        // adopted from the probe's verdict without a round trip, so it may still be booting.)
        : await this.#listTools(link, undefined, this.#options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS)
      if (this.#closing) throw new Error('the gateway is closing')
      this.#capabilities = capabilities
      this.#instructions = link.client.getInstructions()
      this.#tools.set(listed)
    } catch (err) {
      await Promise.allSettled([this.#close(link), dualModern === undefined ? undefined : this.#close(dualModern)])
      this.#verdict = undefined
      throw err
    }
    this.#shared = link
    this.#revisions = revisions
    if (revisions === 'legacy') this.#verdict = undefined
    if (revisions === 'modern') this.#listen(link)
    if (dualModern !== undefined) this.#modern.adopt(dualModern)
    if (revisions !== 'dual') {
      const stale = this.#modern.clear()
      if (stale !== undefined) this.#close(stale).catch(() => {})
    }
    this.#log?.info({ speaks: REVISIONS[revisions], protocolVersion: link.client.getNegotiatedProtocolVersion() }, 'connected to upstream mcp server')
    this.#state = 'up'
    this.#failure = undefined
    this.#backoff.reset()
    this.#subscriptions.clear()
  }

  /** The shared link, and what the server speaks: in the verdict of the last connect when it is kept, else as a probe finds it. */
  async #openShared (previous: Revisions | undefined, verdict: PriorDiscovery | undefined): Promise<{ link: Link, revisions: Revisions, dualModern?: Link }> {
    if (previous === 'modern' && verdict !== undefined) {
      return { link: await this.#open(undefined, SHARED_CAPABILITIES, verdict, this.#linkClosed), revisions: 'modern' }
    }
    if (previous === 'dual') {
      return { link: await this.#open(undefined, SHARED_CAPABILITIES, { kind: 'legacy' }, this.#linkClosed), revisions: 'dual' }
    }
    const probed = await this.#open(undefined, SHARED_CAPABILITIES, 'probe', this.#linkClosed)
    if (probed.era === 'legacy') return { link: probed, revisions: 'legacy' }
    this.#verdict = verdictOf(probed)
    // Over HTTP a client that found a server speaking 2026-07-28 stays in it (the spec's
    // compatibility matrix; the official client scenarios check that every request carries
    // the revision's headers and `_meta`), so it never learns whether the server speaks 2025
    // too: everyone is served in 2026-07-28. A stdio child is a server of its own, and a new
    // one may be asked `initialize`.
    if (this.#options.transport.kind !== 'stdio') return { link: probed, revisions: 'modern' }
    const legacy = await this.#open(undefined, SHARED_CAPABILITIES, { kind: 'legacy' }, this.#linkClosed).catch((err: unknown) => {
      this.#log?.debug({ err: this.#secrets.error(err) }, 'the upstream mcp server speaks 2026-07-28 only: it refused initialize')
      return undefined
    })
    return legacy === undefined ? { link: probed, revisions: 'modern' } : { link: legacy, revisions: 'dual', dualModern: probed }
  }

  /** The end of the shared link takes the server down; the end of the 2026-07-28 link of a server that speaks both is the `ModernLink`'s business. */
  readonly #linkClosed = (closed: Link): void => {
    if (this.#shared !== closed) {
      this.#modern.ended(closed)
      return
    }
    this.#shared = undefined
    this.#down(new UpstreamFailure(closed.pid === undefined ? 'the connection closed' : describeExit(closed.exit, closed.pid), undefined))
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
        this.#log?.info({ tools: this.#tools.current().map(tool => tool.name) }, 'upstream mcp server is back')
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
   * Opens one client connection: a shared one, or a session's own (`session` given).
   * `onClosed` runs when it ends, for whatever reason, after its child is forgotten.
   */
  async #open (session: RelaySession | undefined, capabilities: ClientCapabilities, negotiation: 'probe' | PriorDiscovery, onClosed: (link: Link) => void): Promise<Link> {
    const link = await openLink(this.#options.transport, {
      session,
      capabilities,
      negotiation,
      connectTimeoutMs: this.#options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      log: this.#log,
      secrets: this.#secrets,
      stderr: this.#stderr
    }, {
      ...this.#events,
      closed: closed => {
        this.#changes.get(closed)?.close()
        this.#changes.delete(closed)
        onClosed(closed)
      }
    })
    return link
  }

  /**
   * Opens the change stream of a 2026-07-28 link that serves 2025-era clients or keeps the
   * gateway's lists (the shared link of a server that speaks only 2026-07-28, or a session's
   * own), not awaited: a server slow to acknowledge it does not hold the start.
   */
  #listen (link: Link): void {
    const changes = new ChangeStream(link, link.client.getServerCapabilities() ?? {}, this.#log, err => { this.#lost(link, err) })
    this.#changes.set(link, changes)
    changes.open().catch(err => { this.#lost(link, err) })
  }

  /**
   * A 2026-07-28 link's change stream could not be opened. Over HTTP a connection failure
   * is the remote gone, as for a request that cannot reach it: the server goes down and is
   * reconnected. Any other refusal leaves the link without the stream: its tool list then
   * follows its ttl and the `tools/list` of clients.
   */
  #lost (link: Link, err: unknown): void {
    const failure = fromSdkError(err)
    if (failure.code !== 'CONNECTION_CLOSED' || this.#options.transport.kind === 'stdio' || link !== this.#shared) {
      if (!this.#closing) this.#log?.warn({ err: this.#secrets.error(err) }, 'the change stream of the upstream mcp server could not be opened')
      return
    }
    this.#shared = undefined
    this.#down(new UpstreamFailure(describeFailure(err), this.#secrets.error(err)))
    this.#close(link).catch(() => {})
  }

  /** Ends a link and its change stream. */
  async #close (link: Link): Promise<void> {
    this.#changes.get(link)?.close()
    this.#changes.delete(link)
    await closeLink(link)
  }

  /**
   * Every tool of a link's server the gateway offers, with how long the list stays fresh.
   * `caller` lists on a caller's behalf (its forwarded identity), for a `private` list.
   * Tools the entry hides (`tools.allow`/`deny`) are left out, and so, over Streamable HTTP
   * in 2026-07-28, are tools whose `x-mcp-header` declarations are invalid: the spec has a
   * client exclude them (SEP-2243), as the gateway could not send the headers the server
   * checks; the others stay.
   */
  async #listTools (link: Link | undefined, caller?: ListCaller & { authInfo: AuthInfo }, timeout = this.#options.timeoutMs ?? DEFAULT_TIMEOUT_MS): Promise<ListedTools> {
    if (link === undefined) throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`)
    const headers = caller !== undefined && this.#identityHeaders !== undefined ? identityHeaders(this.#identityHeaders, caller.authInfo) : undefined
    let first: Record<string, unknown> | undefined
    const tools = await allPages<Tool>(async params => {
      const page = await link.client.request({ method: 'tools/list', params }, PASSTHROUGH, { timeout, ...(headers !== undefined && { headers }) }) as Record<string, unknown>
      first ??= page
      return page
    }, 'tools')
    const checked = link.era === 'modern' && this.#options.transport.kind === 'http'
    const excluded = new Map<string, string>()
    const offered = tools.filter(tool => {
      if (!this.#offers(tool.name)) return false
      const fault = checked ? paramHeaderFault(tool) : undefined
      if (fault !== undefined) excluded.set(tool.name, fault)
      return fault === undefined
    })
    if (caller === undefined) {
      for (const [tool, reason] of excluded) if (!this.#excluded.has(tool)) this.#log?.warn({ tool, reason }, 'upstream tool left out: its x-mcp-header declarations are invalid')
      this.#excluded = new Set(excluded.keys())
    }
    return { tools: offered, ...freshness(first ?? {}, link.era) }
  }

  /** Whether the tool is one the gateway offers: the entry does not hide it, and its declarations are valid. */
  #callable (tool: string): boolean {
    return this.#offers(tool) && !this.#excluded.has(tool)
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
      // The refresh announces the change when the list differs, which a server that says
      // "changed" means it does.
      this.#tools.refresh().catch(err => { this.#log?.warn({ err: this.#secrets.error(err) }, 'listing upstream tools after a change failed') })
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
    const closing: Promise<void> = own.link.then(async link => { await this.#close(link) }, () => {}).catch(() => {}).finally(() => { this.#closingLinks.delete(closing) })
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
      // While the server is down, its last list (there is no fresher one to be had).
      if (method === 'tools/list') return { tools: this.#state === 'up' ? await this.#tools.list(this.#listCaller(options)) : this.#tools.current() }
      if (method === 'resources/subscribe' || method === 'resources/unsubscribe') {
        // One upstream subscription per URI while any session holds it.
        const uri = String(params?.uri)
        const holders = (this.#subscriptions.get(uri) ?? 0) + (method === 'resources/subscribe' ? 1 : -1)
        if (holders > 0) this.#subscriptions.set(uri, holders)
        else this.#subscriptions.delete(uri)
        if (method === 'resources/subscribe' ? holders > 1 : holders > 0) return {}
      }
    }
    if (method === 'tools/call' && !this.#callable(String(params?.name))) {
      throw invalidParams(`Tool ${String(params?.name)} not found`)
    }
    if (this.#state !== 'up') {
      throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}${this.#failure === undefined ? '' : `: ${this.#failure}`}`)
    }
    // A 2026-07-28 client of a server that speaks both takes its 2026-07-28 link, while there is one.
    const link = own
      ? await this.#sessionLink(options.session as RelaySession)
      : (options.modern === true && this.#revisions === 'dual' ? await this.#modern.get() : undefined) ?? this.#shared
    if (link === undefined) throw new CallError('NOT_CONNECTED', `Server '${this.name}' is down`)
    if (link.era === 'modern') return await this.#modernRequest(link, method, params, options, own)
    // What a 2026-07-28 request carries means nothing to a 2025-era upstream.
    return await this.#send(link, method, options.modern === true ? legacyParams(params) : params, options, own)
  }

  /**
   * A request over a 2026-07-28 link, for any caller. Its `_meta` envelope names the gateway
   * and carries what the gateway can honour for this caller (`envelopedParams`): a
   * 2026-07-28 client's own capabilities and log level, since its `input_required` answers
   * go back to it; a 2025-era session's declared questions and the level it set; nothing for
   * REST or a 2025-era client without a session, which no question can reach.
   *
   * A 2026-07-28 client gets the upstream's `input_required` as it is (the relay passes it
   * on); anyone else is asked the questions here (`fulfilInputRequired`). Over REST a
   * question, or the upstream's refusal to ask a caller without the capability (-32021),
   * answers as a question during a REST call to a 2025-era server does: a tool fails with
   * the reason (the REST shim's 422), anything else is an error.
   *
   * What 2026-07-28 does not have, the gateway keeps on its side: a 2025-era session's
   * `logging/setLevel` is remembered and sent with its requests, and `resources/subscribe`
   * becomes a URI in the link's change stream (see `ChangeStream`).
   */
  async #modernRequest (link: Link, method: string, params: Record<string, unknown> | undefined, options: RelayOptions & { session?: RelaySession }, own: boolean): Promise<Record<string, unknown>> {
    const session = options.session
    switch (method) {
      case 'logging/setLevel':
        if (session?.scope === 'session') this.#logLevels.set(session, params?.level as LoggingLevel)
        return {}
      case 'resources/subscribe':
      case 'resources/unsubscribe':
        await this.#changes.get(link)?.subscribe(String(params?.uri), method === 'resources/subscribe' ? 1 : -1)
        return {}
    }
    const meta = params?._meta as Record<string, unknown> | undefined
    const sent = options.modern === true
      ? envelopedParams(params, (meta?.[CLIENT_CAPABILITIES_META_KEY] ?? {}) as ClientCapabilities, meta?.[LOG_LEVEL_META_KEY] as LoggingLevel | undefined)
      : envelopedParams(params, this.#honoured(options), session === undefined ? undefined : this.#logLevels.get(session))
    const send = async (round: Record<string, unknown>): Promise<Record<string, unknown>> => {
      try {
        return await this.#send(link, method, round, options, own)
      } catch (err) {
        // The declarations the headers were built from were stale (a 2026-07-28 list may be
        // fresh for no time at all): list again and make the call once more, as the SDK client does.
        if (method !== 'tools/call' || !(err instanceof CallError) || err.rpcCode !== JsonRpcCode.HeaderMismatch) throw err
        await this.#tools.refresh()
        return await this.#send(link, method, round, options, own)
      }
    }
    if (options.modern === true || !INPUT_METHODS.has(method)) return await send(sent)
    try {
      return await fulfilInputRequired(sent, options.downstream, send)
    } catch (err) {
      const refusal = options.downstream === undefined ? noClientToAsk(err) : undefined
      if (refusal === undefined) throw err
      if (method === 'tools/call') return { content: [{ type: 'text', text: refusal.message }], isError: true }
      throw refusal
    }
  }

  /**
   * The capabilities the gateway can honour for a caller that is not a 2026-07-28 client:
   * the questions its 2025-era session declared; none for REST or a client without a
   * session, which no question can reach.
   */
  #honoured (options: RelayOptions & { session?: RelaySession }): ClientCapabilities {
    if (options.downstream === undefined || options.session?.scope !== 'session') return {}
    return questionCapabilities(options.session.clientCapabilities())
  }

  /** Whose list a `tools/list` is, while callers' identities are forwarded (the upstream may then answer each its own). */
  #listCaller (options: RelayOptions): (ListCaller & { authInfo: AuthInfo }) | undefined {
    if (this.#identityHeaders === undefined || options.authInfo === undefined) return undefined
    return { key: callerKey(options.authInfo), authInfo: options.authInfo }
  }

  /** One request over a link, with the gateway's progress tokens and timeout, identity and trace headers, and its errors in the gateway's terms. */
  async #send (link: Link, method: string, params: Record<string, unknown> | undefined, options: RelayOptions & { session?: RelaySession }, own: boolean): Promise<Record<string, unknown>> {
    const modern = link.era === 'modern'
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
      // Only a Streamable HTTP upstream reads headers; stdio has none, and the HTTP+SSE transport sends none per request.
      const http = this.#options.transport.kind === 'http'
      const headers = http || this.#identityHeaders !== undefined
        ? {
            ...(modern && http && method === 'tools/call' && this.#mirroredHeaders(params)),
            ...(this.#identityHeaders !== undefined && options.authInfo !== undefined && identityHeaders(this.#identityHeaders, options.authInfo)),
            // The HTTP request to the upstream is part of the same trace, for its own HTTP spans.
            ...(http && traced)
          }
        : undefined
      // Built by assignment: this is on the path of every relayed call.
      const requestOptions: RequestOptions = { timeout: token === undefined ? timeoutMs : MAX_TIMER_MS }
      if (signal !== undefined) requestOptions.signal = signal
      if (modern && INPUT_METHODS.has(method)) requestOptions.allowInputRequired = true
      if (headers !== undefined && Object.keys(headers).length > 0) requestOptions.headers = headers
      const result = await link.client.request(params === undefined ? { method: method as RequestMethod } : { method: method as RequestMethod, params }, PASSTHROUGH, requestOptions) as Record<string, unknown>
      // The client runs notification handlers a microtask late and settles responses at
      // once, so the upstream's last progress or log message before its answer may still be
      // queued: let it through first, or it would reach the client after the answer.
      if (token !== undefined || options.downstream !== undefined) await new Promise(resolve => setImmediate(resolve))
      if (method === 'tools/list' && own) {
        const checked = modern && http
        return { ...result, tools: (result.tools as Tool[]).filter(tool => this.#offers(tool.name) && (!checked || paramHeaderFault(tool) === undefined)) }
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
        // No DELETE: the remote cannot be reached.
        this.#changes.get(link)?.close()
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
   * The `Mcp-Param-*` headers of a `tools/call` to a 2026-07-28 Streamable HTTP upstream,
   * which checks them against the arguments (SEP-2243): each argument its tool designates
   * (`x-mcp-header`), encoded as the spec says (plain when it can be, Base64 otherwise), and
   * none for an argument that is null or absent. The SDK client mirrors them only for tools
   * listed through its own `listTools`, so the gateway builds them from its own list.
   */
  #mirroredHeaders (params: Record<string, unknown> | undefined): Record<string, string> {
    const tool = this.#tools.current().find(candidate => candidate.name === params?.name)
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
      // A session's connection that fails or ends is opened anew on its next request.
      const forget = (): void => {
        if (this.#sessionLinks.get(session) !== entry) return
        this.#sessionLinks.delete(session)
        clearTimeout(entry.idle)
      }
      // In the revision the shared connection found: the same server, so no probe (and, for
      // stdio, no probing sibling process) per session.
      const link = this.#open(session, questionCapabilities(session.clientCapabilities()), this.#revisions === 'modern' && this.#verdict !== undefined ? this.#verdict : { kind: 'legacy' }, forget)
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
    this.#tools.close()
    const links = [...this.#sessionLinks.values()]
    for (const own of links) clearTimeout(own.idle)
    this.#sessionLinks.clear()
    const shared = this.#shared
    this.#shared = undefined
    const modern = await this.#modern.close()
    await Promise.allSettled([
      shared === undefined ? undefined : this.#close(shared),
      modern === undefined ? undefined : this.#close(modern),
      ...links.map(async own => { await this.#close(await own.link) }),
      ...this.#closingLinks
    ])
  }
}

/**
 * The refusal a REST call's question gets (`NoClientToAskError`), however the 2026-07-28
 * upstream put the question: with `input_required` (and the gateway had no one to ask), or
 * as its refusal to ask a caller that declared no capability for it (-32021, which REST
 * always gets, as it declares none); undefined for any other error.
 */
function noClientToAsk (err: unknown): NoClientToAskError | undefined {
  if (err instanceof NoClientToAskError) return err
  if (!(err instanceof CallError) || err.rpcCode !== ProtocolErrorCode.MissingRequiredClientCapability) return undefined
  const required = Object.keys((err.data as { requiredCapabilities?: object } | undefined)?.requiredCapabilities ?? {})
  const capability = required.find((name): name is keyof typeof QUESTIONS => name in QUESTIONS)
  return capability === undefined ? undefined : new NoClientToAskError(QUESTIONS[capability])
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
