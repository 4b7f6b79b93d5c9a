// The events of resumable SSE streams, kept so that a client whose stream broke can resume
// it with `Last-Event-ID` on any instance and miss nothing. The SDK's `EventStore` shape
// (`storeEvent`, `getStreamIdForEventId`, `replayEventsAfter`), plus what serving a stream
// from another instance needs: following a stream's new events as they are stored, and
// what the stream answers (its session, the instance running its requests, their ids).
// A memory and a Redis implementation (`redis-event-store.ts`), one contract test suite.
import type { EventId, EventStore, JSONRPCMessage, JSONRPCRequest, RequestId, StreamId } from '@modelcontextprotocol/server'
import type { Broker, BrokerMessage } from './broker.js'

/** What a stream carries the answers of. */
export interface StreamInfo {
  /** The 2025-era session the stream belongs to. */
  session: string
  /** The instance running the stream's requests. */
  owner: string
  /** The ids of the requests whose answers end the stream. */
  requests: RequestId[]
  /**
   * The stream's requests as the client sent them, so that an instance resuming the stream
   * after its owner died can run an idempotent tool call again. Only those small enough to
   * store (`MAX_STORED_REQUEST_BYTES` of JSON each, in `shared-sessions.ts`); absent or
   * partial otherwise, and a request not here is never re-run.
   */
  messages?: JSONRPCRequest[]
}

export interface StreamEventStoreOptions {
  /** Most events kept per stream; older ones are dropped (a resume from before them fails). */
  maxEventsPerStream: number
  /** How long a stream's events are kept after its last event, in ms. */
  ttlMs: number
}

export interface StreamEventStore extends EventStore {
  /**
   * Stores `message` as the stream's next event and hands it to the stream's followers, in
   * order, on every instance. Event ids are `<streamId>:<n>`, n from 1 up with no gap; a
   * stream's priming event is `<streamId>:0` and is not stored.
   */
  storeEvent (streamId: StreamId, message: JSONRPCMessage): Promise<EventId>
  getStreamIdForEventId (eventId: EventId): Promise<StreamId | undefined>
  /**
   * Sends every stored event of the stream after `lastEventId`, in order, and resolves with
   * the stream's id. Rejects when the stream is unknown (never stored, expired) or the event
   * is no longer kept.
   */
  replayEventsAfter (lastEventId: EventId, { send }: { send: (eventId: EventId, message: JSONRPCMessage) => Promise<void> }): Promise<StreamId>
  /**
   * Calls `listener` with each event stored on the stream from now on, on whichever
   * instance. Resolves once following (an event stored after that is delivered) with a
   * function that stops it. Subscribe first, then replay: an event may come both ways, and
   * its number tells.
   */
  follow (streamId: StreamId, listener: (eventId: EventId, message: JSONRPCMessage) => void): Promise<() => void>
  /** Records what the stream answers; kept as long as its events. */
  describe (streamId: StreamId, info: StreamInfo): Promise<void>
  info (streamId: StreamId): Promise<StreamInfo | undefined>
}

/** The stream id of an event id (`<streamId>:<n>`), and its number; undefined when malformed. */
export function parseEventId (eventId: string): { streamId: string, seq: number } | undefined {
  const colon = eventId.lastIndexOf(':')
  if (colon <= 0) return undefined
  const seq = Number(eventId.slice(colon + 1))
  if (!Number.isSafeInteger(seq) || seq < 0) return undefined
  return { streamId: eventId.slice(0, colon), seq }
}

/** The broker channel a stream's new events are published on; the Redis store publishes on it from its script. */
export const streamChannel = (streamId: StreamId): string => `events:${streamId}`

/** What travels on a stream's channel: the event's number and its message. */
export interface StreamEvent extends BrokerMessage { seq: number, message: JSONRPCMessage }

