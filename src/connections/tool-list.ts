import { MAX_CACHE_TTL_MS, type CacheScope, type ProtocolEra, type Tool } from '@modelcontextprotocol/client'

/** Callers whose own lists are kept at once (a 2026-07-28 server's `private` lists, while identities are forwarded); the oldest goes first. */
const MAX_PRIVATE_LISTS = 256

/** One list of tools as an upstream gave it, and how long it stays fresh. */
export interface ListedTools {
  tools: Tool[]
  /** When it goes stale, in ms since the epoch; `Infinity` for a 2025-era server's, which announces its changes instead. */
  expiresAt: number
  scope: CacheScope
}

/** Who a list is for, when the upstream may answer each caller its own (`private`) list. */
export interface ListCaller {
  /** Names the caller's authorization context (`callerKey`). */
  key: string
}

/**
 * A list result's freshness, as the 2026-07-28 revision's cache hints say (SEP-2549): fresh
 * for `ttlMs` (at most the SDK client's 24 hours; absent or 0 is stale at once), shareable
 * across callers only when `cacheScope` is `public` (absent is `private`, as the SDK reads it).
 * A 2025-era result has no hints: it stays fresh until the server says its list changed.
 */
export function freshness (result: Record<string, unknown>, era: ProtocolEra, now = Date.now()): Pick<ListedTools, 'expiresAt' | 'scope'> {
  if (era === 'legacy') return { expiresAt: Infinity, scope: 'public' }
  const ttl = typeof result.ttlMs === 'number' && Number.isFinite(result.ttlMs) ? Math.min(Math.max(result.ttlMs, 0), MAX_CACHE_TTL_MS) : 0
  return { expiresAt: now + ttl, scope: result.cacheScope === 'public' ? 'public' : 'private' }
}

interface Entry extends ListedTools {
  /** Whether the list was read since it was fetched: only a list in use is fetched again when it goes stale. */
  read: boolean
}

/**
 * The tools of an upstream as the gateway keeps them: the one cache of an upstream's lists
 * (REST lookups, the OpenAPI routes, `/mcp` and each `tools/list` read it), kept as fresh as
 * the server asks.
 *
 * A downstream `tools/list` gets the kept list while it is fresh and waits for a new one
 * when it is stale, as the server's hints require of any client that serves a list. The
 * gateway's own lookups (`current`) take the last list as a client takes the tools it last
 * listed; so that they stay within the hints too, a list read while fresh is fetched again
 * when it goes stale, once, in the background (a list nobody reads costs nothing). A list
 * that arrives different from the last one is announced (`onChanged`).
 *
 * `cacheScope` is honoured per authorization context. The gateway lists with its own
 * credentials, so every downstream caller is the one context the upstream knows, and a
 * `private` list is shared among them, as the SDK client shares one under a single
 * `cachePartition`; but while callers' identities are forwarded (`forwardIdentity`), the
 * upstream may answer each its own list, and a `private` one is then kept per caller.
 */
export class ToolCache<Caller extends ListCaller = ListCaller> {
  #fetch: (caller: Caller | undefined) => Promise<ListedTools>
  #onChanged: () => void
  #onError: (err: unknown, message: string) => void
  #shared: Entry = { tools: [], expiresAt: Infinity, scope: 'public', read: false }
  #private = new Map<string, Entry>()
  #refreshing: Promise<Tool[]> | undefined
  #timer: NodeJS.Timeout | undefined

  /**
   * @param fetch lists the tools, for a caller or (undefined) in the gateway's own name.
   * @param onChanged runs after a list arrived that differs from the one before.
   * @param onError hears of a listing that failed while the last list was kept.
   */
  constructor (fetch: (caller: Caller | undefined) => Promise<ListedTools>, onChanged: () => void, onError: (err: unknown, message: string) => void) {
    this.#fetch = fetch
    this.#onChanged = onChanged
    this.#onError = onError
  }

  /** The gateway's own list, as last fetched. */
  current (): Tool[] {
    this.#shared.read = true
    return this.#shared.tools
  }

  /** The list for a downstream `tools/list`: the kept one while fresh, a new one when stale (the kept one if that fails). */
  async list (caller?: Caller): Promise<Tool[]> {
    if (caller !== undefined && this.#shared.scope === 'private') return await this.#privateList(caller)
    this.#shared.read = true
    if (Date.now() < this.#shared.expiresAt) return this.#shared.tools
    return await this.refresh().catch(err => {
      this.#onError(err, 'listing upstream tools failed: serving the last list')
      return this.#shared.tools
    })
  }

  /** Lists now (the server said its list changed, or it went stale), once however many ask at the same time. */
  refresh (): Promise<Tool[]> {
    this.#refreshing ??= this.#fetch(undefined).then(listed => {
      const changed = JSON.stringify(listed.tools) !== JSON.stringify(this.#shared.tools)
      this.set(listed)
      if (changed) this.#onChanged()
      return listed.tools
    }).finally(() => { this.#refreshing = undefined })
    return this.#refreshing
  }

  /** Takes a list fetched elsewhere (at connect) as the gateway's own. */
  set (listed: ListedTools): void {
    this.#shared = { ...listed, read: false }
    this.#private.clear()
    clearTimeout(this.#timer)
    this.#timer = undefined
    const delay = listed.expiresAt - Date.now()
    if (delay <= 0 || !Number.isFinite(delay)) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (!this.#shared.read) return
      this.refresh().catch(err => { this.#onError(err, 'listing upstream tools after their ttl ran out failed') })
    }, delay)
    this.#timer.unref()
  }

  close (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  async #privateList (caller: Caller): Promise<Tool[]> {
    const kept = this.#private.get(caller.key)
    if (kept !== undefined && Date.now() < kept.expiresAt) return kept.tools
    const listed = await this.#fetch(caller)
    this.#private.delete(caller.key)
    if (this.#private.size >= MAX_PRIVATE_LISTS) this.#private.delete(this.#private.keys().next().value as string)
    this.#private.set(caller.key, { ...listed, read: true })
    return listed.tools
  }
}
