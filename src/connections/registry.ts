import { InvalidOptionsError } from '../errors.js'
import type { ListKind, McpConnection } from './connection.js'

const LIST_KINDS: readonly ListKind[] = ['tools', 'prompts', 'resources']

/** One mounted server as the registry keeps it. */
export interface MountedServer {
  readonly name: string
  /** Where its routes are: `/<name>` unless configured otherwise. */
  readonly prefix: string
  readonly connection: McpConnection
  /** The gateway is not ready while this server is down (`/ready` answers 503). */
  readonly required?: boolean
  /** Scopes a caller must hold for any call of this server. */
  readonly scopes?: readonly string[]
  /** The prefix of its tool and prompt names on `/mcp`; `false` shows them as they are. Default: `name`. */
  readonly namespace?: string | false
  /** Its own tool or prompt name → the name `/mcp` shows, before the namespace. Only `/mcp` reads it. */
  readonly rename?: Readonly<Record<string, string>>
}

/** What one MCP endpoint holds open right now, read when metrics are scraped. */
export interface EndpointStats {
  /** Live 2025-era sessions. */
  readonly sessions: number
  /** Sessions' open GET (SSE) streams. */
  readonly sessionStreams: number
  /** Open 2026-07-28 `subscriptions/listen` streams. */
  readonly listenStreams: number
}

/**
 * The mounted servers, by name, and their lifecycle: the registry starts their connections
 * (all at once, so boot takes as long as the slowest server, not the sum) and closes them when
 * the gateway closes. `/ready`, the aggregated endpoint and the mount plugins read from it;
 * servers added or replaced at run time (config reload) go through it too, and whoever
 * listens hears of them.
 */
export class ServerRegistry {
  #servers = new Map<string, MountedServer>()
  #listChanged = new Set<(server: MountedServer, kind: ListKind) => void>()
  #detach = new Map<string, () => void>()
  #endpoints = new Map<string, () => EndpointStats>()

  get size (): number { return this.#servers.size }

  has (name: string): boolean { return this.#servers.has(name) }
  get (name: string): MountedServer | undefined { return this.#servers.get(name) }

  /** Every mounted server, in the order it was added (the config's order). */
  servers (): MountedServer[] { return [...this.#servers.values()] }
  connections (): McpConnection[] { return this.servers().map(server => server.connection) }

  /** Adds a server; its connection starts connecting at once (awaited by `started`). */
  add (server: MountedServer): void {
    if (this.#servers.has(server.name)) throw new InvalidOptionsError(`an MCP server named '${server.name}' is already mounted`)
    this.#put(server)
  }

  /**
   * Puts `server` in place of the one mounted under its name (a config reload changed it) and
   * returns the one it replaced, still open: the caller closes it once nothing serves it.
   */
  replace (server: MountedServer): MountedServer | undefined {
    const old = this.#servers.get(server.name)
    if (old !== undefined) this.#detach.get(server.name)?.()
    this.#put(server)
    return old
  }

  /** The mounted servers as they are now, to put back with `restore` if a rebuild fails. */
  snapshot (): MountedServer[] { return this.servers() }

  /** Puts back the servers of `snapshot`, as they were; none is closed or started. */
  restore (snapshot: MountedServer[]): void {
    for (const name of [...this.#servers.keys()]) {
      this.#detach.get(name)?.()
      this.#detach.delete(name)
    }
    this.#servers.clear()
    for (const server of snapshot) this.#put(server)
  }

  #put (server: MountedServer): void {
    const known = this.#servers.has(server.name)
    this.#servers.set(server.name, server)
    this.#detach.set(server.name, server.connection.onListChanged(kind => { this.#changed(server, kind) }))
    // A server that joins (or replaces another) at run time changes every list of whoever
    // gathers them (`/mcp`); at boot nobody listens yet.
    if (known || this.#listChanged.size > 0) this.#changedAll(server)
  }

  #changed (server: MountedServer, kind: ListKind): void {
    for (const listener of this.#listChanged) listener(server, kind)
  }

  #changedAll (server: MountedServer): void {
    for (const kind of LIST_KINDS) this.#changed(server, kind)
  }

  /**
   * Starts a server's connection, or waits for the start already under way. A server that
   * cannot start is marked down by its connection and reported here; the gateway keeps
   * serving the others.
   */
  async start (name: string): Promise<void> {
    await this.#servers.get(name)?.connection.start()
  }

  /** Takes a server out and closes its connection. */
  async remove (name: string): Promise<void> {
    const server = this.#servers.get(name)
    if (server === undefined) return
    this.#servers.delete(name)
    this.#detach.get(name)?.()
    this.#detach.delete(name)
    this.#endpoints.delete(name)
    this.#changedAll(server)
    await server.connection.close()
  }

  /**
   * How to read what the MCP endpoint serving `name` holds open (`gateway` for `/mcp`, which
   * is not a mounted server itself): given by each mount once its endpoint exists, and read
   * only when metrics are scraped, so serving a request costs nothing for it.
   */
  addEndpoint (name: string, stats: () => EndpointStats): void {
    this.#endpoints.set(name, stats)
  }

  /** Every endpoint's stats reader, by the name of the server it serves. */
  endpoints (): ReadonlyMap<string, () => EndpointStats> { return this.#endpoints }

  /** Hears of every list change of every mounted server, present and future. */
  onListChanged (listener: (server: MountedServer, kind: ListKind) => void): () => void {
    this.#listChanged.add(listener)
    return () => { this.#listChanged.delete(listener) }
  }

  /** Closes every connection; the last step of the gateway's shutdown. */
  async close (): Promise<void> {
    // Nobody is told: the endpoints that would pass the news on are closed already.
    this.#listChanged.clear()
    const names = [...this.#servers.keys()]
    await Promise.allSettled(names.map(async name => { await this.remove(name) }))
  }
}
