// Where a 2025-era session lives when more than one instance serves it: enough to serve any
// request of the session on any instance (re-creating its server from the client's own
// `initialize`), and to know whether the instance that opened it is still alive. One
// interface, a memory and a Redis implementation (`redis-session-store.ts`); a store's
// contract is one test suite run against both (test/src/stores/).

/** One 2025-era session, as every instance sees it. */
export interface SessionRecord {
  id: string
  /** The mounted server (its name) the session belongs to. */
  server: string
  /** The instance that opened it (`Cluster.instanceId`). */
  owner: string
  /** Who opened it (`callerKey`): another caller presenting the id does not find it. */
  caller: string
  /** The params of the client's `initialize` request, as it sent them. */
  initialize: Record<string, unknown>
  /** The level the client set with `logging/setLevel`, if it did. */
  logLevel?: string
  /**
   * The session holds state only its owner has (an `isolation: "session"` upstream's own
   * child): another instance cannot re-create it.
   */
  pinned: boolean
}

export interface SessionStore {
  /** Stores a new session; it expires after `ttlMs` without a `touch`. */
  create (record: SessionRecord, ttlMs: number): Promise<void>
  get (id: string): Promise<SessionRecord | undefined>
  /** Changes some fields of a session that exists (nothing when it does not); its expiry is kept. */
  update (id: string, fields: Partial<Pick<SessionRecord, 'owner' | 'logLevel'>>): Promise<void>
  /** The session was used: it expires `ttlMs` from now. */
  touch (id: string, ttlMs: number): Promise<void>
  delete (id: string): Promise<void>
  /** This instance is alive for `ttlMs` more. */
  beat (instanceId: string, ttlMs: number): Promise<void>
  /** Whether an instance beat within its last `ttlMs`. */
  alive (instanceId: string): Promise<boolean>
  close (): Promise<void>
}

/** Expiring entries of one process; shared by two gateways in one process, it stands in for Redis in tests. */
export class MemorySessionStore implements SessionStore {
  #sessions = new Map<string, { record: SessionRecord, expires: number }>()
  #instances = new Map<string, number>()

  async create (record: SessionRecord, ttlMs: number): Promise<void> {
    this.#sessions.set(record.id, { record: structuredClone(record), expires: Date.now() + ttlMs })
  }

  async get (id: string): Promise<SessionRecord | undefined> {
    const entry = this.#live(id)
    return entry === undefined ? undefined : structuredClone(entry.record)
  }

  async update (id: string, fields: Partial<Pick<SessionRecord, 'owner' | 'logLevel'>>): Promise<void> {
    const entry = this.#live(id)
    if (entry !== undefined) entry.record = { ...entry.record, ...fields }
  }

  async touch (id: string, ttlMs: number): Promise<void> {
    const entry = this.#live(id)
    if (entry !== undefined) entry.expires = Date.now() + ttlMs
  }

  async delete (id: string): Promise<void> {
    this.#sessions.delete(id)
  }

  async beat (instanceId: string, ttlMs: number): Promise<void> {
    this.#instances.set(instanceId, Date.now() + ttlMs)
  }

  async alive (instanceId: string): Promise<boolean> {
    return (this.#instances.get(instanceId) ?? 0) > Date.now()
  }

  async close (): Promise<void> {
    this.#sessions.clear()
    this.#instances.clear()
  }

  #live (id: string): { record: SessionRecord, expires: number } | undefined {
    const entry = this.#sessions.get(id)
    if (entry === undefined) return undefined
    if (entry.expires > Date.now()) return entry
    this.#sessions.delete(id)
    return undefined
  }
}
