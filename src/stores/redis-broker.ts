// The broker of instances that share a Redis: messages go through Redis pub/sub, as JSON, on
// `<prefix><channel>`. The event store's script publishes on the same channels in the same
// format (`channelName`), so following a stream is an ordinary subscription.
import type { Redis } from 'ioredis'
import type { Broker, BrokerMessage } from './broker.js'

export interface RedisBrokerOptions {
  /** Put before every channel name, so gateways sharing one Redis for other things stay apart. */
  prefix: string
  /** Where what cannot be thrown goes: a lost publish, a listener that threw, the subscriber's connection errors. */
  onerror: (err: Error) => void
}

interface Channel {
  listeners: Set<(message: BrokerMessage) => void>
  /** Settles with the SUBSCRIBE's acknowledgement; every subscriber of the channel waits for it. */
  subscribed: Promise<unknown>
}

export class RedisBroker implements Broker {
  #client: Redis
  #subscriber: Redis
  #prefix: string
  #onerror: (err: Error) => void
  /** By full (prefixed) channel name. */
  #channels = new Map<string, Channel>()
  /** Channels an UNSUBSCRIBE is on its way for, so a burst of late messages sends one. */
  #leaving = new Set<string>()
  #closed = false

  /** `client` is the shared command connection: used to publish, never closed here. */
  constructor (client: Redis, options: RedisBrokerOptions) {
    this.#client = client
    this.#prefix = options.prefix
    this.#onerror = options.onerror
    // A connection in subscriber mode can run no other command, so the broker has its own.
    // `lazyConnect: false` because a lazy one would only connect on its first SUBSCRIBE,
    // which, with the offline queue off (as the redis plugin sets it), would be refused.
    // The options are the client's otherwise: `autoResubscribe` (ioredis's default) renews
    // every subscription after a reconnection, Redis having forgotten them.
    this.#subscriber = client.duplicate({ lazyConnect: false })
    this.#subscriber.on('error', (err: Error) => { this.#onerror(err) })
    this.#subscriber.on('message', (channel: string, text: string) => { this.#dispatch(channel, text) })
    // ioredis renews the subscriptions after a reconnection with a SUBSCRIBE whose promise
    // nobody awaits (redis/event_handler.js, `autoResubscribe`): when the connection drops
    // again before it is sent (Redis flapping), it rejects unhandled and Node ends the
    // process. Every SUBSCRIBE of this connection gets a handler here; a caller awaiting its
    // own still sees the rejection, and a lost renewal is retried at the next reconnection.
    const subscribe = this.#subscriber.subscribe.bind(this.#subscriber) as (...args: unknown[]) => Promise<unknown>
    this.#subscriber.subscribe = ((...args: unknown[]) => {
      const subscribed = subscribe(...args)
      subscribed.catch((err: Error) => { this.#onerror(err) })
      return subscribed
    }) as Redis['subscribe']
  }

  /** The Redis channel a broker channel is carried on. */
  channelName (channel: string): string {
    return this.#prefix + channel
  }

  publish (channel: string, message: BrokerMessage): void {
    let text: string
    try {
      text = JSON.stringify(message)
    } catch (err) {
      this.#onerror(err as Error)
      return
    }
    this.#client.publish(this.channelName(channel), text).catch(this.#onerror)
  }

  async subscribe (channel: string, listener: (message: BrokerMessage) => void): Promise<() => void> {
    if (this.#closed) throw new Error('The broker is closed')
    const name = this.channelName(channel)
    let entry = this.#channels.get(name)
    if (entry === undefined) {
      const created: Channel = { listeners: new Set(), subscribed: this.#subscribe(name) }
      this.#channels.set(name, entry = created)
      // A refused SUBSCRIBE (Redis down) leaves nothing behind: every caller waiting on it
      // rejects, and the next subscribe to the channel tries again.
      created.subscribed.catch(() => {
        if (this.#channels.get(name) === created) this.#channels.delete(name)
      })
    }
    // A distinct function per call, so the same listener subscribed twice is two subscriptions.
    const own = (message: BrokerMessage): void => { listener(message) }
    entry.listeners.add(own)
    await entry.subscribed
    const subscribed = entry
    return () => {
      if (!subscribed.listeners.delete(own) || subscribed.listeners.size > 0) return
      if (this.#channels.get(name) !== subscribed) return
      this.#channels.delete(name)
      this.#unsubscribe(name)
    }
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#channels.clear()
    const subscriber = this.#subscriber
    if (subscriber.status === 'ready') {
      await subscriber.quit().catch(() => {})
    }
    // Stops a connection that is down from reconnecting; a no-op after `quit`.
    subscriber.disconnect()
  }

  async #subscribe (name: string): Promise<unknown> {
    await this.#settled()
    return await this.#subscriber.subscribe(name)
  }

  #unsubscribe (name: string): void {
    // Not awaited: the listener is gone already. If Redis is down the UNSUBSCRIBE is refused
    // and the reconnection renews the subscription; its first message then retries it.
    if (this.#closed) return
    this.#leaving.add(name)
    this.#subscriber.unsubscribe(name).catch(this.#onerror).finally(() => { this.#leaving.delete(name) })
  }

  /**
   * Waits out a connection attempt in progress (the first one, at boot, or one of the
   * retries), which ends in `ready` or `close` within ioredis's `connectTimeout`. A
   * connection that is down otherwise refuses the command at once.
   */
  async #settled (): Promise<void> {
    const subscriber = this.#subscriber
    if (subscriber.status !== 'connecting' && subscriber.status !== 'connect') return
    await new Promise<void>(resolve => {
      const done = (): void => {
        subscriber.off('ready', done)
        subscriber.off('close', done)
        subscriber.off('end', done)
        resolve()
      }
      subscriber.on('ready', done)
      subscriber.on('close', done)
      subscriber.on('end', done)
    })
  }

  #dispatch (name: string, text: string): void {
    const entry = this.#channels.get(name)
    if (entry === undefined) {
      // Nobody here listens: a message sent before our UNSUBSCRIBE took effect (one is on its
      // way), or an UNSUBSCRIBE refused while Redis was down.
      if (!this.#leaving.has(name)) this.#unsubscribe(name)
      return
    }
    for (const listener of [...entry.listeners]) {
      try {
        // Parsed per listener, as the memory broker does: no two share an object.
        listener(JSON.parse(text) as BrokerMessage)
      } catch (err) {
        this.#onerror(err as Error)
      }
    }
  }
}
