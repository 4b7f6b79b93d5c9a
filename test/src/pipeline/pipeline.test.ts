import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { McpServer } from '@modelcontextprotocol/server'
import gateway, { type GatewayOptions } from '../../../src/app.js'
import { parseConfig } from '../../../src/config.js'
import { ForbiddenHostError } from '../../../src/errors.js'
import { CallPipeline, type CallContext, type CallFilter, type CallOutcome } from '../../../src/pipeline/pipeline.js'
import { createGreetServer } from '../../../servers/greet/index.js'
import { json, legacyRequest, mcpClient, mcpHeaders, modernRequest, text } from '../../helper.js'

// The call pipeline: every request to a mounted server passes it, whatever the way in. Proven
// with test-only filters on every path (REST, a server's own endpoint in a 2025 session, a
// 2025 stateless request and a 2026-07-28 request, and /mcp), for an in-process server and a
// stdio upstream alike.

const fixture = fileURLToPath(new URL('../../fixtures/stdio-server.mjs', import.meta.url))

/** A 2026-07-28 request, as a client of that revision sends it. */
async function modern (url: string, method: string, params: Record<string, unknown> = {}, extra: Record<string, string> = {}): Promise<Record<string, any>> {
  return await (await fetch(url, modernRequest(method, params, extra))).json() as Record<string, any>
}

/** A 2025-era request without a session (a server mounted `stateless`). */
async function legacy (url: string, method: string, params: Record<string, unknown> = {}, extra: Record<string, string> = {}): Promise<Record<string, any>> {
  return await (await fetch(url, legacyRequest(method, params, extra))).json() as Record<string, any>
}

/** An in-process server whose `secret` counts the calls that reach it, and `whoami` names its caller. */
function probeServer (reached: { secret: number }) {
  return () => {
    const server = new McpServer({ name: 'probe', version: '1.0.0' })
    server.registerTool('open', { description: 'Anyone may call it' }, async () => ({ content: [{ type: 'text', text: 'open' }] }))
    server.registerTool('secret', { description: 'Hidden by the deny filter' }, async () => {
      reached.secret++
      return { content: [{ type: 'text', text: 'secret' }] }
    })
    server.registerTool('whoami', { description: 'The caller, as the SDK hands it to tools' }, async (ctx) => ({
      content: [{ type: 'text', text: ctx.http?.authInfo?.clientId ?? 'nobody' }]
    }))
    server.registerPrompt('hidden', { description: 'Hidden by the deny filter' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'x' } }] }))
    server.registerPrompt('shown', { description: 'Listed' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'y' } }] }))
    server.registerResource('private', 'probe://private', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text: 'private' }] }))
    server.registerResource('public', 'probe://public', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text: 'public' }] }))
    return server
  }
}

/**
 * A listening gateway with `filters`, whose log lines are kept, and whose callers name
 * themselves in `x-test-user` (a stand-in for authentication, which sets `request.identity`).
 */
async function start (t: Test, options: GatewayOptions): Promise<{ base: string, log: string[] }> {
  const log: string[] = []
  const stream = new Writable({ write (chunk, _encoding, done) { log.push(String(chunk)); done() } })
  const app = Fastify({ logger: { level: 'info', stream } })
  app.addHook('onRequest', async (request) => {
    const user = request.headers['x-test-user']
    if (typeof user === 'string') request.identity = { token: 'opaque', clientId: user, scopes: [] }
  })
  await app.register(gateway, options)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { base: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, log }
}

function configWith (servers: Record<string, unknown>) {
  return parseConfig(JSON.stringify({ mcpServers: servers }), 'gateway.json')
}

