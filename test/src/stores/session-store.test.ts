import t, { type Test } from 'tap'
import { MemorySessionStore, type SessionRecord, type SessionStore } from '../../../src/stores/session-store.js'
import { RedisSessionStore } from '../../../src/stores/redis-session-store.js'
import { connectRedis as connect, eventually, startRedis } from '../../redis.js'

// The session store's contract, one suite run against the memory store and the Redis one
// (two instances, each with its own client): what one instance stores another reads; a
// session expires unless touched, an update keeps its expiry and brings back nothing; an
// instance is alive while it beats. Expiries are short and waited for by polling, never
// by sleeping a fixed time.

const PREFIX = 'gw-test:'
const LONG = 60_000
const SHORT = 150

function record (id: string, fields: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id,
    server: 'probe',
    owner: 'instance-a',
    caller: 'apiKey:alice',
    // Empty arrays and objects, nesting and unicode: the record comes back as it went in.
    initialize: { protocolVersion: '2025-06-18', capabilities: { roots: {}, list: [] }, clientInfo: { name: 'test client ✓', version: '1.0.0' } },
    pinned: false,
    ...fields
  }
}

function sessionContract (name: string, instances: (t: Test) => Promise<{ a: SessionStore, b: SessionStore }>): void {
  t.test(`${name}: a session one instance creates, another reads; unknown ids are not found`, async t => {
    const { a, b } = await instances(t)
    const session = record('s1', { logLevel: 'debug', pinned: true })
    await a.create(session, LONG)
    t.same(await b.get('s1'), session)
    t.equal(await b.get('nope'), undefined)
    const copy = await b.get('s1')
    if (copy !== undefined) copy.owner = 'changed'
    t.equal((await a.get('s1'))?.owner, 'instance-a', 'what get returns is a copy')
  })

  t.test(`${name}: update changes the given fields and nothing else`, async t => {
    const { a, b } = await instances(t)
    await a.create(record('s1'), LONG)
    await b.update('s1', { owner: 'instance-b' })
    await a.update('s1', { logLevel: 'warning' })
    t.same(await a.get('s1'), record('s1', { owner: 'instance-b', logLevel: 'warning' }))
  })

  t.test(`${name}: concurrent updates of different fields from two instances are all kept`, async t => {
    const { a, b } = await instances(t)
    await a.create(record('s1'), LONG)
    await Promise.all([a.update('s1', { owner: 'instance-b' }), b.update('s1', { logLevel: 'error' })])
    t.same(await a.get('s1'), record('s1', { owner: 'instance-b', logLevel: 'error' }))
  })

  t.test(`${name}: update keeps the expiry`, async t => {
    const { a, b } = await instances(t)
    await a.create(record('s1'), SHORT)
    await b.update('s1', { owner: 'instance-b' })
    t.equal((await a.get('s1'))?.owner, 'instance-b')
    await eventually(async () => await a.get('s1') === undefined, 'the updated session expires as created')
  })

  t.test(`${name}: update brings back neither a deleted nor an expired session`, async t => {
    const { a, b } = await instances(t)
    await a.create(record('deleted'), LONG)
    await a.delete('deleted')
    await b.update('deleted', { owner: 'instance-b' })
    t.equal(await a.get('deleted'), undefined, 'deleted stays deleted')
    await b.update('never', { logLevel: 'info' })
    t.equal(await a.get('never'), undefined, 'an unknown id stays unknown')
    await a.create(record('expired'), SHORT)
    await eventually(async () => await a.get('expired') === undefined, 'the session expires')
    await b.update('expired', { owner: 'instance-b' })
    t.equal(await a.get('expired'), undefined, 'expired stays expired')
  })

  t.test(`${name}: touch keeps a session alive; one not touched expires`, async t => {
    const { a, b } = await instances(t)
    // Two sessions of the same lifetime; the one created later, untouched, tells when the
    // first would have expired.
    await a.create(record('touched'), SHORT)
    await a.create(record('clock'), SHORT)
    await b.touch('touched', LONG)
    await eventually(async () => await a.get('clock') === undefined, 'the untouched session expires')
    t.same(await a.get('touched'), record('touched'), 'the touched one is still there')
    await b.touch('never', LONG)
    t.equal(await a.get('never'), undefined, 'touching an unknown id creates nothing')
  })

  t.test(`${name}: delete`, async t => {
    const { a, b } = await instances(t)
    await a.create(record('s1'), LONG)
    await a.create(record('s2'), LONG)
    await b.delete('s1')
    await b.delete('never')
    t.equal(await a.get('s1'), undefined)
    t.same(await a.get('s2'), record('s2'), 'the others stay')
  })

  t.test(`${name}: an instance is alive while it beats`, async t => {
    const { a, b } = await instances(t)
    t.equal(await b.alive('instance-a'), false, 'one that never beat is not')
    await a.beat('instance-a', LONG)
    t.equal(await b.alive('instance-a'), true, 'one that beat is, for every instance')
    t.equal(await b.alive('instance-c'), false, 'others are not')
    await a.beat('instance-short', SHORT)
    t.equal(await b.alive('instance-short'), true)
    await eventually(async () => !await b.alive('instance-short'), 'an instance that stopped beating is no longer alive')
    t.equal(await b.alive('instance-a'), true)
  })
}

sessionContract('memory', async t => {
  const store = new MemorySessionStore()
  t.teardown(() => store.close())
  return { a: store, b: store }
})

sessionContract('redis', async t => {
  const redis = await startRedis(t)
  const [a, b] = [new RedisSessionStore(await connect(t, redis.url), { prefix: PREFIX }), new RedisSessionStore(await connect(t, redis.url), { prefix: PREFIX })]
  return { a, b }
})

t.test('redis: while Redis is down every operation rejects, rather than answering as if the session were unknown', async t => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  const store = new RedisSessionStore(client, { prefix: PREFIX })
  await store.create(record('s1'), LONG)
  await redis.stop()
  await eventually(async () => client.status !== 'ready', 'the client sees Redis gone')
  await t.rejects(store.get('s1'), 'get')
  await t.rejects(store.update('s1', { owner: 'instance-b' }), 'update')
  await t.rejects(store.touch('s1', LONG), 'touch')
  await t.rejects(store.delete('s1'), 'delete')
  await t.rejects(store.create(record('s2'), LONG), 'create')
  await t.rejects(store.beat('instance-a', LONG), 'beat')
  await t.rejects(store.alive('instance-a'), 'alive')
})

t.test('redis: the update script survives a Redis restart (which forgets loaded scripts)', async t => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  const store = new RedisSessionStore(client, { prefix: PREFIX })
  await store.create(record('s1'), LONG)
  await store.update('s1', { owner: 'before' })
  await redis.stop()
  await redis.start()
  await eventually(async () => client.status === 'ready', 'the client reconnects')
  await store.create(record('s1'), LONG)
  await store.update('s1', { owner: 'after' })
  t.equal((await store.get('s1'))?.owner, 'after')
})
