import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { MemoryBroker, type Broker, type BrokerMessage } from '../../../src/stores/broker.js'
import { RedisBroker } from '../../../src/stores/redis-broker.js'
import { connectRedis as connect, eventually, startRedis } from '../../redis.js'

// The broker's contract, one suite run against the memory broker (two gateways in one
// process share it) and the Redis one (two instances, each with its own client): a message
// reaches every subscriber of its channel on every instance, the publisher's own included,
// in order, and nobody else; then what only Redis can do wrong: be down, and come back.

const PREFIX = 'gw-test:'

/** What a listener got, and a way to wait until it got `count`. */
function inbox (): { messages: BrokerMessage[], listener: (message: BrokerMessage) => void, until: (count: number) => Promise<void> } {
  const messages: BrokerMessage[] = []
  const waiting: Array<{ count: number, resolve: () => void }> = []
  return {
    messages,
    listener (message) {
      messages.push(message)
      for (const wait of waiting.filter(wait => messages.length >= wait.count)) {
        waiting.splice(waiting.indexOf(wait), 1)
        wait.resolve()
      }
    },
    async until (count) {
      if (messages.length < count) await new Promise<void>(resolve => { waiting.push({ count, resolve }) })
    }
  }
}

interface Instances {
  /** Two instances' brokers. */
  a: Broker
  b: Broker
  /** How many channels someone is subscribed to. */
  channels: () => Promise<number>
}

function brokerContract (name: string, instances: (t: Test) => Promise<Instances>): void {
  t.test(`${name}: a message reaches every subscriber of its channel on every instance, the publisher's included`, async t => {
    const { a, b } = await instances(t)
    const onA = inbox()
    const onB = inbox()
    await a.subscribe('news', onA.listener)
    await b.subscribe('news', onB.listener)
    const message = { text: 'hello', nested: { list: [], n: 1.5, none: null } }
    a.publish('news', message)
    await onA.until(1)
    await onB.until(1)
    t.same(onA.messages, [message], 'the publishing instance gets it')
    t.same(onB.messages, [message], 'the other instance gets it, as JSON carries it')
    t.not(onB.messages[0], message, 'as a copy')
  })

  t.test(`${name}: one publisher's messages arrive in order`, async t => {
    const { a, b } = await instances(t)
    const got = inbox()
    await b.subscribe('ordered', got.listener)
    for (let n = 0; n < 100; n++) a.publish('ordered', { n })
    await got.until(100)
    t.same(got.messages.map(message => message.n), Array.from({ length: 100 }, (_, n) => n))
  })

  t.test(`${name}: several listeners of a channel on one instance; unsubscribing one leaves the others`, async t => {
    const { a, b, channels } = await instances(t)
    const first = inbox()
    const second = inbox()
    const stopFirst = await b.subscribe('shared', first.listener)
    const stopSecond = await b.subscribe('shared', second.listener)
    a.publish('shared', { n: 1 })
    await first.until(1)
    await second.until(1)
    stopFirst()
    stopFirst()
    a.publish('shared', { n: 2 })
    // Delivered after message 2 to whoever still listens: had the first listener been kept,
    // it would have had message 2 by then.
    a.publish('shared', { n: 3 })
    await second.until(3)
    t.same(first.messages, [{ n: 1 }], 'the listener that left gets nothing more')
    t.same(second.messages, [{ n: 1 }, { n: 2 }, { n: 3 }], 'the other one still gets everything')
    t.equal(await channels(), 1, 'the channel stays subscribed while someone listens')
    stopSecond()
    await eventually(async () => await channels() === 0, 'the last listener leaving ends the subscription')
    const again = inbox()
    await b.subscribe('shared', again.listener)
    a.publish('shared', { n: 4 })
    await again.until(1)
    t.same(again.messages, [{ n: 4 }], 'and subscribing again works')
  })

  t.test(`${name}: many channels, each message only on its own`, async t => {
    const { a, b } = await instances(t)
    const boxes = Array.from({ length: 20 }, () => inbox())
    await Promise.all(boxes.map(async (box, i) => await b.subscribe(`channel-${i}`, box.listener)))
    for (let i = 0; i < boxes.length; i++) {
      a.publish(`channel-${i}`, { channel: i, part: 1 })
      a.publish(`channel-${i}`, { channel: i, part: 2 })
    }
    a.publish('nobody-listens', { channel: -1 })
    await Promise.all(boxes.map(async box => { await box.until(2) }))
    for (const [i, box] of boxes.entries()) t.same(box.messages, [{ channel: i, part: 1 }, { channel: i, part: 2 }], `channel ${i}`)
  })
}

brokerContract('memory', async t => {
  const broker = new MemoryBroker()
  t.teardown(() => broker.close())
  return { a: broker, b: broker, channels: async () => broker.channelCount }
})

