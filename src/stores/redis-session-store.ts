// 2025-era sessions in Redis, seen by every instance: each record a JSON string under
// `<prefix>session:<id>` expiring with the session, each instance's heartbeat a key under
// `<prefix>instance:<id>` expiring with it. Redis drops what expired; nothing sweeps here.
import type { Redis } from 'ioredis'
import type { SessionRecord, SessionStore } from './session-store.js'

export interface RedisSessionStoreOptions {
  /** Put before every key, so gateways sharing one Redis stay apart. */
  prefix: string
}

/**
 * Replaces a session's record only if it is still the one read (and so still exists),
 * keeping its expiry: 1 done, 0 changed meanwhile, -1 gone (expired or deleted, and not to
 * be brought back). Comparing the whole record, rather than editing it in Lua, keeps the
 * record out of `cjson`, which would turn an empty array of the client's `initialize` into
 * an object.
 */
const REPLACE_SESSION = `
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`

interface SessionCommands {
  gatewayReplaceSession: (key: string, expected: string, replacement: string) => Promise<number>
}

export class RedisSessionStore implements SessionStore {
  #client: Redis & SessionCommands
  #prefix: string

  /** `client` is shared: never closed here. */
  constructor (client: Redis, options: RedisSessionStoreOptions) {
    // Defined on the shared client (again, harmlessly, by each store built on it): ioredis
    // sends EVALSHA and falls back to EVAL when Redis lost the script (a restart).
    client.defineCommand('gatewayReplaceSession', { lua: REPLACE_SESSION, numberOfKeys: 1 })
    this.#client = client as Redis & SessionCommands
    this.#prefix = options.prefix
  }

  async create (record: SessionRecord, ttlMs: number): Promise<void> {
    await this.#client.set(this.#session(record.id), JSON.stringify(record), 'PX', ttlMs)
  }

  async get (id: string): Promise<SessionRecord | undefined> {
    const text = await this.#client.get(this.#session(id))
    return text === null ? undefined : JSON.parse(text) as SessionRecord
  }

  async update (id: string, fields: Partial<Pick<SessionRecord, 'owner' | 'logLevel'>>): Promise<void> {
    const key = this.#session(id)
    // Read, change, write back if unchanged: another instance's update in between (an owner
    // taking the session over while the client sets its log level) is read again, not lost.
    for (;;) {
      const current = await this.#client.get(key)
      if (current === null) return
      const replacement = JSON.stringify({ ...JSON.parse(current) as SessionRecord, ...fields })
      if (await this.#client.gatewayReplaceSession(key, current, replacement) !== 0) return
    }
  }

  async touch (id: string, ttlMs: number): Promise<void> {
    // PEXPIRE does nothing to a key that is gone: touching never brings a session back.
    await this.#client.pexpire(this.#session(id), ttlMs)
  }

  async delete (id: string): Promise<void> {
    await this.#client.del(this.#session(id))
  }

  async beat (instanceId: string, ttlMs: number): Promise<void> {
    await this.#client.set(this.#instance(instanceId), '1', 'PX', ttlMs)
  }

  async alive (instanceId: string): Promise<boolean> {
    return await this.#client.exists(this.#instance(instanceId)) === 1
  }

  /** Nothing of its own to release: the client is the caller's. */
  async close (): Promise<void> {}

  #session (id: string): string { return `${this.#prefix}session:${id}` }
  #instance (id: string): string { return `${this.#prefix}instance:${id}` }
}
