import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import { loadConfig, parseConfig, type GatewayConfig } from '../../src/config.js'
import { reloadingGateway } from '../../src/reload.js'
import { memoryCluster } from '../../src/stores/cluster.js'
import { build, logCapture } from '../helper.js'
import { connectRedis, freePort, startRedis } from '../redis.js'

// The shared Redis (plugins/redis.ts): rate limits that hold across instances, a Redis down
// at boot or later that degrades the gateway without stopping it, the client kept across
// config reloads, and where the command takes the URL from.

const KEY = 'test-request-state-key-0123456789abcdef'

/** A config of the built-in math server with a rate limit, sharing the Redis at `url`. */
function configFor (url: string, extra: Record<string, unknown> = {}): GatewayConfig {
  return parseConfig(JSON.stringify({
    mcpServers: { math: { builtin: 'math' } },
    gateway: { rateLimit: { max: 3, timeWindow: '1 minute' }, redis: { url, requestStateKey: '${STATE_KEY}', ...extra } }
  }), 'gateway.json', { STATE_KEY: KEY })
}

const add = async (app: FastifyInstance): Promise<{ statusCode: number, json: () => unknown }> =>
  await app.inject({ method: 'POST', url: '/math/tools/add', payload: { a: 2, b: 3 } })

const ready = async (app: FastifyInstance): Promise<{ statusCode: number, body: { status: string, redis?: { status: string } } }> => {
  const res = await app.inject({ method: 'GET', url: '/ready' })
  return { statusCode: res.statusCode, body: res.json() }
}

/** The gateway's Redis client, to await its own events rather than sleep. */
const clientOf = (app: FastifyInstance): Redis => {
  const client = app.gatewayRedis?.client
  if (client === undefined) throw new Error('no redis client')
  return client
}

/** The client's next `name` event; not `events.once`, which rejects on the `error` every failed attempt emits. */
async function next (client: Redis, name: string): Promise<void> {
  await new Promise(resolve => client.once(name, resolve))
}

/** Resolves once the client is connected (at once when it already is). */
async function connected (client: Redis): Promise<void> {
  if (client.status !== 'ready') await next(client, 'ready')
}

t.test('a rate limit holds across two instances sharing Redis: the call over it is refused on whichever instance it reaches', async t => {
  const redis = await startRedis(t)
  const first = await build(t, { config: configFor(redis.url) })
  const second = await build(t, { config: configFor(redis.url) })
  await Promise.all([connected(clientOf(first)), connected(clientOf(second))])
  const statuses = []
  for (const app of [first, second, first]) statuses.push((await add(app)).statusCode)
  t.same(statuses, [200, 200, 200], 'three calls, the limit, spread over both instances')
  const refused = await add(second)
  t.equal(refused.statusCode, 429, 'the fourth is refused by the instance that saw one call')
  t.match(refused.json(), { code: 'GW_ERR_RATE_LIMITED', message: /Rate limit of 3 calls per 60000 ms on the gateway exceeded/ })
  t.equal((await add(first)).statusCode, 429, 'and by the other')
  t.not(first.gatewayCluster?.instanceId, second.gatewayCluster?.instanceId)
})

t.test('Redis down at boot: the gateway starts, /ready is 200 and shows redis down, REST calls are served (limits fail open)', async t => {
  const port = await freePort()
  const logs = logCapture()
  const app = await build(t, { config: configFor(`redis://:secret-password@127.0.0.1:${port}`) }, { logger: { level: 'info', stream: logs.stream } })
  const res = await ready(app)
  t.equal(res.statusCode, 200)
  t.match(res.body, { status: 'degraded', redis: { status: 'down' } })
  t.match((await app.inject({ method: 'GET', url: '/status.json' })).json(), { gateway: { redis: { status: 'down' } } }, 'the status page\'s JSON says so too')
  for (let i = 0; i < 5; i++) t.equal((await add(app)).statusCode, 200, `call ${i + 1}: served, the uncounted limit does not refuse it`)
  const line = await logs.logged(line => line.msg.startsWith('redis unreachable'))
  t.equal(line.level, 40, 'at warn')
  t.equal(line.redis, `redis://:***@127.0.0.1:${port}`, 'the URL without its password')
  t.notMatch(logs.raw.join(''), /secret-password/, 'the password is in no log line')
})