t.test('a recording filter sees the same call on every way in, for an in-process and a stdio upstream server', async t => {
  const seen: Array<{ call: CallContext, outcome: CallOutcome }> = []
  const recorder: CallFilter = { name: 'recorder', observe: (call, outcome) => { seen.push({ call, outcome }) } }
  const config = configWith({
    greet: { builtin: 'greet' },
    'greet-stateless': { builtin: 'greet', stateless: true },
    fixture: { command: process.execPath, args: [fixture] },
    'fixture-stateless': { command: process.execPath, args: [fixture], stateless: true }
  })
  const { base } = await start(t, { config, filters: [recorder] })
  const calls = (): Array<Record<string, unknown>> => seen.filter(entry => entry.call.method === 'tools/call').map(({ call, outcome }) => ({
    server: call.server, name: call.name, arguments: call.arguments, way: call.way, outcome: outcome.outcome, requestId: typeof call.requestId, ip: call.ip
  }))

  const cases: Array<[string, () => Promise<string>, Record<string, unknown>]> = [
    ['REST', async () => JSON.stringify(await (await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: '{"userName":"Ada"}' })).json()), { server: 'greet', way: 'rest', requestId: 'string' }],
    ['2025 session', async () => text(await (await mcpClient(t, `${base}/greet/mcp`)).callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })), { server: 'greet', way: 'mcp-2025-session', requestId: 'string' }],
    ['2025 stateless', async () => JSON.stringify(await legacy(`${base}/greet-stateless/mcp`, 'tools/call', { name: 'echoHai', arguments: { userName: 'Ada' } })), { server: 'greet-stateless', way: 'mcp-2025-stateless', requestId: 'string' }],
    ['2026-07-28', async () => JSON.stringify(await modern(`${base}/greet/mcp`, 'tools/call', { name: 'echoHai', arguments: { userName: 'Ada' } })), { server: 'greet', way: 'mcp-2026', requestId: 'string' }],
    ['/mcp', async () => text(await (await mcpClient(t, `${base}/mcp`)).callTool({ name: 'greet_echoHai', arguments: { userName: 'Ada' } })), { server: 'greet', way: 'aggregate', requestId: 'string', ip: '127.0.0.1' }]
  ]
  for (const [way, call, expected] of cases) {
    seen.length = 0
    t.match(await call(), /Hello, Ada!/, `${way}: answered`)
    t.match(calls(), [{ name: 'echoHai', arguments: { userName: 'Ada' }, outcome: 'ok', ...expected }], `${way}: seen once, as a call of greet's echoHai`)
    t.equal(calls().length, 1, `${way}: seen once`)
  }

  const upstream: Array<[string, () => Promise<string>, Record<string, unknown>]> = [
    ['REST', async () => JSON.stringify(await (await fetch(`${base}/fixture/tools/add`, { method: 'POST', headers: json, body: '{"a":1,"b":2}' })).json()), { server: 'fixture', way: 'rest' }],
    ['2025 session', async () => text(await (await mcpClient(t, `${base}/fixture/mcp`)).callTool({ name: 'add', arguments: { a: 1, b: 2 } })), { server: 'fixture', way: 'mcp-2025-session' }],
    ['2025 stateless', async () => JSON.stringify(await legacy(`${base}/fixture-stateless/mcp`, 'tools/call', { name: 'add', arguments: { a: 1, b: 2 } })), { server: 'fixture-stateless', way: 'mcp-2025-stateless' }],
    ['2026-07-28', async () => JSON.stringify(await modern(`${base}/fixture/mcp`, 'tools/call', { name: 'add', arguments: { a: 1, b: 2 } })), { server: 'fixture', way: 'mcp-2026' }],
    ['/mcp', async () => text(await (await mcpClient(t, `${base}/mcp`)).callTool({ name: 'fixture_add', arguments: { a: 1, b: 2 } })), { server: 'fixture', way: 'aggregate', requestId: 'string', ip: '127.0.0.1' }]
  ]
  for (const [way, call, expected] of upstream) {
    seen.length = 0
    t.match(await call(), /3/, `stdio upstream, ${way}: answered`)
    t.match(calls(), [{ name: 'add', arguments: { a: 1, b: 2 }, outcome: 'ok', ...expected }], `stdio upstream, ${way}: seen once, as a call of its own add`)
    t.equal(calls().length, 1, `stdio upstream, ${way}: seen once`)
  }

  seen.length = 0
  const session = await mcpClient(t, `${base}/greet/mcp`)
  await session.listTools()
  t.match(seen.map(entry => entry.call), [{ server: 'greet', method: 'tools/list', way: 'mcp-2025-session' }], 'lists pass too')
  seen.length = 0
  const failed = await (await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: '{"userName":""}' })).json()
  t.equal(failed.code, 'GW_ERR_INVALID_ARGUMENTS', 'arguments the route refuses never reach the pipeline')
  t.same(seen, [])
})

