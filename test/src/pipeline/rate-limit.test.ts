import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { McpServer, type AuthInfo } from '@modelcontextprotocol/server'
import type { FastifyRateLimitStore } from '@fastify/rate-limit'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import gateway, { type GatewayOptions } from '../../../src/app.js'
import core from '../../../plugins/core.js'
import filters from '../../../plugins/filters.js'
import mcpServer from '../../../plugins/mcp-server.js'
import type { RateLimitOptions } from '../../../src/security.js'
import { json, legacyRequest, mcpHeaders, modernRequest } from '../../helper.js'

// Rate limits (`gateway.rateLimit`, counted by @fastify/rate-limit): per caller, a default
// plus per-server and per-tool limits; over one, a call is refused with 429
// GW_ERR_RATE_LIMITED and its headers on REST, and as a JSON-RPC error carrying the code on
// MCP (HTTP 429 where the answer is plain JSON), and never reaches the server.

const minute = 60_000

function who (clientId: string): Record<string, string> {
  const identity: AuthInfo = { clientId, scopes: [], token: `${clientId}-secret`, extra: { kind: 'apiKey' } }
  return { 'x-test-identity': JSON.stringify(identity) }
}

/** An in-process server whose tools record each call that reaches them. */
function probeServer (reached: string[]) {
  return () => {
    const server = new McpServer({ name: 'probe', version: '1.0.0' })
    for (const tool of ['open', 'secret']) {
      server.registerTool(tool, { description: tool }, async (ctx) => {
        reached.push(`${tool} ${ctx.http?.authInfo?.clientId ?? 'anonymous'}`)
        return { content: [{ type: 'text', text: tool }] }
      })
    }
    return server
  }
}

/** Stands in for the auth plugin: the caller names itself in `x-test-identity`. */
function identify (app: FastifyInstance): void {
  app.addHook('onRequest', async (request) => {
    const given = request.headers['x-test-identity']
    if (typeof given === 'string') request.identity = JSON.parse(given) as AuthInfo
  })
}

async function start (t: Test, options: GatewayOptions): Promise<string> {
  const app = Fastify({ logger: false })
  identify(app)
  await app.register(gateway, options)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
}

async function rest (base: string, tool: string, as: Record<string, string> = {}, server = 'probe'): Promise<Response> {
  return await fetch(`${base}/${server}/tools/${tool}`, { method: 'POST', headers: { ...json, ...as }, body: '{}' })
}

function modernCall (name: string): RequestInit & { headers: Record<string, string> } {
  return modernRequest('tools/call', { name, arguments: {} })
}

function legacyCall (name: string): RequestInit & { headers: Record<string, string> } {
  return legacyRequest('tools/call', { name, arguments: {} })
}

const limits = (rateLimit: Partial<RateLimitOptions>): RateLimitOptions => ({ max: 100, timeWindow: minute, servers: {}, ...rateLimit })

t.test('REST: 429 with Retry-After and RateLimit headers past the default limit; another caller is unaffected; the refused call never reaches the server', async t => {
  const reached: string[] = []
  const base = await start(t, { servers: [{ name: 'probe', factory: probeServer(reached) }], security: { rateLimit: limits({ max: 2 }) } })
  t.equal((await rest(base, 'open', who('alice'))).status, 200)
  t.equal((await rest(base, 'secret', who('alice'))).status, 200, 'every tool counts against the default')
  const refused = await rest(base, 'open', who('alice'))
  t.equal(refused.status, 429)
  t.match(await refused.json(), { statusCode: 429, code: 'GW_ERR_RATE_LIMITED', error: 'Too Many Requests', message: "Rate limit of 2 calls per 60000 ms on the gateway exceeded: retry in 60 s" })
  t.equal(refused.headers.get('retry-after'), '60')
  t.equal(refused.headers.get('ratelimit-limit'), '2')
  t.equal(refused.headers.get('ratelimit-remaining'), '0')
  t.equal(refused.headers.get('ratelimit-reset'), '60')
  t.equal((await rest(base, 'open', who('bob'))).status, 200, 'another identity has its own count')
  t.same(reached, ['open alice', 'secret alice', 'open bob'], 'the refused call never reached the server')

  // Anonymous callers are counted by address: these all come from 127.0.0.1.
  t.equal((await rest(base, 'open')).status, 200)
  t.equal((await rest(base, 'open')).status, 200)
  t.equal((await rest(base, 'open')).status, 429, 'an anonymous caller is limited by its address')
  t.equal((await rest(base, 'open', who('carol'))).status, 200, 'an authenticated caller from the same address is not')
})