t.test('Redis stopped while running: no crash, /ready says down and stays 200, then up again once Redis is back; one log line per change', async t => {
  const redis = await startRedis(t)
  const logs = logCapture()
  const app = await build(t, { config: configFor(redis.url) }, { logger: { level: 'info', stream: logs.stream } })
  const client = clientOf(app)
  await connected(client)
  t.match((await ready(app)).body, { status: 'ready', redis: { status: 'up' } })

  const closed = next(client, 'close')
  await redis.stop()
  await closed
  const down = await ready(app)
  t.equal(down.statusCode, 200, 'Redis down never takes the gateway out of rotation')
  t.match(down.body, { status: 'degraded', redis: { status: 'down' } })
  t.equal((await add(app)).statusCode, 200, 'a REST call is served while Redis is down')
  // Several reconnection attempts fail meanwhile; the log says so once.
  for (let i = 0; i < 3; i++) await next(client, 'reconnecting')

  await redis.start()
  await connected(client)
  t.match((await ready(app)).body, { status: 'ready', redis: { status: 'up' } })
  const said = (text: string): number => logs.lines.filter(line => line.msg.startsWith(text)).length
  t.equal(said('redis connected'), 1)
  t.equal(said('redis connection lost'), 1, 'one line for the outage, however many attempts failed')
  t.equal(said('redis reconnected'), 1)
  t.equal(said('redis unreachable'), 0)
})

t.test('a Redis that keeps the connection but does not answer: a request that needs it answers 503 with Retry-After instead of waiting', async t => {
  const redis = await startRedis(t)
  const app = await build(t, { config: configFor(redis.url) })
  await connected(clientOf(app))
  // Every client's commands wait while Redis is paused; the connections stay open, as with a
  // Redis that is stopped (SIGSTOP), overloaded or behind a network dropping packets.
  const admin = await connectRedis(t, redis.url)
  // Longer than the command timeout (2 s) with room to spare; it ends by itself (an UNPAUSE
  // would wait in the pause too).
  await admin.call('CLIENT', 'PAUSE', '6000', 'ALL')
  const res = await app.inject({
    method: 'POST',
    url: '/math/mcp',
    headers: { accept: 'application/json, text/event-stream', 'content-type': 'application/json' },
    payload: { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'paused', version: '1' } } }
  })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '2')
  t.match(res.json(), { error: { data: { code: 'GW_ERR_STORE_UNAVAILABLE' } } })
  t.equal((await add(app)).statusCode, 200, 'a REST call is still served')
})

t.test('an injected cluster is used as it is and never closed; without Redis /ready has no redis field', async t => {
  const cluster = memoryCluster()
  t.teardown(() => cluster.close())
  const app = await build(t, { cluster })
  t.equal(app.gatewayCluster, cluster)
  t.equal(app.gatewayRedis, undefined)
  t.match((await ready(app)).body, { status: 'ready', redis: { status: 'up' } })
  const alone = await build(t, {})
  t.equal(alone.gatewayCluster, undefined)
  t.notOk('redis' in (await ready(alone)).body)
  await t.rejects(build(t, { cluster, redis: { url: 'redis://127.0.0.1:1', requestStateKey: KEY } }), { code: 'GW_ERR_INVALID_OPTIONS', message: /give url or cluster, not both/ })
  await t.rejects(build(t, { redis: { url: 'redis://127.0.0.1:1' } }), { code: 'GW_ERR_INVALID_OPTIONS', message: /requestStateKey is required with url/ })
})

