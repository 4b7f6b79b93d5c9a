// The events of resumable streams in Redis, for every instance. A stream is three keys,
// `<prefix>stream:{<streamId>}:seq|log|info` (one hash tag, so a Redis Cluster keeps them on
// one node, as a script needs): the last event's number, the events (a sorted set scored by
// number) and what the stream answers. All three expire `ttlMs` after the stream's last
// event or description.
import type { Redis } from 'ioredis'
import type { EventId, JSONRPCMessage, StreamId } from '@modelcontextprotocol/server'
import { followStream, parseEventId, streamChannel, type StreamEventStore, type StreamEventStoreOptions, type StreamInfo } from './event-store.js'
import type { RedisBroker } from './redis-broker.js'

export interface RedisEventStoreOptions extends StreamEventStoreOptions {
  /** Put before every key, so gateways sharing one Redis stay apart. */
  prefix: string
}

/**
 * Stores one event, in one step so that concurrent writers on any instance get consecutive
 * numbers and nothing is stored without being published (or the reverse). Publishing from
 * the script is what orders followers: Redis delivers a channel's messages in the order it
 * ran the scripts. The member is `<n>:<message>` so that two equal messages stay two events;
 * the published text is built by concatenation, not `cjson`, which would turn an empty array
 * of the message into an object. The JSON is the broker's (`RedisBroker.publish`): a
 * `StreamEvent`.
 * KEYS: seq, log, info. ARGV: message JSON, most events kept, ttl in ms, channel.
 */
const STORE_EVENT = `
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, seq .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"seq":' .. seq .. ',"message":' .. ARGV[1] .. '}')
return seq
`

interface EventCommands {
  gatewayStoreEvent: (seqKey: string, logKey: string, infoKey: string, message: string, maxEvents: number, ttlMs: number, channel: string) => Promise<number>
}

/** ioredis's `exec`: one `[error, reply]` per queued command, or null when a WATCH failed. */
type ExecResult = Array<[Error | null, unknown]> | null

/** The replies of a transaction, or its first error. */
function replies (result: ExecResult): unknown[] {
  if (result === null) throw new Error('The Redis transaction was aborted')
  return result.map(([err, reply]) => {
    if (err !== null) throw err
    return reply
  })
}

export class RedisEventStore implements StreamEventStore {
  #client: Redis & EventCommands
  #broker: RedisBroker
  #options: RedisEventStoreOptions

  /**
   * `client` is shared and never closed here; `broker` is the one built on it: its channel
   * names and JSON are what the store's script publishes.
   */
  constructor (client: Redis, broker: RedisBroker, options: RedisEventStoreOptions) {
    // ioredis sends EVALSHA and falls back to EVAL when Redis lost the script (a restart).
    client.defineCommand('gatewayStoreEvent', { lua: STORE_EVENT, numberOfKeys: 3 })
    this.#client = client as Redis & EventCommands
    this.#broker = broker
    this.#options = options
  }

  async storeEvent (streamId: StreamId, message: JSONRPCMessage): Promise<EventId> {
    const keys = this.#keys(streamId)
    const seq = await this.#client.gatewayStoreEvent(keys.seq, keys.log, keys.info, JSON.stringify(message),
      this.#options.maxEventsPerStream, this.#options.ttlMs, this.#broker.channelName(streamChannel(streamId)))
    return `${streamId}:${seq}`
  }

  async getStreamIdForEventId (eventId: EventId): Promise<StreamId | undefined> {
    const parsed = parseEventId(eventId)
    if (parsed === undefined) return undefined
    const keys = this.#keys(parsed.streamId)
    // A stream described but with no event yet is known too: its priming event `:0` resumes.
    return await this.#client.exists(keys.seq, keys.info) > 0 ? parsed.streamId : undefined
  }

  async replayEventsAfter (lastEventId: EventId, { send }: { send: (eventId: EventId, message: JSONRPCMessage) => Promise<void> }): Promise<StreamId> {
    const parsed = parseEventId(lastEventId)
    if (parsed === undefined) throw new Error(`Unknown stream of event '${lastEventId}'`)
    const keys = this.#keys(parsed.streamId)
    // One transaction: the stream's existence, its oldest kept event and the events after
    // the client's are one moment's, not interleaved with a writer's trim.
    const [known, oldest, after] = replies(await this.#client.multi()
      .exists(keys.seq, keys.info)
      .zrange(keys.log, '0', '0', 'WITHSCORES')
      .zrangebyscore(keys.log, `(${parsed.seq}`, '+inf')
      .exec()) as [number, string[], string[]]
    if (known === 0) throw new Error(`Unknown stream of event '${lastEventId}'`)
    const first = oldest.length === 0 ? undefined : Number(oldest[1])
    if (first !== undefined && parsed.seq + 1 < first) throw new Error(`Events after '${lastEventId}' are no longer kept`)
    for (const member of after) {
      const colon = member.indexOf(':')
      await send(`${parsed.streamId}:${member.slice(0, colon)}`, JSON.parse(member.slice(colon + 1)) as JSONRPCMessage)
    }
    return parsed.streamId
  }

  async follow (streamId: StreamId, listener: (eventId: EventId, message: JSONRPCMessage) => void): Promise<() => void> {
    return await followStream(this.#broker, streamId, listener)
  }

  async describe (streamId: StreamId, info: StreamInfo): Promise<void> {
    const keys = this.#keys(streamId)
    const ttl = this.#options.ttlMs
    // The events' expiry moves with the description's, as storing an event moves both.
    replies(await this.#client.multi()
      .set(keys.info, JSON.stringify(info), 'PX', ttl)
      .pexpire(keys.seq, ttl)
      .pexpire(keys.log, ttl)
      .exec())
  }

  async info (streamId: StreamId): Promise<StreamInfo | undefined> {
    const text = await this.#client.get(this.#keys(streamId).info)
    return text === null ? undefined : JSON.parse(text) as StreamInfo
  }

  #keys (streamId: StreamId): { seq: string, log: string, info: string } {
    const stream = `${this.#options.prefix}stream:{${streamId}}`
    return { seq: `${stream}:seq`, log: `${stream}:log`, info: `${stream}:info` }
  }
}
