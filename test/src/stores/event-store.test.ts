import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import type { EventId, JSONRPCMessage } from '@modelcontextprotocol/server'
import { MemoryBroker } from '../../../src/stores/broker.js'
import { MemoryEventStore, parseEventId, type StreamEventStore, type StreamEventStoreOptions } from '../../../src/stores/event-store.js'
import { RedisBroker } from '../../../src/stores/redis-broker.js'
import { RedisEventStore } from '../../../src/stores/redis-event-store.js'
import { connectRedis as connect, eventually, startRedis } from '../../redis.js'

// The event store's contract, one suite run against the memory store and the Redis one (two
// instances, each with its own client and broker): events of a stream are numbered from 1
// with no gap whoever stores them, replay after an id in order, reach followers on every
// instance in order, and are kept a bounded number and a bounded time.

const PREFIX = 'gw-test:'

const note = (n: number, extra: Record<string, unknown> = {}): JSONRPCMessage =>
  ({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: { n, ...extra } } })

type Event = [EventId, JSONRPCMessage]

/** Every event replayed after `lastEventId`. */
async function replay (store: StreamEventStore, lastEventId: EventId): Promise<{ streamId: string, events: Event[] }> {
  const events: Event[] = []
  const streamId = await store.replayEventsAfter(lastEventId, { send: async (id, message) => { events.push([id, message]) } })
  return { streamId, events }
}

/** What a follower got, and a way to wait until it got `count`. */
function follower (): { events: Event[], listener: (id: EventId, message: JSONRPCMessage) => void, until: (count: number) => Promise<void> } {
  const events: Event[] = []
  const waiting: Array<{ count: number, resolve: () => void }> = []
  return {
    events,
    listener (id, message) {
      events.push([id, message])
      for (const wait of waiting.filter(wait => events.length >= wait.count)) {
        waiting.splice(waiting.indexOf(wait), 1)
        wait.resolve()
      }
    },
    async until (count) {
      if (events.length < count) await new Promise<void>(resolve => { waiting.push({ count, resolve }) })
    }
  }
}

type Instances = (t: Test, options?: Partial<StreamEventStoreOptions>) => Promise<{ a: StreamEventStore, b: StreamEventStore }>

