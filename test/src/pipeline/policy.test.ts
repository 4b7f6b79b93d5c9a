import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import { McpServer, type AuthInfo } from '@modelcontextprotocol/server'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { GatewayOptions } from '../../../src/app.js'
import { parseConfig } from '../../../src/config.js'
import type { PolicyRule } from '../../../src/security.js'
import { json, listenAs, modernRequest } from '../../helper.js'

// Per-tool authorization (`gateway.policy`): two callers see and may call different tools,
// prompts and resources, on every way in (REST, a 2025 session, a 2026-07-28 request, /mcp),
// for an in-process server and a stdio upstream; what a caller may not see answers exactly
// as an unknown name and never reaches the server.

const fixture = fileURLToPath(new URL('../../fixtures/stdio-server.mjs', import.meta.url))

/** The identities the auth plugin would set: an API key's, and two JWTs'. */
const alice: AuthInfo = { clientId: 'alice', scopes: [], token: 'alice-secret-key', extra: { kind: 'apiKey' } }
const bob: AuthInfo = { clientId: 'cli', scopes: ['mcp'], token: 'bob.jwt.token', extra: { kind: 'jwt', sub: 'bob', claims: { sub: 'bob', groups: ['staff', 'admins'] } } }
const carol: AuthInfo = { clientId: 'cli', scopes: ['mcp'], token: 'carol.jwt.token', extra: { kind: 'jwt', sub: 'carol', claims: { sub: 'carol', groups: ['staff'] } } }

const policy: PolicyRule[] = [
  { match: { apiKey: 'alice' }, allow: ['probe/*', 'fixture/add', 'fixture/whoami'], deny: ['probe/secret', 'probe/probe://private', 'fixture/whoami'] },
  { match: { claim: { groups: 'admins' } }, allow: ['*'], deny: [] },
  { match: {}, allow: ['*/open', 'probe/probe://public'], deny: [] }
]

/** A 2026-07-28 request as `who`. */
async function modern (url: string, method: string, params: Record<string, unknown>, who?: AuthInfo): Promise<Record<string, any>> {
  return await (await fetch(url, modernRequest(method, params, as(who)))).json() as Record<string, any>
}

/** The header the test's stand-in for authentication reads. */
function as (who: AuthInfo | undefined): Record<string, string> {
  return who === undefined ? {} : { 'x-test-identity': JSON.stringify(who) }
}

/** A 2025-era session (SDK v1 client) as `who`. */
async function session (t: Test, url: string, who?: AuthInfo): Promise<LegacyClient> {
  const client = new LegacyClient({ name: 'policy-test', version: '1.0.0' })
  await client.connect(new LegacyTransport(new URL(url), { requestInit: { headers: as(who) } }))
  t.teardown(() => client.close())
  return client
}

function probeServer (reached: string[], options: ConstructorParameters<typeof McpServer>[1] = {}) {
  return () => {
    const server = new McpServer({ name: 'probe', version: '1.0.0' }, options)
    for (const tool of ['open', 'secret', 'whoami']) {
      server.registerTool(tool, { description: tool }, async () => {
        reached.push(tool)
        return { content: [{ type: 'text', text: tool }] }
      })
    }
    server.registerPrompt('shown', { description: 'Listed' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'y' } }] }))
    server.registerResource('private', 'probe://private', { mimeType: 'text/plain' }, async uri => {
      reached.push(uri.href)
      return { contents: [{ uri: uri.href, text: 'private' }] }
    })
    server.registerResource('public', 'probe://public', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text: 'public' }] }))
    return server
  }
}

/** A listening gateway whose callers name themselves in `x-test-identity` (see `listenAs`). */
async function start (t: Test, options: GatewayOptions): Promise<string> {
  return (await listenAs(t, options)).base
}

const names = (items: Array<{ name?: string, uri?: string }>): string[] => items.map(item => item.name ?? item.uri ?? '').sort()