/** A stream's new events as its channel carries them (both stores publish there): `follow` of either. */
export async function followStream (broker: Broker, streamId: StreamId, listener: (eventId: EventId, message: JSONRPCMessage) => void): Promise<() => void> {
  return await broker.subscribe(streamChannel(streamId), event => {
    const { seq, message } = event as StreamEvent
    listener(`${streamId}:${seq}`, message)
  })
}

interface MemoryStream {
  events: Array<{ seq: number, message: JSONRPCMessage }>
  next: number
  info: StreamInfo | undefined
  expires: number
}

/** Streams' events in this process, followed through `broker` (a `MemoryBroker`, or a shared one in tests). */
export class MemoryEventStore implements StreamEventStore {
  #broker: Broker
  #options: StreamEventStoreOptions
  #streams = new Map<StreamId, MemoryStream>()
  #sweeper: NodeJS.Timeout

  constructor (broker: Broker, options: StreamEventStoreOptions) {
    this.#broker = broker
    this.#options = options
    this.#sweeper = setInterval(() => { this.#sweep() }, Math.min(options.ttlMs, 60_000))
    this.#sweeper.unref()
  }

  async storeEvent (streamId: StreamId, message: JSONRPCMessage): Promise<EventId> {
    const stream = this.#stream(streamId)
    const seq = stream.next++
    stream.events.push({ seq, message })
    if (stream.events.length > this.#options.maxEventsPerStream) stream.events.shift()
    stream.expires = Date.now() + this.#options.ttlMs
    this.#broker.publish(streamChannel(streamId), { seq, message })
    return `${streamId}:${seq}`
  }

  async getStreamIdForEventId (eventId: EventId): Promise<StreamId | undefined> {
    const parsed = parseEventId(eventId)
    return parsed !== undefined && this.#live(parsed.streamId) !== undefined ? parsed.streamId : undefined
  }

  async replayEventsAfter (lastEventId: EventId, { send }: { send: (eventId: EventId, message: JSONRPCMessage) => Promise<void> }): Promise<StreamId> {
    const parsed = parseEventId(lastEventId)
    const stream = parsed === undefined ? undefined : this.#live(parsed.streamId)
    if (parsed === undefined || stream === undefined) throw new Error(`Unknown stream of event '${lastEventId}'`)
    const first = stream.events[0]?.seq ?? stream.next
    if (parsed.seq + 1 < first) throw new Error(`Events after '${lastEventId}' are no longer kept`)
    for (const event of stream.events.filter(event => event.seq > parsed.seq)) await send(`${parsed.streamId}:${event.seq}`, event.message)
    return parsed.streamId
  }

  async follow (streamId: StreamId, listener: (eventId: EventId, message: JSONRPCMessage) => void): Promise<() => void> {
    return await followStream(this.#broker, streamId, listener)
  }

  async describe (streamId: StreamId, info: StreamInfo): Promise<void> {
    const stream = this.#stream(streamId)
    stream.info = structuredClone(info)
    stream.expires = Date.now() + this.#options.ttlMs
  }

  async info (streamId: StreamId): Promise<StreamInfo | undefined> {
    const info = this.#live(streamId)?.info
    return info === undefined ? undefined : structuredClone(info)
  }

  close (): void {
    clearInterval(this.#sweeper)
    this.#streams.clear()
  }

  #stream (streamId: StreamId): MemoryStream {
    let stream = this.#live(streamId)
    if (stream === undefined) {
      stream = { events: [], next: 1, info: undefined, expires: Date.now() + this.#options.ttlMs }
      this.#streams.set(streamId, stream)
    }
    return stream
  }

  #live (streamId: StreamId): MemoryStream | undefined {
    const stream = this.#streams.get(streamId)
    if (stream === undefined || stream.expires > Date.now()) return stream
    this.#streams.delete(streamId)
    return undefined
  }

  #sweep (): void {
    const now = Date.now()
    for (const [id, stream] of this.#streams) if (stream.expires <= now) this.#streams.delete(id)
  }
}