function eventContract (name: string, instances: Instances): void {
  t.test(`${name}: ids run from 1 with no gap or duplicate under 200 concurrent writers on two instances`, async t => {
    const { a, b } = await instances(t)
    const ids = await Promise.all(Array.from({ length: 200 }, async (_, n) => await (n % 2 === 0 ? a : b).storeEvent('busy', note(n))))
    t.same(ids.map(id => parseEventId(id)?.streamId), ids.map(() => 'busy'), 'every id names the stream')
    t.same(ids.map(id => parseEventId(id)?.seq).sort((x, y) => (x ?? 0) - (y ?? 0)), Array.from({ length: 200 }, (_, n) => n + 1))
    const { events } = await replay(b, 'busy:0')
    t.same(events.map(([id]) => id), Array.from({ length: 200 }, (_, n) => `busy:${n + 1}`), 'replayed in number order')
    const stored = new Map(events.map(([id, message]) => [id, message]))
    t.ok(ids.every((id, n) => JSON.stringify(stored.get(id)) === JSON.stringify(note(n))), 'each id holds the message stored under it')
    t.equal(await a.storeEvent('other', note(0)), 'other:1', 'each stream counts on its own')
  })

  t.test(`${name}: replay sends the events after an id, in order, and resolves with the stream`, async t => {
    const { a, b } = await instances(t)
    for (let n = 1; n <= 5; n++) await a.storeEvent('s', note(n))
    const after = await replay(b, 's:2')
    t.equal(after.streamId, 's')
    t.same(after.events, [['s:3', note(3)], ['s:4', note(4)], ['s:5', note(5)]])
    t.same((await replay(b, 's:0')).events.map(([id]) => id), ['s:1', 's:2', 's:3', 's:4', 's:5'], 'after the priming event: all')
    t.same((await replay(b, 's:5')).events, [], 'after the last: none')
    t.equal(await b.getStreamIdForEventId('s:3'), 's')
  })

  t.test(`${name}: equal messages stay distinct events; messages come back as stored`, async t => {
    const { a, b } = await instances(t)
    const odd: JSONRPCMessage = { jsonrpc: '2.0', id: 'x:1', result: { content: [], text: 'colons: a:b:c, quotes "\'", unicode ✓ \u2028', empty: {}, n: 0.1 } }
    await a.storeEvent('same', note(1))
    await a.storeEvent('same', note(1))
    await b.storeEvent('same', odd)
    t.same((await replay(b, 'same:0')).events, [['same:1', note(1)], ['same:2', note(1)], ['same:3', odd]])
  })

  t.test(`${name}: replaying a stream never stored, or a malformed id, rejects`, async t => {
    const { a, b } = await instances(t)
    await a.storeEvent('known', note(1))
    await t.rejects(replay(b, 'unknown:0'), 'unknown stream')
    await t.rejects(replay(b, 'no-number'), 'malformed id')
    t.equal(await b.getStreamIdForEventId('unknown:1'), undefined)
    t.equal(await b.getStreamIdForEventId('malformed'), undefined)
  })

  t.test(`${name}: history is bounded; a replay from before it rejects`, async t => {
    const { a, b } = await instances(t, { maxEventsPerStream: 3 })
    for (let n = 1; n <= 5; n++) await a.storeEvent('s', note(n))
    await t.rejects(replay(b, 's:0'), 'events 1 and 2 are gone')
    await t.rejects(replay(b, 's:1'), 'event 2 is gone')
    t.same((await replay(b, 's:2')).events.map(([id]) => id), ['s:3', 's:4', 's:5'], 'from the oldest kept on, it works')
    t.equal(await b.storeEvent('s', note(6)), 's:6', 'numbering goes on')
    await t.rejects(replay(b, 's:2'))
  })

  t.test(`${name}: a stream's events expire ttlMs after its last one`, async t => {
    const { a, b } = await instances(t, { ttlMs: 150 })
    await a.storeEvent('brief', note(1))
    await a.describe('brief', { session: 'sess', owner: 'instance-a', requests: [1] })
    t.equal(await b.getStreamIdForEventId('brief:1'), 'brief')
    await eventually(async () => await b.getStreamIdForEventId('brief:1') === undefined, 'the stream expires')
    await t.rejects(replay(b, 'brief:0'), 'an expired stream cannot be replayed')
    t.equal(await b.info('brief'), undefined, 'its description went with it')
    t.equal(await a.storeEvent('brief', note(2)), 'brief:1', 'storing again starts a new stream')
  })

  t.test(`${name}: followers on every instance get new events in order; with a replay, numbers tell duplicates`, async t => {
    const { a, b } = await instances(t)
    await a.storeEvent('s', note(1))
    await a.storeEvent('s', note(2))
    const onB = follower()
    const onA = follower()
    const stopB = await b.follow('s', onB.listener)
    const stopA = await a.follow('s', onA.listener)
    const writes = Array.from({ length: 20 }, async (_, n) => await (n % 2 === 0 ? a : b).storeEvent('s', note(n + 3)))
    // As a resuming stream does: follow first, then replay from the client's last event.
    const replayed = await replay(b, 's:1')
    await Promise.all(writes)
    await onB.until(20)
    await onA.until(20)
    const expected = Array.from({ length: 20 }, (_, n) => `s:${n + 3}`)
    t.same(onB.events.map(([id]) => id), expected, 'the other instance follows, in number order')
    t.same(onA.events.map(([id]) => id), expected, 'so does the writing one')
    t.same(onB.events, (await replay(a, 's:2')).events, 'each event with its stored message')

    let last = 1
    const sent: EventId[] = []
    for (const [id] of [...replayed.events, ...onB.events]) {
      const seq = parseEventId(id)?.seq ?? 0
      if (seq <= last) continue
      last = seq
      sent.push(id)
    }
    t.same(sent, Array.from({ length: 21 }, (_, n) => `s:${n + 2}`), 'replay then follow, deduplicated by number: every event once, in order')

    const stillOnB = follower()
    const stopStill = await b.follow('s', stillOnB.listener)
    stopB()
    await a.storeEvent('s', note(23))
    // Delivered on B together with what the stopped follower would have had.
    await stillOnB.until(1)
    t.same(stillOnB.events.map(([id]) => id), ['s:23'])
    t.equal(onB.events.length, 20, 'a follower that stopped gets nothing more')
    stopStill()
    stopA()
  })

  t.test(`${name}: describe and info`, async t => {
    const { a, b } = await instances(t)
    t.equal(await b.info('s'), undefined, 'a stream not described has no info')
    const info = { session: 'sess-1', owner: 'instance-a', requests: [1, 'two'], messages: [{ jsonrpc: '2.0' as const, id: 1, method: 'tools/call', params: { name: 'slow', arguments: { steps: [] }, _meta: { progressToken: 1 } } }] }
    await a.describe('s', info)
    t.same(await b.info('s'), info)
    t.equal(await b.getStreamIdForEventId('s:0'), 's', 'a described stream is known before its first event')
    t.same((await replay(b, 's:0')).events, [], 'and resumes from its priming event')
    await b.describe('s', { ...info, owner: 'instance-b', requests: [] })
    t.same(await a.info('s'), { ...info, owner: 'instance-b', requests: [] }, 'described again: replaced')
  })

  t.test(`${name}: a description expires with its stream`, async t => {
    const { a, b } = await instances(t, { ttlMs: 150 })
    await a.describe('s', { session: 'sess-1', owner: 'instance-a', requests: [] })
    t.ok(await b.info('s'))
    await eventually(async () => await b.info('s') === undefined, 'the description expires')
  })
}