t.test('two callers see different tools, prompts and resources of an in-process server on every way in, and a denied one answers as unknown', async t => {
  const reached: string[] = []
  const base = await start(t, { servers: [{ name: 'probe', factory: probeServer(reached) }], security: { policy } })

  // REST
  const restTools = async (who?: AuthInfo): Promise<string[]> => names((await (await fetch(`${base}/probe/tools`, { headers: as(who) })).json()).tools)
  t.same(await restTools(alice), ['open', 'whoami'], 'REST: alice sees what her rule allows, less what it denies')
  t.same(await restTools(bob), ['open', 'secret', 'whoami'], 'REST: an admin (a claim in an array) sees everything')
  t.same(await restTools(carol), ['open'], 'REST: a JWT outside the admins falls to the catch-all rule')
  t.same(await restTools(), ['open'], 'REST: an anonymous caller fits only the rule with an empty match')
  const denied = await fetch(`${base}/probe/tools/secret`, { method: 'POST', headers: { ...json, ...as(alice) }, body: '{}' })
  const unknown = await fetch(`${base}/probe/tools/nothing`, { method: 'POST', headers: { ...json, ...as(alice) }, body: '{}' })
  t.equal(denied.status, 404)
  t.same(await denied.json(), { ...(await unknown.json()), message: "Tool 'secret' not found on server 'probe'" }, 'REST: a denied tool answers as an unknown one')
  t.same(await (await fetch(`${base}/probe/tools/secret`, { method: 'POST', headers: { ...json, ...as(bob) }, body: '{}' })).json(), { content: [{ type: 'text', text: 'secret' }] }, 'REST: the admin may call it')
  t.same((await (await fetch(`${base}/probe/resources`, { headers: as(alice) })).json()).resources.map((r: { uri: string }) => r.uri), ['probe://public'], 'REST: resources by URI too')
  t.match(await (await fetch(`${base}/probe/resources/read?uri=probe%3A%2F%2Fprivate`, { headers: as(alice) })).json(), { statusCode: 404, code: 'GW_ERR_RESOURCE_NOT_FOUND' })
  t.same(names((await (await fetch(`${base}/probe/prompts`)).json()).prompts), [], 'REST: a prompt no rule allows is hidden from an anonymous caller')
  t.same(names((await (await fetch(`${base}/probe/prompts`, { headers: as(alice) })).json()).prompts), ['shown'])

  // a 2025 session
  const aliceSession = await session(t, `${base}/probe/mcp`, alice)
  const bobSession = await session(t, `${base}/probe/mcp`, bob)
  t.same(names((await aliceSession.listTools()).tools), ['open', 'whoami'], 'session: alice')
  t.same(names((await bobSession.listTools()).tools), ['open', 'secret', 'whoami'], 'session: the admin')
  await t.rejects(aliceSession.callTool({ name: 'secret', arguments: {} }), { code: -32602, message: /Tool secret not found/ }, 'session: denied answers as the SDK answers an unknown tool')
  t.match(await bobSession.callTool({ name: 'secret', arguments: {} }), { content: [{ text: 'secret' }] })
  await t.rejects(aliceSession.readResource({ uri: 'probe://private' }), { code: -32602 })

  // a 2026-07-28 request
  const url = `${base}/probe/mcp`
  t.same(names((await modern(url, 'tools/list', {}, alice)).result.tools), ['open', 'whoami'], '2026-07-28: alice')
  t.same(names((await modern(url, 'tools/list', {})).result.tools), ['open'], '2026-07-28: anonymous')
  t.match((await modern(url, 'tools/call', { name: 'secret', arguments: {} }, carol)).error, { code: -32602, message: 'Tool secret not found' }, '2026-07-28: refused as unknown')
  t.match((await modern(url, 'tools/call', { name: 'whoami', arguments: {} }, alice)).result, { content: [{ text: 'whoami' }] })

  // /mcp
  const aggregate = await session(t, `${base}/mcp`, alice)
  t.same(names((await aggregate.listTools()).tools), ['probe_open', 'probe_whoami'], '/mcp: alice')
  await t.rejects(aggregate.callTool({ name: 'probe_secret', arguments: {} }), { code: -32602, message: /Tool probe_secret not found/ }, '/mcp: refused as unknown')
  t.same(names((await modern(`${base}/mcp`, 'tools/list', {}, bob)).result.tools), ['probe_open', 'probe_secret', 'probe_whoami'], '/mcp 2026-07-28: the admin')

  t.same(reached.filter(item => item === 'secret' || item === 'probe://private'), ['secret', 'secret'], 'only the admin\'s two calls of secret reached the server')
})

