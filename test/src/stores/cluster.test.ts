import t, { type Test } from 'tap'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import type { ServerEvent } from '@modelcontextprotocol/server'
import { memoryCluster, memoryClusterParts, type Cluster } from '../../../src/stores/cluster.js'
import { DEFAULT_PREFIX, redisCluster } from '../../../src/stores/redis-cluster.js'
import { eventually, startRedis } from '../../redis.js'

// Two instances of a cluster, in memory (two gateways sharing parts) and over Redis: the
// `subscriptions/listen` bus carries an event to the other instance once, and to the
// publisher's own listeners once; over Redis, the cluster says whether Redis is reachable,
// starts without it, and fails store operations at once while it is gone.

const KEY = 'a-request-state-key-of-the-configuration'

/** A client as the redis plugin makes one: commands are refused at once while Redis is down, and it reconnects fast. */
function client (t: Test, url: string): Redis {
  const redis = new Redis(url, { enableOfflineQueue: false, retryStrategy: times => Math.min(times * 20, 200) })
  // A test stops Redis on purpose: the refused reconnections are expected, and ioredis would print them.
  redis.on('error', () => {})
  t.teardown(async () => {
    await redis.quit().catch(() => {})
    redis.disconnect()
  })
  return redis
}

async function connect (t: Test, url: string): Promise<Redis> {
  const redis = client(t, url)
  await once(redis, 'ready')
  return redis
}

const updated = (uri: string): ServerEvent => ({ kind: 'resource_updated', uri })
const uris = (events: ServerEvent[], prefix: string): string[] => events.flatMap(event => event.kind === 'resource_updated' && event.uri.startsWith(prefix) ? [event.uri] : [])

function clusterContract (name: string, instances: (t: Test) => Promise<{ a: Cluster, b: Cluster }>): void {
  t.test(`${name}: a bus event reaches the other instance's listeners, and the publisher's own once`, async t => {
    const { a, b } = await instances(t)
    t.not(a.instanceId, b.instanceId, 'each instance has its own id')
    t.equal(a.requestStateKey, b.requestStateKey, 'and the same requestState key')
    const onA: ServerEvent[] = []
    const onB: ServerEvent[] = []
    const onOtherServer: ServerEvent[] = []
    a.busFor('probe').subscribe(event => { onA.push(event) })
    b.busFor('probe').subscribe(event => { onB.push(event) })
    b.busFor('other').subscribe(event => { onOtherServer.push(event) })
    // The bus subscribes to the broker in the background: published until it has, both ways.
    let n = 0
    await eventually(() => {
      a.busFor('probe').publish(updated(`warm://a/${++n}`))
      return uris(onB, 'warm://a/').length > 0
    }, 'b hears a')
    await eventually(() => {
      b.busFor('probe').publish(updated(`warm://b/${++n}`))
      return uris(onA, 'warm://b/').length > 0
    }, 'a hears b')

    a.busFor('probe').publish(updated('test://event'))
    t.same(uris(onA, 'test://'), ['test://event'], 'the publisher\'s own listeners get it at once')
    await eventually(() => uris(onB, 'test://').length > 0, 'the other instance gets it')
    // Published by b after it got the event: it reaches a after the event's own echo would have.
    b.busFor('probe').publish(updated('test://fence'))
    await eventually(() => uris(onA, 'test://fence').length > 0, 'a gets b\'s event')
    t.same(uris(onA, 'test://'), ['test://event', 'test://fence'], 'a got its own event once')
    t.same(uris(onB, 'test://'), ['test://event', 'test://fence'], 'b got each once')
    t.same(onOtherServer, [], 'another server\'s bus hears nothing')
  })
}

clusterContract('memory', async t => {
  const shared = memoryClusterParts()
  const [a, b] = [memoryCluster({ shared }), memoryCluster({ shared })]
  t.teardown(() => a.close())
  t.teardown(() => b.close())
  return { a, b }
})

clusterContract('redis', async t => {
  const redis = await startRedis(t)
  const [a, b] = [redisCluster(await connect(t, redis.url), { requestStateKey: KEY }), redisCluster(await connect(t, redis.url), { requestStateKey: KEY })]
  t.teardown(() => a.close())
  t.teardown(() => b.close())
  return { a, b }
})

