// What gateway instances share when several serve the same clients (`gateway.redis`): the
// 2025-era sessions, the events of resumable streams, a broker for what one instance must
// tell another, and the key that seals the `requestState` the gateway mints. Without it
// (the default) every instance keeps all of this in memory, as a single gateway does.
import { randomUUID } from 'node:crypto'
import type { ServerEvent, ServerEventBus } from '@modelcontextprotocol/server'
import { MemoryBroker, type Broker } from './broker.js'
import { MemoryEventStore, type StreamEventStore, type StreamEventStoreOptions } from './event-store.js'
import { MemorySessionStore, type SessionStore } from './session-store.js'

export interface Cluster {
  /** This process: the owner of the sessions it opens and the calls it runs. Random per process. */
  readonly instanceId: string
  readonly sessions: SessionStore
  readonly events: StreamEventStore
  readonly broker: Broker
  /** The `subscriptions/listen` event bus of one mounted server, shared by every instance. */
  busFor (server: string): ServerEventBus
  /** Seals the `requestState` the gateway mints (`createRequestStateCodec`); the same on every instance. */
  readonly requestStateKey: string
  /** Whether the shared state is reachable now; false while Redis is down. */
  readonly available: boolean
  close (): Promise<void>
}

/**
 * The SDK's `ServerEventBus` over a broker: an event reaches this instance's listeners at
 * once (the SDK wants `publish` to deliver synchronously to them) and every other
 * instance's through the broker; an instance skips its own events when they come back.
 */
export class BrokerEventBus implements ServerEventBus {
  #broker: Broker
  #channel: string
  #instanceId: string
  #listeners = new Set<(event: ServerEvent) => void>()
  #unsubscribe: Promise<() => void> | undefined
  #onerror: (err: Error) => void

  constructor (broker: Broker, channel: string, instanceId: string, onerror: (err: Error) => void) {
    this.#broker = broker
    this.#channel = channel
    this.#instanceId = instanceId
    this.#onerror = onerror
  }

  publish (event: ServerEvent): void {
    this.#deliver(event)
    this.#broker.publish(this.#channel, { from: this.#instanceId, event })
  }

  subscribe (listener: (event: ServerEvent) => void): () => void {
    this.#listeners.add(listener)
    // One broker subscription per bus, taken with the first listener and kept: listen
    // streams come and go, and a subscription per stream would cost a round trip each.
    this.#unsubscribe ??= this.#broker.subscribe(this.#channel, message => {
      if (message.from !== this.#instanceId) this.#deliver(message.event as ServerEvent)
    })
    return () => { this.#listeners.delete(listener) }
  }

  async close (): Promise<void> {
    this.#listeners.clear()
    const unsubscribe = this.#unsubscribe
    this.#unsubscribe = undefined
    if (unsubscribe !== undefined) (await unsubscribe)()
  }

  #deliver (event: ServerEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event)
      } catch (err) {
        this.#onerror(err as Error)
      }
    }
  }
}

/** How often an instance says it is alive, and how long one that stopped saying so counts as alive. */
export const HEARTBEAT_MS = 2000
export const HEARTBEAT_TTL_MS = 3 * HEARTBEAT_MS

/** What a cluster is made of, whichever engine holds it. */
export interface ClusterParts {
  sessions: SessionStore
  events: StreamEventStore
  broker: Broker
  requestStateKey: string
  /** Whether the engine is reachable now. */
  available: () => boolean
  /** Releases the engine's connections (after the parts are closed). */
  close?: () => Promise<void>
  onerror?: (err: Error) => void
  instanceId?: string
}

/** A cluster from its parts: the buses per server and the instance's id are made here. */
export function makeCluster (parts: ClusterParts): Cluster {
  const instanceId = parts.instanceId ?? randomUUID()
  const buses = new Map<string, BrokerEventBus>()
  const onerror = parts.onerror ?? (() => {})
  // Other instances read it to tell a stream or session whose owner stopped (SIGKILL, crash)
  // from one whose owner still works on it.
  const beat = (): void => { parts.sessions.beat(instanceId, HEARTBEAT_TTL_MS).catch(onerror) }
  beat()
  const heartbeat = setInterval(beat, HEARTBEAT_MS).unref()
  return {
    instanceId,
    sessions: parts.sessions,
    events: parts.events,
    broker: parts.broker,
    requestStateKey: parts.requestStateKey,
    get available () { return parts.available() },
    busFor (server) {
      let bus = buses.get(server)
      if (bus === undefined) buses.set(server, bus = new BrokerEventBus(parts.broker, `bus:${server}`, instanceId, onerror))
      return bus
    },
    async close () {
      clearInterval(heartbeat)
      await Promise.allSettled([...buses.values()].map(async bus => { await bus.close() }))
      buses.clear()
      await parts.close?.()
    }
  }
}

export interface MemoryClusterOptions extends Partial<StreamEventStoreOptions> {
  /** Shared with another memory cluster, two gateways in one process act as two instances (tests). */
  shared?: { sessions: MemorySessionStore, events: MemoryEventStore, broker: MemoryBroker, requestStateKey: string }
}

/** The parts of a memory cluster, to share between two gateways in one process. */
export function memoryClusterParts (options: Partial<StreamEventStoreOptions> = {}): NonNullable<MemoryClusterOptions['shared']> {
  const broker = new MemoryBroker()
  return {
    broker,
    sessions: new MemorySessionStore(),
    events: new MemoryEventStore(broker, { maxEventsPerStream: options.maxEventsPerStream ?? 1000, ttlMs: options.ttlMs ?? 600_000 }),
    requestStateKey: randomUUID() + randomUUID()
  }
}

/**
 * A cluster held in this process. Each gateway gets its own instance id; gateways given the
 * same `shared` parts see each other's sessions and messages, as instances sharing Redis do.
 */
export function memoryCluster (options: MemoryClusterOptions = {}): Cluster {
  const shared = options.shared ?? memoryClusterParts(options)
  return makeCluster({ ...shared, available: () => true })
}
