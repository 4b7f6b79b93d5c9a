import type { FastifyBaseLogger } from 'fastify'
import { closeLink, type Link } from './upstream-link.js'

/** How long 2026-07-28 requests take the 2025-era link after their own link failed. */
const MODERN_RETRY_MS = 30_000

/**
 * The link of an upstream for 2026-07-28 requests, opened on the first one. A 2026-07-28
 * upstream answers on it as it would its own clients: an `input_required` result goes back
 * to the client that asked, and the retry carries the answers, so nothing has to be routed.
 *
 * `get` answers undefined while the upstream speaks only 2025 (its 2025-era link then serves
 * 2026-07-28 clients too) or while a failed attempt waits to be tried again. For stdio this
 * is a second child process: a stdio connection speaks one protocol era for its life.
 */
export class ModernLink {
  /** Opens a link that probes for 2026-07-28; `onClosed` runs when it ends. */
  #open: (onClosed: () => void) => Promise<Link>
  #log: FastifyBaseLogger | undefined
  #link: Promise<Link | undefined> | undefined
  /** The link `#link` resolved to, once taken. */
  #current: Link | undefined
  /** No link before this time: the last one failed, or the upstream speaks only 2025. */
  #retryAt = 0

  constructor (open: (onClosed: () => void) => Promise<Link>, log: FastifyBaseLogger | undefined) {
    this.#open = open
    this.#log = log
  }

  async get (): Promise<Link | undefined> {
    if (this.#link === undefined) {
      if (Date.now() < this.#retryAt) return undefined
      // Only a link taken as the modern one reacts to its end: closing a 2025-era verdict's
      // link must not replace that verdict with a retry time.
      let taken = false
      const opening: Promise<Link | undefined> = this.#open(() => {
        if (!taken || this.#link !== opening) return
        // Ended under the gateway (the child exited): 2026-07-28 requests take the 2025-era
        // link for a while rather than starting a child each, should it keep failing.
        this.#link = undefined
        this.#current = undefined
        this.#retryAt = Date.now() + MODERN_RETRY_MS
      }).then(async link => {
        taken = link.client.getProtocolEra() === 'modern'
        if (taken) {
          this.#current = link
          return link
        }
        // A 2025-era upstream stays one until its 2025-era link reconnects (`reset`).
        this.#log?.info('upstream mcp server speaks no 2026-07-28: its 2025-era connection serves 2026-07-28 clients')
        this.#retryAt = Infinity
        await closeLink(link)
        return undefined
      }, err => {
        this.#log?.warn({ err }, 'opening a 2026-07-28 connection to the upstream mcp server failed')
        this.#retryAt = Date.now() + MODERN_RETRY_MS
        return undefined
      })
      this.#link = opening
    }
    const link = await this.#link
    if (link === undefined && this.#link !== undefined) this.#link = undefined
    return link
  }

  /** The upstream reconnected: it may speak 2026-07-28 now, so the next request probes again. */
  reset (): void {
    this.#retryAt = 0
  }

  /** A request found the link dead (an HTTP upstream gone): the next request opens another. */
  drop (link: Link): void {
    if (this.#current !== link) return
    this.#current = undefined
    this.#link = undefined
  }

  async close (): Promise<void> {
    const link = this.#link
    this.#link = undefined
    this.#current = undefined
    const open = await link
    if (open !== undefined) await closeLink(open)
  }
}