t.test('redis: each instance sees the other alive by its heartbeat, sessions under the default prefix', async t => {
  const redis = await startRedis(t)
  const [one, two] = [await connect(t, redis.url), await connect(t, redis.url)]
  const a = redisCluster(one, { requestStateKey: KEY, instanceId: 'instance-a' })
  const b = redisCluster(two, { requestStateKey: KEY })
  t.teardown(() => a.close())
  t.teardown(() => b.close())
  t.equal(a.instanceId, 'instance-a')
  await eventually(async () => await b.sessions.alive('instance-a'), 'b sees a alive')
  await a.sessions.create({ id: 's1', server: 'probe', owner: a.instanceId, caller: 'anonymous', initialize: {}, pinned: false }, 60_000)
  t.equal((await b.sessions.get('s1'))?.owner, 'instance-a')
  t.ok((await one.keys(`${DEFAULT_PREFIX}*`)).includes(`${DEFAULT_PREFIX}session:s1`), `keys start with ${DEFAULT_PREFIX}`)
})

t.test('redis: available follows Redis; while it is down, store operations reject at once and publishing only reports', async t => {
  const redis = await startRedis(t)
  const errors: Error[] = []
  const redisClient = await connect(t, redis.url)
  const cluster = redisCluster(redisClient, { requestStateKey: KEY, onerror: err => { errors.push(err) } })
  t.teardown(() => cluster.close())
  t.equal(cluster.available, true, 'available while Redis is up')

  await redis.stop()
  await eventually(() => !cluster.available, 'available turns false')
  await t.rejects(cluster.sessions.get('s1'), 'a session lookup rejects')
  await t.rejects(cluster.events.storeEvent('s', { jsonrpc: '2.0', method: 'notifications/progress' }), 'storing an event rejects')
  await t.rejects(cluster.events.replayEventsAfter('s:0', { send: async () => {} }), 'a replay rejects')
  await t.rejects(cluster.broker.subscribe('news', () => {}), 'subscribing rejects')
  const before = errors.length
  t.doesNotThrow(() => { cluster.broker.publish('news', { n: 1 }) }, 'publishing does not throw')
  t.doesNotThrow(() => { cluster.busFor('probe').publish(updated('test://x')) }, 'nor does the bus')
  await eventually(() => errors.length >= before + 2, 'the lost messages are reported')

  await redis.start()
  await eventually(() => cluster.available, 'available turns true again')
  t.equal(await cluster.sessions.get('s1'), undefined, 'and the stores answer again')
})

t.test('redis: a cluster whose Redis is down at boot is made at once and works once Redis is up', async t => {
  const redis = await startRedis(t)
  await redis.stop()
  const redisClient = client(t, redis.url)
  const cluster = redisCluster(redisClient, { requestStateKey: KEY, prefix: 'late:', instanceId: 'late-instance' })
  t.teardown(() => cluster.close())
  t.equal(cluster.available, false, 'not available')
  await t.rejects(cluster.sessions.alive('late-instance'), 'store operations reject')

  await redis.start()
  await eventually(() => cluster.available, 'available once Redis is up')
  await eventually(async () => await cluster.sessions.alive('late-instance'), 'the heartbeat resumes')
  const got: unknown[] = []
  await eventually(async () => {
    try {
      await cluster.broker.subscribe('news', message => { got.push(message) })
      return true
    } catch {
      // The broker's own connection may come back after the client's.
      return false
    }
  }, 'subscribing works')
  cluster.broker.publish('news', { n: 1 })
  await eventually(() => got.length > 0, 'the message arrives')
  t.same(got, [{ n: 1 }])
  t.ok((await redisClient.pubsub('CHANNELS', 'late:*') as string[]).includes('late:news'), 'under the given prefix')
})

t.test('redis: closing the cluster leaves the given client open', async t => {
  const redis = await startRedis(t)
  const redisClient = await connect(t, redis.url)
  const cluster = redisCluster(redisClient, { requestStateKey: KEY })
  await cluster.broker.subscribe('news', () => {})
  await cluster.close()
  t.equal(await redisClient.ping(), 'PONG', 'the client still works')
  t.equal(redisClient.status, 'ready')
  await eventually(async () => (await redisClient.pubsub('CHANNELS', '*') as string[]).length === 0, 'the broker\'s connection is closed')
})