t.test('the policy of a config file holds for a stdio upstream on every way in', async t => {
  const config = parseConfig(JSON.stringify({
    mcpServers: { fixture: { command: process.execPath, args: [fixture] } },
    gateway: { policy }
  }), 'gateway.json')
  const base = await start(t, { config })
  t.same(names((await (await fetch(`${base}/fixture/tools`, { headers: as(alice) })).json()).tools), ['add'], 'REST: alice sees add (whoami is allowed and denied: deny wins)')
  t.same(names((await (await fetch(`${base}/fixture/tools`, { headers: as(bob) })).json()).tools), ['add', 'block', 'whoami'], 'REST: the admin sees everything')
  t.same(names((await (await fetch(`${base}/fixture/tools`)).json()).tools), [], 'REST: an anonymous caller sees nothing of it')
  t.match(await (await fetch(`${base}/fixture/tools/whoami`, { method: 'POST', headers: { ...json, ...as(alice) }, body: '{}' })).json(), { statusCode: 404, code: 'GW_ERR_TOOL_NOT_FOUND' })
  t.match(await (await fetch(`${base}/fixture/tools/add`, { method: 'POST', headers: { ...json, ...as(alice) }, body: '{"a":1,"b":2}' })).json(), { content: [{ text: '3' }] })

  const aliceSession = await session(t, `${base}/fixture/mcp`, alice)
  t.same(names((await aliceSession.listTools()).tools), ['add'], 'session: alice')
  await t.rejects(aliceSession.callTool({ name: 'whoami', arguments: {} }), { code: -32602, message: /Tool whoami not found/ })
  const bobSession = await session(t, `${base}/fixture/mcp`, bob)
  t.same(names((await bobSession.listTools()).tools), ['add', 'block', 'whoami'], 'session: the admin')

  t.same(names((await modern(`${base}/fixture/mcp`, 'tools/list', {}, alice)).result.tools), ['add'], '2026-07-28: alice')
  t.match((await modern(`${base}/fixture/mcp`, 'tools/call', { name: 'whoami', arguments: {} }, alice)).error, { code: -32602 }, '2026-07-28: refused as unknown')
  t.same(names((await modern(`${base}/fixture/mcp`, 'tools/list', {}, bob)).result.tools), ['add', 'block', 'whoami'], '2026-07-28: the admin')

  const aggregate = await session(t, `${base}/mcp`, alice)
  t.same(names((await aggregate.listTools()).tools), ['fixture_add'], '/mcp: alice')
  await t.rejects(aggregate.callTool({ name: 'fixture_whoami', arguments: {} }), { code: -32602 })
  t.same(names((await modern(`${base}/mcp`, 'tools/list', {}, bob)).result.tools), ['fixture_add', 'fixture_block', 'fixture_whoami'], '/mcp: the admin')
})

t.test('a 2026-07-28 list the policy filters is marked cacheScope private, even where the server says public', async t => {
  const hints = { cacheHints: { 'tools/list': { cacheScope: 'public' as const, ttlMs: 60_000 } } }
  const open = await start(t, { servers: [{ name: 'probe', factory: probeServer([], hints) }] })
  t.match((await modern(`${open}/probe/mcp`, 'tools/list', {})).result, { cacheScope: 'public', ttlMs: 60_000 }, 'without a policy, the server\'s own hint')
  const guarded = await start(t, { servers: [{ name: 'probe', factory: probeServer([], hints) }], security: { policy } })
  t.match((await modern(`${guarded}/probe/mcp`, 'tools/list', {}, alice)).result, { cacheScope: 'private', ttlMs: 60_000 }, 'with one, private: the list is the caller\'s own')
  t.match((await modern(`${guarded}/probe/mcp`, 'tools/list', {}, bob)).result, { cacheScope: 'private' }, 'private for a caller who lost nothing too, since another may see less')
  t.match((await modern(`${guarded}/mcp`, 'tools/list', {}, alice)).result, { cacheScope: 'private' }, '/mcp')
  const legacy = await session(t, `${guarded}/probe/mcp`, alice)
  t.notOk('cacheScope' in await legacy.listTools(), 'a 2025-era list carries no cache fields')
})