t.test('a config reload keeps the Redis client and cluster; one that changes gateway.redis keeps them too and says it waits for the next start', async t => {
  const redis = await startRedis(t)
  const dir = await mkdtemp(join(tmpdir(), 'gw-redis-reload-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'gateway.json')
  const write = async (prefix: string): Promise<void> => {
    await writeFile(file, JSON.stringify({ mcpServers: { math: { builtin: 'math' } }, gateway: { redis: { url: redis.url, prefix, requestStateKey: '${STATE_KEY}' } } }))
  }
  const env = { STATE_KEY: KEY }
  await write('one:')
  const logs = logCapture()
  const app = await reloadingGateway({ fastify: { logger: { level: 'info', stream: logs.stream } }, gateway: {}, config: await loadConfig(file, env), load: async () => await loadConfig(file, env) })
  let shut = false
  t.teardown(async () => { if (!shut) await app.shutdown() })
  await app.ready()
  const cluster = app.gatewayCluster
  const client = clientOf(app)
  await connected(client)

  t.match(await app.reload(), { ok: true })
  t.equal(app.gatewayCluster, cluster, 'the same cluster serves after a reload')
  t.equal(client.status, 'ready', 'and its client was not closed')

  await write('two:')
  t.match(await app.reload(), { ok: true })
  t.equal(app.gatewayCluster, cluster, 'a changed gateway.redis keeps the running one')
  t.equal(app.gatewayRedis?.prefix, 'one:')
  t.ok(logs.lines.some(line => line.level === 40 && line.msg.startsWith('gateway.redis changed: it applies at the next start')))

  shut = true
  await app.shutdown()
  t.equal(client.status, 'end', 'the client is closed with the gateway')
})

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

/** Runs the command to its exit, as a user would (under tsx), with only the given Redis variables. */
async function command (args: string[], env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: { ...process.env, REDIS_URL: '', MCP_GATEWAY_STATE_KEY: '', MCP_GATEWAY_CONFIG: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  const [code] = await once(child, 'exit')
  return { code: code as number | null, output }
}

async function printed (t: Test, args: string[], env: Record<string, string>): Promise<Record<string, unknown>> {
  const { code, output } = await command([...args, '--print-config'], env)
  t.equal(code, 0, output)
  return JSON.parse(output) as Record<string, unknown>
}

t.test('the command: --redis beats REDIS_URL beats gateway.redis; --print-config masks the password and the key', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-redis-cmd-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'gateway.json')
  await writeFile(file, JSON.stringify({
    mcpServers: { math: { builtin: 'math' } },
    gateway: { redis: { url: 'redis://:file-password@from-file:6379/2', prefix: 'team:', requestStateKey: '${STATE_KEY}' } }
  }))
  const env = { STATE_KEY: KEY }
  // Independent runs of the command, at once: each is a process start under tsx.
  const [fromFile, fromEnv, fromFlag, alone, keyless, wrong] = await Promise.all([
    printed(t, ['--config', file], env),
    printed(t, ['--config', file], { ...env, REDIS_URL: 'redis://from-env:6379' }),
    printed(t, ['--config', file, '--redis', 'rediss://user:flag-password@from-flag:6380'], { ...env, REDIS_URL: 'redis://from-env:6379' }),
    printed(t, [], { REDIS_URL: 'redis://from-env:6379', MCP_GATEWAY_STATE_KEY: KEY }),
    command(['--redis', 'redis://127.0.0.1:6379', '--check'], {}),
    command(['--config', file, '--check'], { ...env, REDIS_URL: 'http://from-env' })
  ])
  t.same(fromFile.redis, { url: 'redis://:***@from-file:6379/2', prefix: 'team:', requestStateKey: '***' }, 'the file alone')
  t.same(fromEnv.redis, { url: 'redis://from-env:6379', prefix: 'team:', requestStateKey: '***' }, 'REDIS_URL over the file, its prefix kept')
  t.same(fromFlag.redis, { url: 'rediss://***:***@from-flag:6380', prefix: 'team:', requestStateKey: '***' }, '--redis over both')
  t.same(alone.redis, { url: 'redis://from-env:6379', prefix: 'mcp-gateway:', requestStateKey: '***' }, 'without a config file: the key from MCP_GATEWAY_STATE_KEY')
  t.equal(keyless.code, 2)
  t.match(keyless.output, /^fastify-mcp-gateway: --redis: the request-state key \(MCP_GATEWAY_STATE_KEY\) is required with Redis/)
  t.equal(wrong.code, 2)
  t.equal(wrong.output.trim(), 'fastify-mcp-gateway: REDIS_URL must be a redis:// or rediss:// URL (got a http: URL)')

  const help = await command(['--help'], {})
  t.match(help.output, /^\s+--redis URL\s+Share sessions/m)
  t.match(help.output, /env REDIS_URL/)
})