t.test('MCP: past the limit a call is a JSON-RPC error carrying GW_ERR_RATE_LIMITED, with HTTP 429 where the answer is plain JSON, on every way in', async t => {
  const reached: string[] = []
  const probe = probeServer(reached)
  const base = await start(t, {
    servers: [{ name: 'probe', factory: probe }, { name: 'probe-stateless', factory: probe, stateless: true }],
    security: { rateLimit: limits({ max: 1 }) }
  })

  for (const [way, url, init, as] of [
    ['2026-07-28', `${base}/probe/mcp`, modernCall('open'), who('u-modern')],
    ['2025 stateless', `${base}/probe-stateless/mcp`, legacyCall('open'), who('u-stateless')]
  ] as const) {
    const first = await fetch(url, { ...init, headers: { ...init.headers, ...as } })
    t.equal(first.status, 200, `${way}: the first call is answered`)
    t.match(await first.json(), { result: { content: [{ text: 'open' }] } })
    const second = await fetch(url, { ...init, headers: { ...init.headers, ...as } })
    t.equal(second.status, 429, `${way}: 429`)
    t.equal(second.headers.get('retry-after'), '60', `${way}: Retry-After`)
    t.equal(second.headers.get('ratelimit-limit'), '1')
    t.match(await second.json(), { jsonrpc: '2.0', id: 1, error: { code: -32000, message: /Rate limit of 1 calls per 60000 ms/, data: { code: 'GW_ERR_RATE_LIMITED' } } }, `${way}: the code in error.data.code`)
  }

  // a 2025 session, as raw HTTP
  const as = who('u-session')
  const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }
  const opened = await fetch(`${base}/probe/mcp`, { method: 'POST', headers: { ...mcpHeaders, ...as }, body: JSON.stringify(init) })
  const sessionId = opened.headers.get('mcp-session-id') as string
  await opened.text()
  const inSession = { ...mcpHeaders, ...as, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' }
  t.equal((await fetch(`${base}/probe/mcp`, { ...legacyCall('open'), headers: inSession })).status, 200, 'session: the first call')
  const refused = await fetch(`${base}/probe/mcp`, { ...legacyCall('open'), headers: inSession })
  t.equal(refused.status, 429, 'session: 429')
  t.equal(refused.headers.get('retry-after'), '60')
  t.equal(refused.headers.get('mcp-session-id'), sessionId)
  t.match(await refused.json(), { id: 1, error: { data: { code: 'GW_ERR_RATE_LIMITED' } } })

  // a 2025 session with the SDK v1 client: it reports the 429
  const client = new LegacyClient({ name: 'rate-test', version: '1.0.0' })
  await client.connect(new LegacyTransport(new URL(`${base}/probe/mcp`), { requestInit: { headers: who('u-client') } }))
  t.teardown(() => client.close())
  t.match(await client.callTool({ name: 'open', arguments: {} }), { content: [{ text: 'open' }] })
  await t.rejects(client.callTool({ name: 'open', arguments: {} }), { code: 429, message: /GW_ERR_RATE_LIMITED/ }, 'the SDK client sees the 429 and its code')

  // /mcp
  const aggregate = new LegacyClient({ name: 'rate-test', version: '1.0.0' })
  await aggregate.connect(new LegacyTransport(new URL(`${base}/mcp`), { requestInit: { headers: who('u-aggregate') } }))
  t.teardown(() => aggregate.close())
  t.match(await aggregate.callTool({ name: 'probe_open', arguments: {} }), { content: [{ text: 'open' }] })
  await t.rejects(aggregate.callTool({ name: 'probe_open', arguments: {} }), { code: -32000, message: /Rate limit of 1 calls/, data: { code: 'GW_ERR_RATE_LIMITED' } }, '/mcp: the code in error.data.code')

  t.same(reached, ['open u-modern', 'open u-stateless', 'open u-session', 'open u-client', 'open u-aggregate'], 'no refused call reached the server')
})

t.test('per-server and per-tool limits: each call counts against every limit that applies, and the one over it refuses', async t => {
  const reached: string[] = []
  const probe = probeServer(reached)
  const base = await start(t, {
    servers: [{ name: 'probe', factory: probe }, { name: 'other', factory: probe }],
    security: { rateLimit: limits({ servers: { probe: { max: 3, tools: { secret: { max: 1 } } } } }) }
  })
  t.equal((await rest(base, 'secret', who('alice'))).status, 200)
  const tool = await rest(base, 'secret', who('alice'))
  t.equal(tool.status, 429, 'the tool\'s limit')
  t.match(await tool.json(), { code: 'GW_ERR_RATE_LIMITED', message: "Rate limit of 1 calls per 60000 ms on tool 'probe/secret' exceeded: retry in 60 s" })
  t.equal(tool.headers.get('ratelimit-limit'), '1')
  t.equal((await rest(base, 'open', who('alice'))).status, 200, 'another tool of the server: the server\'s third call')
  const server = await rest(base, 'open', who('alice'))
  t.equal(server.status, 429, 'the server\'s limit, which the refused call counted against too')
  t.match(await server.json(), { message: "Rate limit of 3 calls per 60000 ms on server 'probe' exceeded: retry in 60 s" })
  t.equal((await rest(base, 'secret', who('alice'), 'other')).status, 200, 'a server without its own limit: only the default applies')
  t.equal((await rest(base, 'secret', who('bob'))).status, 200, 'another caller has its own counts')
  t.same(reached, ['secret alice', 'open alice', 'secret alice', 'secret bob'])
})

t.test('the counters live in the store given: two gateways sharing one share the limit', async t => {
  // A store in the shape of @fastify/rate-limit's (what a Redis store does across replicas).
  const counts = new Map<string, number>()
  class SharedStore implements FastifyRateLimitStore {
    incr (key: string, callback: (error: Error | null, result?: { current: number, ttl: number }) => void, timeWindow: number): void {
      counts.set(key, (counts.get(key) ?? 0) + 1)
      callback(null, { current: counts.get(key) as number, ttl: timeWindow })
    }

    child (): FastifyRateLimitStore { return this }
  }
  const replica = async (): Promise<string> => {
    const app = Fastify({ logger: false })
    identify(app)
    await app.register(core)
    await app.register(filters, { rateLimit: limits({ max: 1 }), store: SharedStore })
    await app.register(mcpServer, { name: 'probe', prefix: '/probe', factory: probeServer([]) })
    t.teardown(() => app.close())
    await app.listen({ port: 0, host: '127.0.0.1' })
    return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  }
  const [one, two] = [await replica(), await replica()]
  t.equal((await rest(one, 'open', who('alice'))).status, 200)
  t.equal((await rest(two, 'open', who('alice'))).status, 429, 'the second replica sees the first one\'s count')
  t.ok(counts.size > 0)
})