t.test('a denying filter hides one tool, prompt and resource from every list on every path, and refuses them as unknown without reaching the server', async t => {
  const reached = { secret: 0 }
  const deny: CallFilter = { name: 'deny', allows: call => !['secret', 'block', 'hidden', 'probe://private'].includes(call.name ?? '') }
  const config = configWith({ fixture: { command: process.execPath, args: [fixture] } })
  const probe = probeServer(reached)
  const { base, log } = await start(t, {
    filters: [deny],
    servers: [{ name: 'probe', factory: probe }, { name: 'probe-stateless', factory: probe, stateless: true }]
  })
  const upstreamGateway = await start(t, { config, filters: [deny] })

  // REST
  const tools = await (await fetch(`${base}/probe/tools`)).json()
  t.same(tools.tools.map((tool: { name: string }) => tool.name), ['open', 'whoami'])
  const denied = await fetch(`${base}/probe/tools/secret`, { method: 'POST', headers: json, body: '{}' })
  const unknown = await fetch(`${base}/probe/tools/nothing`, { method: 'POST', headers: json, body: '{}' })
  t.equal(denied.status, 404)
  t.same(await denied.json(), { ...(await unknown.json()), message: "Tool 'secret' not found on server 'probe'" }, 'REST: denied answers as unknown')
  t.same((await (await fetch(`${base}/probe/prompts`)).json()).prompts.map((p: { name: string }) => p.name), ['shown'])
  t.match(await (await fetch(`${base}/probe/prompts/hidden`, { method: 'POST', headers: json, body: '{}' })).json(), { statusCode: 404, code: 'GW_ERR_PROMPT_NOT_FOUND' })
  t.same((await (await fetch(`${base}/probe/resources`)).json()).resources.map((r: { uri: string }) => r.uri), ['probe://public'])
  t.match(await (await fetch(`${base}/probe/resources/read?uri=probe%3A%2F%2Fprivate`)).json(), { statusCode: 404, code: 'GW_ERR_RESOURCE_NOT_FOUND' })

  // a 2025 session
  const session = await mcpClient(t, `${base}/probe/mcp`)
  t.same((await session.listTools()).tools.map(tool => tool.name), ['open', 'whoami'])
  const sessionDenied = await session.callTool({ name: 'secret', arguments: {} }).then(() => undefined, (err: unknown) => err)
  const sessionUnknown = await session.callTool({ name: 'nothing', arguments: {} }).then(() => undefined, (err: unknown) => err)
  t.match(sessionDenied, { code: -32602, message: /Tool secret not found/ }, 'session: denied answers as the SDK answers an unknown tool')
  t.match(sessionUnknown, { code: -32602, message: /Tool nothing not found/ })
  t.same((await session.listPrompts()).prompts.map(p => p.name), ['shown'])
  await t.rejects(session.getPrompt({ name: 'hidden' }), { code: -32602, message: /Prompt hidden not found/ })
  t.same((await session.listResources()).resources.map(r => r.uri), ['probe://public'])
  await t.rejects(session.readResource({ uri: 'probe://private' }), { code: -32602, data: { uri: 'probe://private' } })

  // a 2025 stateless request and a 2026-07-28 request
  for (const [way, ask, url] of [['2025 stateless', legacy, `${base}/probe-stateless/mcp`], ['2026-07-28', modern, `${base}/probe/mcp`]] as const) {
    const list = await ask(url, 'tools/list')
    t.same(list.result.tools.map((tool: { name: string }) => tool.name), ['open', 'whoami'], `${way}: hidden from the list`)
    const call = await ask(url, 'tools/call', { name: 'secret', arguments: {} })
    t.match(call.error, { code: -32602, message: 'Tool secret not found' }, `${way}: refused as unknown`)
  }

  // /mcp
  const aggregate = await mcpClient(t, `${base}/mcp`)
  const names = (await aggregate.listTools()).tools.map(tool => tool.name)
  t.notOk(names.includes('probe_secret'), '/mcp: hidden')
  t.ok(names.includes('probe_open'))
  await t.rejects(aggregate.callTool({ name: 'probe_secret', arguments: {} }), { code: -32602, message: /Tool probe_secret not found/ }, '/mcp: refused as unknown, under the name the client used')
  t.notOk((await aggregate.listPrompts()).prompts.some(p => p.name === 'probe_hidden'))
  t.notOk((await aggregate.listResources()).resources.some(r => r.uri === 'probe://private'))
  await t.rejects(aggregate.readResource({ uri: 'probe://private' }), { code: -32602 })

  t.equal(reached.secret, 0, 'the in-process server never saw a call of secret')

  // a stdio upstream, through its own routes, its endpoint and /mcp
  const up = upstreamGateway.base
  t.same((await (await fetch(`${up}/fixture/tools`)).json()).tools.map((tool: { name: string }) => tool.name), ['add', 'whoami'])
  t.match(await (await fetch(`${up}/fixture/tools/block`, { method: 'POST', headers: json, body: '{"label":"rest"}' })).json(), { statusCode: 404, code: 'GW_ERR_TOOL_NOT_FOUND' })
  const upSession = await mcpClient(t, `${up}/fixture/mcp`)
  t.same((await upSession.listTools()).tools.map(tool => tool.name), ['add', 'whoami'])
  await t.rejects(upSession.callTool({ name: 'block', arguments: { label: 'session' } }), { code: -32602, message: /Tool block not found/ })
  t.match((await modern(`${up}/fixture/mcp`, 'tools/call', { name: 'block', arguments: { label: 'modern' } })).error, { code: -32602 })
  const upAggregate = await mcpClient(t, `${up}/mcp`)
  t.notOk((await upAggregate.listTools()).tools.some(tool => tool.name === 'fixture_block'))
  await t.rejects(upAggregate.callTool({ name: 'fixture_block', arguments: { label: 'aggregate' } }), { code: -32602 })
  t.notOk(upstreamGateway.log.some(line => line.includes('block started')), 'the stdio server never saw a call of block')
  t.notOk(log.some(line => line.includes('block started')))
})