eventContract('memory', async (t, options = {}) => {
  const store = new MemoryEventStore(new MemoryBroker(), { maxEventsPerStream: 1000, ttlMs: 600_000, ...options })
  t.teardown(() => { store.close() })
  return { a: store, b: store }
})

async function redisStore (t: Test, url: string, options: Partial<StreamEventStoreOptions> = {}): Promise<{ store: RedisEventStore, client: Redis, errors: Error[] }> {
  const client = await connect(t, url)
  const errors: Error[] = []
  const broker = new RedisBroker(client, { prefix: PREFIX, onerror: err => { errors.push(err) } })
  t.teardown(() => broker.close())
  const store = new RedisEventStore(client, broker, { prefix: PREFIX, maxEventsPerStream: 1000, ttlMs: 600_000, ...options })
  return { store, client, errors }
}

eventContract('redis', async (t, options = {}) => {
  const redis = await startRedis(t)
  return { a: (await redisStore(t, redis.url, options)).store, b: (await redisStore(t, redis.url, options)).store }
})

t.test('redis: while Redis is down every operation rejects, rather than answering as if the stream were unknown', async t => {
  const redis = await startRedis(t)
  const { store, client } = await redisStore(t, redis.url)
  await store.storeEvent('s', note(1))
  await redis.stop()
  await eventually(() => client.status !== 'ready', 'the client sees Redis gone')
  await t.rejects(store.storeEvent('s', note(2)), 'storeEvent')
  await t.rejects(store.getStreamIdForEventId('s:1'), 'getStreamIdForEventId')
  await t.rejects(replay(store, 's:0'), 'replayEventsAfter')
  await t.rejects(store.describe('s', { session: 'x', owner: 'y', requests: [] }), 'describe')
  await t.rejects(store.info('s'), 'info')
})

t.test('redis: after a restart the script is loaded again and followers are back', async t => {
  const redis = await startRedis(t)
  const { store: a, client } = await redisStore(t, redis.url)
  const { store: b } = await redisStore(t, redis.url)
  const onB = follower()
  await b.follow('s', onB.listener)
  await a.storeEvent('s', note(1))
  await onB.until(1)
  await redis.stop()
  await redis.start()
  await eventually(() => client.status === 'ready', 'the client reconnects')
  // A new, empty Redis: the stream starts again at 1. Storing until the follower, whose
  // connection resubscribes on its own time, sees one; it may miss the first ones stored
  // before its resubscription, so it is checked against what the store answered.
  const stored: string[] = []
  await eventually(async () => {
    stored.push(await a.storeEvent('s', note(stored.length)))
    return onB.events.length > 1
  }, 'an event stored after the restart reaches the follower')
  t.equal(stored[0], 's:1', 'numbered afresh')
  t.same(stored, stored.map((_, i) => `s:${i + 1}`), 'and in order')
  const [id, message] = onB.events[1]
  const seen = stored.indexOf(id)
  t.ok(seen >= 0, 'the follower got an event the store numbered')
  t.same(message, note(seen), 'with its own payload')
})
