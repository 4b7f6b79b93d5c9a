import type { FastifyBaseLogger } from 'fastify'
import type { McpSubscription, ServerCapabilities, SubscriptionFilter } from '@modelcontextprotocol/client'
import { closeLink, type Link } from './upstream-link.js'

// The 2026-07-28 side of an upstream: the child its 2026-07-28 clients use when a stdio
// server speaks both revisions (`ModernLink`), and the change stream of any 2026-07-28 link
// (`ChangeStream`).

/** How long 2026-07-28 requests take the 2025-era link after their own link ended under the gateway. */
const MODERN_RETRY_MS = 30_000

/**
 * The link for the 2026-07-28 clients of a stdio server that speaks both revisions (its 2025
 * clients and REST use the 2025-era child: see the class comment of `UpstreamConnection`).
 * It starts as the link the probe opened (`adopt`); when it ends under the gateway (the child
 * exited), 2026-07-28 requests take the 2025-era link for a while rather than starting a
 * child each, should it keep failing, and the next one after that opens it again in the
 * probe's verdict. A second child process: a stdio connection speaks one revision for its life.
 */
export class ModernLink {
  /** Opens a 2026-07-28 link (in the probe's verdict, without probing again); `onClosed` runs when it ends. */
  #open: (onClosed: (link: Link) => void) => Promise<Link>
  #log: FastifyBaseLogger | undefined
  #current: Link | undefined
  #opening: Promise<Link | undefined> | undefined
  /** No link before this time: the last one ended or failed to open. */
  #retryAt = 0
  #closed = false

  constructor (open: (onClosed: (link: Link) => void) => Promise<Link>, log: FastifyBaseLogger | undefined) {
    this.#open = open
    this.#log = log
  }

  /** The onClosed of a link this class takes: it opens it again later, not at once. */
  readonly ended = (link: Link): void => {
    if (this.#current !== link) return
    this.#current = undefined
    this.#retryAt = Date.now() + MODERN_RETRY_MS
  }

  /** Takes a link opened elsewhere (the probe's) as the one for 2026-07-28 clients; its onClosed must be `ended`. */
  adopt (link: Link): void {
    this.#current = link
    this.#retryAt = 0
  }

  /** The link, opened again when it ended and its wait is over; undefined while there is none (the 2025-era link serves then). */
  async get (): Promise<Link | undefined> {
    if (this.#current !== undefined || this.#closed) return this.#current
    if (this.#opening === undefined) {
      if (Date.now() < this.#retryAt) return undefined
      this.#opening = this.#open(this.ended).then(link => {
        if (this.#closed) {
          closeLink(link).catch(() => {})
          return undefined
        }
        this.#current = link
        return link
      }, err => {
        this.#log?.warn({ err }, 'opening a 2026-07-28 connection to the upstream mcp server failed')
        this.#retryAt = Date.now() + MODERN_RETRY_MS
        return undefined
      }).finally(() => { this.#opening = undefined })
    }
    return await this.#opening
  }

  /** Lets go of the link (the server no longer speaks both revisions) and returns it, for the caller to close. */
  clear (): Link | undefined {
    const current = this.#current
    this.#current = undefined
    return current
  }

  /** For good (the gateway closes): returns the link, once one being opened has settled, for the caller to close. */
  async close (): Promise<Link | undefined> {
    this.#closed = true
    await this.#opening
    return this.clear()
  }
}

/** A stream that ended sooner than this after it opened is opened again only after this long, so a server that ends every stream at once is not asked in a loop. */
const REOPEN_DELAY_MS = 1000

/**
 * The change stream of a 2026-07-28 link (`subscriptions/listen`). That revision has no
 * notifications outside a request: list changes and resource updates come only on a stream
 * the client opens with a filter. The SDK client hands what arrives on it to the link's
 * notification handlers, the ones a 2025-era link's notifications reach, so nothing past the
 * link can tell the two apart: `list_changed` refreshes the gateway's tools and reaches its
 * sessions, and `resources/updated` reaches the sessions that subscribed.
 *
 * The filter asks for every list the server says can change, and for the resources the
 * gateway's clients subscribed to (a 2025-era client's `resources/subscribe` becomes a URI in
 * it). A new filter opens a new stream before the old one is closed, so no change falls
 * between the two. A stream the server ends (a graceful close, or the lifetime limit servers
 * put on streams) is opened again; when that fails, `onLost` hears why.
 */
export class ChangeStream {
  #link: Link
  #capabilities: ServerCapabilities
  #log: FastifyBaseLogger | undefined
  #onLost: (err: unknown) => void
  #current: McpSubscription | undefined
  /** Subscribed resource URIs, with how many holders each. */
  #resources = new Map<string, number>()
  /** The stream being opened, so filter changes apply one after another. */
  #opening: Promise<void> = Promise.resolve()
  #closed = false
  #timer: NodeJS.Timeout | undefined

  constructor (link: Link, capabilities: ServerCapabilities, log: FastifyBaseLogger | undefined, onLost: (err: unknown) => void) {
    this.#link = link
    this.#capabilities = capabilities
    this.#log = log
    this.#onLost = onLost
  }

  /** Opens the stream; resolves once the server acknowledged it (or there is nothing to ask for). */
  async open (): Promise<void> { await this.#reopen() }

  /** A holder subscribed to a resource (`delta` 1) or dropped it (-1); the filter follows when the set of URIs changes. */
  async subscribe (uri: string, delta: 1 | -1): Promise<void> {
    const holders = (this.#resources.get(uri) ?? 0) + delta
    const changed = (holders > 0) !== this.#resources.has(uri)
    if (holders > 0) this.#resources.set(uri, holders)
    else this.#resources.delete(uri)
    if (changed) await this.#reopen()
  }

  /**
   * The link is ending: the stream is not opened again. It is not cancelled either: closing
   * the link's client ends it (the HTTP request is aborted, the child exits), and a
   * cancellation the server must process first would only delay its own shutdown.
   */
  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#current = undefined
  }

  #filter (): SubscriptionFilter {
    const { tools, prompts, resources } = this.#capabilities
    const uris = resources?.subscribe === true ? [...this.#resources.keys()] : []
    return {
      ...(tools?.listChanged === true && { toolsListChanged: true }),
      ...(prompts?.listChanged === true && { promptsListChanged: true }),
      ...(resources?.listChanged === true && { resourcesListChanged: true }),
      ...(uris.length > 0 && { resourceSubscriptions: uris })
    }
  }

  /** Opens a stream with the filter of now, then closes the one it replaces; one at a time. */
  #reopen (): Promise<void> {
    const next = this.#opening.then(async () => {
      if (this.#closed) return
      const filter = this.#filter()
      const previous = this.#current
      this.#current = Object.keys(filter).length === 0 ? undefined : await this.#listen(filter)
      await previous?.close().catch(() => {})
    })
    this.#opening = next.catch(() => {})
    return next
  }

  async #listen (filter: SubscriptionFilter): Promise<McpSubscription> {
    const opened = Date.now()
    const subscription = await this.#link.client.listen(filter)
    subscription.closed.then(how => {
      if (how === 'local' || this.#closed || this.#current !== subscription) return
      this.#log?.debug({ how }, 'upstream mcp server ended its change stream')
      const reopen = (): void => {
        this.#reopen().catch(err => {
          if (!this.#closed) this.#onLost(err)
        })
      }
      const delay = opened + REOPEN_DELAY_MS - Date.now()
      if (delay <= 0) {
        reopen()
        return
      }
      this.#timer = setTimeout(reopen, delay)
      this.#timer.unref()
    }, () => {})
    return subscription
  }
}