t.test("the caller's identity reaches in-process tools as ctx.http.authInfo, on every way in", async t => {
  const identities: Array<string | undefined> = []
  const recorder: CallFilter = { name: 'recorder', observe: call => { if (call.method === 'tools/call') identities.push(call.identity?.clientId) } }
  const probe = probeServer({ secret: 0 })
  const { base } = await start(t, { filters: [recorder], servers: [{ name: 'probe', factory: probe }, { name: 'probe-stateless', factory: probe, stateless: true }] })
  const as = { 'x-test-user': 'ada' }

  t.same(await (await fetch(`${base}/probe/tools/whoami`, { method: 'POST', headers: { ...json, ...as }, body: '{}' })).json(), { content: [{ type: 'text', text: 'ada' }] }, 'REST')
  t.equal((await legacy(`${base}/probe-stateless/mcp`, 'tools/call', { name: 'whoami', arguments: {} }, as)).result.content[0].text, 'ada', '2025 stateless lane')
  t.equal((await modern(`${base}/probe/mcp`, 'tools/call', { name: 'whoami', arguments: {} }, as)).result.content[0].text, 'ada', '2026-07-28 lane')
  const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }
  const opened = await fetch(`${base}/probe/mcp`, { method: 'POST', headers: { ...mcpHeaders, ...as }, body: JSON.stringify(init) })
  const sessionId = opened.headers.get('mcp-session-id') as string
  await opened.text()
  const inSession = await legacy(`${base}/probe/mcp`, 'tools/call', { name: 'whoami', arguments: {} }, { ...as, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' })
  t.equal(inSession.result.content[0].text, 'ada', '2025 session')
  const aggregate = await legacy(`${base}/mcp`, 'initialize', init.params, as)
  t.ok(aggregate.result, '/mcp initialized')
  t.equal((await modern(`${base}/mcp`, 'tools/call', { name: 'probe_whoami', arguments: {} }, as)).result.content[0].text, 'ada', '/mcp')
  t.equal((await modern(`${base}/probe/mcp`, 'tools/call', { name: 'whoami', arguments: {} })).result.content[0].text, 'nobody', 'no identity, no authInfo')
  t.same(identities, ['ada', 'ada', 'ada', 'ada', 'ada', undefined], 'the filters saw the same caller')
})

t.test('a refusal by a filter is shaped for the way in; an observer that throws never changes the answer; an allows that throws denies', async t => {
  const refuser: CallFilter = { name: 'refuser', admit: call => { if (call.name === 'open') throw new ForbiddenHostError('not today') } }
  const broken: CallFilter = { name: 'broken', observe: () => { throw new Error('observer bug') }, allows: call => { if (call.name === 'whoami') throw new Error('policy bug'); return true } }
  const { base, log } = await start(t, { filters: [broken, refuser], servers: [{ name: 'probe', factory: probeServer({ secret: 0 }) }] })
  t.match(await (await fetch(`${base}/probe/tools/open`, { method: 'POST', headers: json, body: '{}' })).json(), { statusCode: 403, code: 'GW_ERR_FORBIDDEN_ORIGIN', message: 'Forbidden: not today' }, 'REST: the catalogue body')
  t.match((await modern(`${base}/probe/mcp`, 'tools/call', { name: 'open', arguments: {} })).error, { code: -32000, message: 'Forbidden: not today', data: { code: 'GW_ERR_FORBIDDEN_ORIGIN' } }, 'MCP: a JSON-RPC error carrying the code')
  t.same(await (await fetch(`${base}/probe/tools/secret`, { method: 'POST', headers: json, body: '{}' })).json(), { content: [{ type: 'text', text: 'secret' }] }, 'answered although every observer throws')
  t.ok(log.some(line => line.includes('call observer failed') && line.includes('observer bug')), 'the observer failure is logged')
  t.equal((await fetch(`${base}/probe/tools/whoami`, { method: 'POST', headers: json, body: '{}' })).status, 404, 'a policy that cannot decide denies')
})

t.test('without a filter nothing is wrapped; filters are fixed once the gateway is ready', async t => {
  const pipeline = new CallPipeline()
  const server = createGreetServer({})
  const handlers = (server.server as unknown as { _requestHandlers: Map<string, unknown> })._requestHandlers
  t.ok(handlers instanceof Map, 'the SDK keeps its handlers where the pipeline installs its filters')
  const before = handlers.get('tools/call')
  t.equal(pipeline.wrapServer(server, { server: 'greet', scope: 'shared' }), server)
  t.equal(handlers.get('tools/call'), before, 'untouched without a filter')
  pipeline.add({ name: 'x', observe: () => {} })
  pipeline.wrapServer(server, { server: 'greet', scope: 'shared' })
  t.not(handlers.get('tools/call'), before, 'wrapped with one')
  pipeline.freeze()
  t.throws(() => { pipeline.add({ name: 'late' }) }, { code: 'GW_ERR_INVALID_OPTIONS' })
  const bare = { _requestHandlers: undefined } as unknown as McpServer
  const other = new CallPipeline()
  other.add({ name: 'x', observe: () => {} })
  t.throws(() => other.wrapServer(bare, { server: 'x', scope: 'shared' }), { code: 'GW_ERR_INTERNAL' }, 'an SDK without the map fails loudly rather than let calls bypass the filters')
})
