// The messages instances send each other: what must reach the instance that holds a
// session's stream or a call, `list_changed` for every instance's clients. One interface,
// an in-process implementation (the default, and two gateways in one process in tests) and
// a Redis pub/sub one (`redis-broker.ts`).

/** A message between instances: anything JSON can carry. */
export type BrokerMessage = Record<string, unknown>

export interface Broker {
  /**
   * Sends `message` to every subscriber of `channel`, on every instance, this one included.
   * Never throws: a message the transport cannot carry now is lost, and logged.
   */
  publish (channel: string, message: BrokerMessage): void
  /**
   * Calls `listener` for each message published on `channel` from now on. Resolves once the
   * subscription is in place (a message published after that is delivered), with a function
   * that ends it.
   */
  subscribe (channel: string, listener: (message: BrokerMessage) => void): Promise<() => void>
  close (): Promise<void>
}

/**
 * The broker of one process: delivers on a later microtask, as a remote one would (never
 * inside `publish`), so code written against it does not come to rely on synchronous
 * delivery.
 */
export class MemoryBroker implements Broker {
  #channels = new Map<string, Set<(message: BrokerMessage) => void>>()
  #onerror: (err: Error) => void

  /** `onerror` gets what `publish` may not throw: a message JSON cannot carry, a listener that threw. */
  constructor (onerror: (err: Error) => void = () => {}) {
    this.#onerror = onerror
  }

  publish (channel: string, message: BrokerMessage): void {
    const listeners = this.#channels.get(channel)
    if (listeners === undefined) return
    // Copied, as a remote message would be: no subscriber shares an object with the publisher.
    let text: string
    try {
      text = JSON.stringify(message)
    } catch (err) {
      this.#onerror(err as Error)
      return
    }
    for (const listener of [...listeners]) {
      queueMicrotask(() => {
        try {
          listener(JSON.parse(text))
        } catch (err) {
          this.#onerror(err as Error)
        }
      })
    }
  }

  async subscribe (channel: string, listener: (message: BrokerMessage) => void): Promise<() => void> {
    let listeners = this.#channels.get(channel)
    if (listeners === undefined) this.#channels.set(channel, listeners = new Set())
    const own = (message: BrokerMessage): void => { listener(message) }
    listeners.add(own)
    return () => {
      listeners.delete(own)
      if (listeners.size === 0 && this.#channels.get(channel) === listeners) this.#channels.delete(channel)
    }
  }

  /** Subscribed channels, for tests that check nothing is left behind. */
  get channelCount (): number { return this.#channels.size }

  async close (): Promise<void> {
    this.#channels.clear()
  }
}