/** Two instances over one Redis: each its own client, as two processes would have. */
async function redisInstances (t: Test, url: string, errors: Error[] = []): Promise<Instances & { clients: Redis[] }> {
  const clients = [await connect(t, url), await connect(t, url)]
  const [a, b] = clients.map(client => {
    const broker = new RedisBroker(client, { prefix: PREFIX, onerror: err => { errors.push(err) } })
    t.teardown(() => broker.close())
    return broker
  })
  const channels = async (): Promise<number> => (await clients[0].pubsub('CHANNELS', `${PREFIX}*`) as string[]).length
  return { a, b, channels, clients }
}

brokerContract('redis', async t => {
  const redis = await startRedis(t)
  return await redisInstances(t, redis.url)
})

t.test('redis: a listener that throws is reported and does not keep the message from the others', async t => {
  const redis = await startRedis(t)
  const errors: Error[] = []
  const { a, b } = await redisInstances(t, redis.url, errors)
  const got = inbox()
  await b.subscribe('fragile', () => { throw new Error('listener failed') })
  await b.subscribe('fragile', got.listener)
  a.publish('fragile', { n: 1 })
  a.publish('fragile', { n: 2 })
  await got.until(2)
  t.same(got.messages, [{ n: 1 }, { n: 2 }])
  t.same(errors.map(err => err.message), ['listener failed', 'listener failed'])
})

t.test('redis: a subscription comes back after Redis restarts', async t => {
  const redis = await startRedis(t)
  const { a, b } = await redisInstances(t, redis.url)
  const got = inbox()
  await b.subscribe('lasting', got.listener)
  a.publish('lasting', { n: 0 })
  await got.until(1)

  await redis.stop()
  await redis.start()
  // The new Redis knows no subscription: a message arriving proves the broker's connection
  // subscribed again by itself. Publishing until one does, as neither reconnection is timed.
  let n = 0
  await eventually(() => {
    a.publish('lasting', { n: ++n })
    return got.messages.length > 1
  }, 'a message published after the restart arrives')
  t.ok(got.messages.slice(1).every(message => typeof message.n === 'number' && message.n > 0), 'messages published after the restart')
})

t.test('redis: while Redis is down, subscribing rejects and publishing reports the loss without throwing', async t => {
  const redis = await startRedis(t)
  const errors: Error[] = []
  const { a, b, clients } = await redisInstances(t, redis.url, errors)
  await redis.stop()
  await eventually(() => clients.every(client => client.status !== 'ready'), 'the clients see Redis gone')
  await t.rejects(b.subscribe('nowhere', () => {}), 'subscribing rejects')
  t.doesNotThrow(() => { a.publish('nowhere', { n: 1 }) }, 'publishing does not throw')
  await eventually(() => errors.length > 0, 'the lost message is reported')
  t.match(errors[0], Error)
  t.doesNotThrow(() => { a.publish('nowhere', { self: BigInt(1) }) }, 'nor does a message JSON cannot carry')

  await redis.start()
  await eventually(() => clients.every(client => client.status === 'ready'), 'the clients reconnect')
  const got = inbox()
  await eventually(async () => {
    try {
      await b.subscribe('somewhere', got.listener)
      return true
    } catch {
      // The broker's own connection may come back after the client's.
      return false
    }
  }, 'subscribing works again')
  a.publish('somewhere', { n: 2 })
  await got.until(1)
  t.same(got.messages, [{ n: 2 }], 'a refused subscription left nothing behind')
})

t.test('redis: closing the broker closes its own connection, not the shared client', async t => {
  const redis = await startRedis(t)
  const { a, clients, channels } = await redisInstances(t, redis.url)
  await a.subscribe('one', () => {})
  t.equal(await channels(), 1)
  await a.close()
  t.equal(await clients[0].ping(), 'PONG', 'the shared client still works')
  await eventually(async () => await channels() === 0, 'the subscriber connection is gone')
  await t.rejects(a.subscribe('two', () => {}), 'a closed broker takes no subscription')
})

t.test('redis: two gateways under different prefixes do not hear each other', async t => {
  const redis = await startRedis(t)
  const [one, two] = [await connect(t, redis.url), await connect(t, redis.url)]
  const first = new RedisBroker(one, { prefix: 'first:', onerror: () => {} })
  const second = new RedisBroker(two, { prefix: 'second:', onerror: () => {} })
  t.teardown(() => first.close())
  t.teardown(() => second.close())
  const onFirst = inbox()
  const onSecond = inbox()
  await first.subscribe('news', onFirst.listener)
  await second.subscribe('news', onSecond.listener)
  second.publish('news', { to: 'second' })
  first.publish('news', { to: 'first' })
  await onFirst.until(1)
  await onSecond.until(1)
  t.same(onFirst.messages, [{ to: 'first' }])
  t.same(onSecond.messages, [{ to: 'second' }])
})
