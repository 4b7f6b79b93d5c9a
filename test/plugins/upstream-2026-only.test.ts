import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { AuthInfo } from '@modelcontextprotocol/server'
import { parseConfig } from '../../src/config.js'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import { GATEWAY_INFO } from '../../src/defaults.js'
import { startModernOnly, type ModernOnlyOptions, type ModernOnlyServer, type SeenRequest } from '../fixtures/modern-only.js'
import { alive, json, legacyRequest, listen, listenAs, mcpClient, mcpHeaders, text } from '../helper.js'

// An upstream that speaks only 2026-07-28 (the SDK v2's HTTP entry with `legacy: 'reject'`,
// and its stdio entry likewise): the gateway finds that out by probing first, and serves it
// to every kind of client it has. What the upstream received is read from its own records.

const stdioOnly = fileURLToPath(new URL('../fixtures/stdio-modern-only.mjs', import.meta.url))

async function upstream (t: Test, options: ModernOnlyOptions = {}): Promise<ModernOnlyServer> {
  const server = await startModernOnly(options)
  t.teardown(() => server.close())
  return server
}

/** A gateway with the upstream mounted as `modern` and, unless `once`, again as `flat`, stateless, for 2025 clients without a session. */
async function gatewayFor (t: Test, url: string, once = false): Promise<string> {
  const config = parseConfig(JSON.stringify({ mcpServers: { modern: { url }, ...(!once && { flat: { url, stateless: true } }) } }), 'gateway.json')
  return (await listen(t, { config })).base
}

/** A 2026-07-28 client (SDK v2) that answers elicitations with `name`. */
async function modernClient (t: Test, url: string, name = 'Grace'): Promise<Client> {
  const client = new Client({ name: 'modern-test', version: '1.0.0' }, {
    capabilities: { elicitation: { form: {} } },
    versionNegotiation: { mode: { pin: '2026-07-28' } }
  })
  client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name } }))
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

const rest = async (base: string, tool: string, args: unknown): Promise<Response> => await fetch(`${base}/tools/${tool}`, { method: 'POST', headers: json, body: JSON.stringify(args) })
const meta = (request: SeenRequest | undefined): Record<string, any> => request?.params._meta ?? {}
const calls = (server: ModernOnlyServer, tool: string): SeenRequest[] => server.of('tools/call').filter(request => request.params.name === tool)

t.test('a 2026-07-28-only HTTP upstream comes up and serves REST, 2025 sessions and stateless clients, 2026-07-28 clients and /mcp', async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  t.match(await (await fetch(`${base}/ready`)).json(), { status: 'ready', servers: [{ name: 'modern', state: 'up' }, { name: 'flat', state: 'up' }] })
  t.equal(server.seen[0]?.method, 'server/discover', 'the gateway probed in 2026-07-28 first')
  t.equal(server.of('initialize').length, 0, 'and, having found it, never sent a 2025 request')

  const byRest = await rest(`${base}/modern`, 'echo', { message: 'over REST' })
  t.equal(byRest.status, 200)
  t.equal(text(await byRest.json()), 'over REST')

  const session = await mcpClient(t, `${base}/modern/mcp`, 'session')
  t.equal(text(await session.callTool({ name: 'echo', arguments: { message: 'in a 2025 session' } })), 'in a 2025 session')

  const stateless = await fetch(`${base}/flat/mcp`, legacyRequest('tools/call', { name: 'echo', arguments: { message: 'stateless' } }))
  t.equal(stateless.status, 200)
  t.equal(text((await stateless.json() as { result: unknown }).result), 'stateless')

  const modern = await modernClient(t, `${base}/modern/mcp`)
  t.equal(text(await modern.callTool({ name: 'echo', arguments: { message: 'in 2026-07-28' } })), 'in 2026-07-28')

  const aggregate = await mcpClient(t, `${base}/mcp`, 'aggregate')
  t.equal(text(await aggregate.callTool({ name: 'modern_echo', arguments: { message: 'through /mcp' } })), 'through /mcp')

  // What the upstream saw: every request in 2026-07-28, named in the standard headers, with
  // the gateway's own client info in its `_meta`.
  const requests = server.seen.filter(request => request.id !== undefined)
  t.ok(requests.length > 6)
  for (const request of requests) {
    t.equal(request.headers['mcp-protocol-version'], '2026-07-28', `${request.method}: MCP-Protocol-Version`)
    t.equal(request.headers['mcp-method'], request.method, `${request.method}: Mcp-Method`)
    t.equal(meta(request)['io.modelcontextprotocol/protocolVersion'], '2026-07-28', `${request.method}: the version in _meta`)
    t.same(meta(request)['io.modelcontextprotocol/clientInfo'], GATEWAY_INFO, `${request.method}: the gateway's client info`)
  }
  const echoes = calls(server, 'echo')
  t.same(echoes.map(request => request.params.arguments.message), ['over REST', 'in a 2025 session', 'stateless', 'in 2026-07-28', 'through /mcp'])
  t.ok(echoes.every(request => request.headers['mcp-name'] === 'echo'), 'Mcp-Name names the tool')
  // The capabilities the gateway can honour for each caller: none without a client to ask,
  // the questions a 2025 session declared, a 2026-07-28 client's own.
  // (The SDK reads a 2025 client's `elicitation: {}` as form mode, as the spec says.)
  const session2025 = { elicitation: { form: {} }, sampling: {} }
  t.same(echoes.map(request => meta(request)['io.modelcontextprotocol/clientCapabilities']), [{}, session2025, {}, { elicitation: { form: {} } }, session2025])
})

t.test("designated arguments go in Mcp-Param-* headers, encoded as the spec says, and a null one is left out", async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  const byRest = await rest(`${base}/modern`, 'in-region', { region: 'eu-west', priority: 3, verbose: false, note: ' späce ', query: 'not mirrored' })
  t.equal(byRest.status, 200, 'the upstream checked the headers and took the call')
  t.match(text(await byRest.json()), /"region":"eu-west"/)
  const [first] = calls(server, 'in-region')
  t.equal(first?.headers['mcp-param-region'], 'eu-west')
  t.equal(first?.headers['mcp-param-priority'], '3')
  t.equal(first?.headers['mcp-param-verbose'], 'false')
  t.equal(first?.headers['mcp-param-note'], `=?base64?${Buffer.from(' späce ').toString('base64')}?=`, 'spaces at either end and non-ASCII text go Base64-wrapped')
  t.equal(first?.headers['mcp-param-query'], undefined, 'an argument without x-mcp-header is not mirrored')

  const session = await mcpClient(t, `${base}/modern/mcp`)
  await session.callTool({ name: 'in-region', arguments: { region: 'ap-south', verbose: null } })
  const second = calls(server, 'in-region')[1]
  t.equal(second?.headers['mcp-param-region'], 'ap-south')
  t.notOk('mcp-param-verbose' in (second?.headers ?? {}), 'null sends no header')
  t.notOk('mcp-param-priority' in (second?.headers ?? {}), 'an absent argument sends no header')
})

t.test('a tool whose header declarations are invalid is left out of every list and cannot be called; the valid ones stay', async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  const names = (tools: Array<{ name: string }>): string[] => tools.map(tool => tool.name).sort()
  const expected = ['echo', 'greet-me', 'in-region', 'survey']
  t.same(names((await (await fetch(`${base}/modern/tools`)).json() as { tools: Array<{ name: string }> }).tools), expected, 'REST')
  const session = await mcpClient(t, `${base}/modern/mcp`)
  t.same(names((await session.listTools()).tools), expected, 'a 2025 session')
  const aggregate = await mcpClient(t, `${base}/mcp`, 'aggregate')
  t.same(names((await aggregate.listTools()).tools).filter(name => name.startsWith('modern_')), expected.map(name => `modern_${name}`), '/mcp')
  t.equal((await rest(`${base}/modern`, 'bad-headers', { a: 'x' })).status, 404)
  await t.rejects(session.callTool({ name: 'bad-headers', arguments: { a: 'x' } }), /bad-headers not found/)
  t.equal(calls(server, 'bad-headers').length, 0, 'no call reached the upstream')
})

t.test("an upstream's question reaches a 2025 session as a server→client request, and its answer goes back with the requestState as it came", async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  const [ada, bob] = await Promise.all([
    mcpClient(t, `${base}/modern/mcp`, 'ada', { elicit: 'Ada', sample: 'hello there' }),
    mcpClient(t, `${base}/modern/mcp`, 'bob', { elicit: 'Bob' })
  ])
  // Two sessions at once on the one shared connection, and an unrelated call beside the round.
  const [fromAda, fromBob, echoed] = await Promise.all([
    ada.callTool({ name: 'greet-me', arguments: {} }),
    bob.callTool({ name: 'greet-me', arguments: {} }),
    ada.callTool({ name: 'echo', arguments: { message: 'meanwhile' } })
  ])
  t.equal(text(fromAda), 'Hello, Ada!', "the upstream got Ada's answer, and its own requestState back unchanged")
  t.equal(text(fromBob), 'Hello, Bob!')
  t.equal(text(echoed), 'meanwhile')

  const greets = calls(server, 'greet-me')
  t.equal(greets.length, 4, 'a first call and one retry per session')
  const retries = greets.filter(request => request.params.inputResponses !== undefined)
  t.equal(retries.length, 2)
  for (const retry of retries) {
    t.match(retry.params.inputResponses, { name: { action: 'accept', content: { name: /^(Ada|Bob)$/ } } })
    t.match(retry.params.requestState, /^greet\/.+\+=\?&é$/)
  }
  const ids = greets.map(request => request.id)
  t.equal(new Set(ids).size, ids.length, 'each retry is a new JSON-RPC request')
  t.notOk(calls(server, 'echo').some(request => 'inputResponses' in request.params || 'requestState' in request.params), 'the answers went with their own call only')

  // Two questions in one round: both asked, both answered in the one retry.
  t.equal(text(await ada.callTool({ name: 'survey', arguments: {} })), 'Ada says hello there')
  t.match(calls(server, 'survey').at(-1)?.params, { inputResponses: { name: { action: 'accept' }, sentence: { content: { text: 'hello there' } } } })
})

t.test('over REST a question has no client to ask: the documented error, and the upstream is told nothing can be asked', async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  const res = await rest(`${base}/modern`, 'greet-me', {})
  t.equal(res.status, 422)
  t.match(await res.json(), { code: 'GW_ERR_TOOL_ERROR', isError: true, content: [{ text: /came over the gateway's REST API, which has no client to ask/ }] })
  t.same(meta(calls(server, 'greet-me')[0])['io.modelcontextprotocol/clientCapabilities'], {})
})

t.test("a 2026-07-28 client gets the upstream's input_required itself, and answers it", async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, server.url)
  const client = await modernClient(t, `${base}/modern/mcp`, 'Grace')
  t.equal(text(await client.callTool({ name: 'greet-me', arguments: {} })), 'Hello, Grace!')

  // The raw exchange: the round reaches the client as the upstream put it.
  const res = await fetch(`${base}/modern/mcp`, {
    method: 'POST',
    headers: { ...mcpHeaders, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'greet-me' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'greet-me', arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': { elicitation: {} } } } })
  })
  const body = await res.json() as { result: { resultType: string, requestState: string, inputRequests: Record<string, unknown> } }
  t.equal(body.result.resultType, 'input_required')
  t.match(body.result.requestState, /^greet\//, "the upstream's own requestState")
  t.ok(body.result.inputRequests.name)
})

t.test("list results' ttlMs are honoured: a list within its ttl does not reach the upstream, after it does", async t => {
  const cached = await upstream(t, { toolsCache: { ttlMs: 2000, cacheScope: 'public' } })
  const base = await gatewayFor(t, cached.url, true)
  const listedAtStart = cached.of('tools/list').length
  const session = await mcpClient(t, `${base}/modern/mcp`)
  await session.listTools()
  await session.listTools()
  t.equal(cached.of('tools/list').length, listedAtStart, 'within the ttl the gateway answers from its own list')
  // A list in use is listed again when its ttl runs out: the upstream sees it.
  const relisted = cached.next('tools/list')
  await relisted
  t.equal(cached.of('tools/list').length, listedAtStart + 1)
  await session.listTools()
  t.equal(cached.of('tools/list').length, listedAtStart + 1, 'fresh again for another ttl')

  // The SDK's default hint (ttlMs 0) is stale at once: every tools/list reaches the upstream.
  const uncached = await upstream(t)
  const other = await gatewayFor(t, uncached.url, true)
  const before = uncached.of('tools/list').length
  const client = await mcpClient(t, `${other}/modern/mcp`)
  await client.listTools()
  await client.listTools()
  t.equal(uncached.of('tools/list').length, before + 2)
})

t.test('a private list is kept per caller while identities are forwarded', async t => {
  const server = await upstream(t, { toolsCache: { ttlMs: 60_000, cacheScope: 'private' } })
  const connection = new UpstreamConnection('modern', { transport: { kind: 'http', url: server.url, headers: {} } })
  connection.forwardIdentity({ 'x-user': 'id' })
  const { base } = await listenAs(t, { servers: [{ name: 'modern', connection }] })
  const identity = (clientId: string): AuthInfo => ({ token: '', clientId, scopes: [] })
  const list = async (clientId: string): Promise<string[]> => {
    const client = new LegacyClient({ name: clientId, version: '1.0.0' })
    await client.connect(new LegacyTransport(new URL(`${base}/modern/mcp`), { requestInit: { headers: { 'x-test-identity': JSON.stringify(identity(clientId)) } } }))
    t.teardown(() => client.close())
    return (await client.listTools()).tools.map(tool => tool.name)
  }
  const before = server.of('tools/list').length
  t.ok((await list('bob')).includes('bobs-tool'), "bob gets his own list")
  t.notOk((await list('alice')).includes('bobs-tool'), "alice never gets bob's")
  t.equal(server.of('tools/list').length, before + 2, 'one list per caller')
  t.ok((await list('bob')).includes('bobs-tool'))
  t.equal(server.of('tools/list').length, before + 2, "bob's list is kept for its ttl")
  t.same(server.of('tools/list').slice(before).map(request => request.headers['x-user']), ['bob', 'alice'])
})

t.test("an HTTP server that speaks both revisions (the SDK v2's default) is served in 2026-07-28 to every client", async t => {
  const server = await upstream(t, { legacy: 'stateless' })
  const base = await gatewayFor(t, server.url)
  t.equal(server.of('initialize').length, 0, 'a client that found 2026-07-28 over HTTP stays in it')
  const session = await mcpClient(t, `${base}/modern/mcp`, 'session', { elicit: 'Ada' })
  t.equal(text(await session.callTool({ name: 'greet-me', arguments: {} })), 'Hello, Ada!', 'its 2025 side, stateless, could not have asked a 2025 session; its 2026-07-28 side can')
  t.equal(text(await (await rest(`${base}/modern`, 'echo', { message: 'hi' })).json()), 'hi')
  t.ok(server.of('tools/call').every(request => request.headers['mcp-protocol-version'] === '2026-07-28'), 'every call in 2026-07-28')
})

/**
 * The upstream behind a proxy that answers a `tools/call` of `echo` with `message: 'answer badly'`
 * itself, with a result the SDK client refuses (a `resultType` 2026-07-28 does not define), and passes
 * everything else through as it streams.
 */
async function badAnswerProxy (t: Test, url: string): Promise<string> {
  const proxy = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const message = body.length === 0 ? undefined : JSON.parse(body.toString('utf8'))
      if (message?.method === 'tools/call' && message.params?.arguments?.message === 'answer badly') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { resultType: 'frobnicated', content: [{ type: 'text', text: 'an unknown resultType' }] } }))
        return
      }
      const headers = Object.fromEntries(Object.entries(req.headers).filter((entry): entry is [string, string] => typeof entry[1] === 'string' && entry[0] !== 'host' && entry[0] !== 'content-length'))
      fetch(url, { method: req.method, headers, ...(body.length > 0 && { body }) }).then(answer => {
        res.writeHead(answer.status, Object.fromEntries(answer.headers))
        if (answer.body === null) res.end()
        else Readable.fromWeb(answer.body as Parameters<typeof Readable.fromWeb>[0]).on('error', () => res.destroy()).pipe(res)
      }, () => res.destroy())
    })
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  t.teardown(async () => {
    proxy.closeAllConnections()
    await new Promise(resolve => proxy.close(resolve))
  })
  return `http://127.0.0.1:${(proxy.address() as { port: number }).port}/mcp`
}

t.test('one answer the SDK client refuses fails that call with a 502, and the upstream stays up for the next', async t => {
  const server = await upstream(t)
  const base = await gatewayFor(t, await badAnswerProxy(t, server.url), true)
  const bad = await rest(`${base}/modern`, 'echo', { message: 'answer badly' })
  t.equal(bad.status, 502)
  t.match(await bad.json(), { code: 'GW_ERR_UPSTREAM' })
  t.match(await (await fetch(`${base}/ready`)).json(), { status: 'ready', servers: [{ name: 'modern', state: 'up' }] }, 'a bad answer is not a lost connection')
  const modern = await modernClient(t, `${base}/modern/mcp`)
  await t.rejects(modern.callTool({ name: 'echo', arguments: { message: 'answer badly' } }), { code: -32603 }, 'an MCP client gets an internal error for that call')
  const next = await rest(`${base}/modern`, 'echo', { message: 'fine' })
  t.equal(next.status, 200)
  t.equal(text(await next.json()), 'fine')
  t.equal(calls(server, 'echo').length, 1, 'the next call reached the upstream on the same connection')
})

t.test('a 2026-07-28-only stdio upstream is one child, for REST, 2025 sessions and 2026-07-28 clients alike', async t => {
  const config = parseConfig(JSON.stringify({ mcpServers: { only: { command: process.execPath, args: [stdioOnly] } } }), 'gateway.json')
  const { app, base } = await listen(t, { config })
  const byRest = await rest(`${base}/only`, 'pid', {})
  t.equal(byRest.status, 200)
  const pid = Number(text(await byRest.json()))
  const session = await mcpClient(t, `${base}/only/mcp`, 'session', { elicit: 'Ada' })
  const modern = await modernClient(t, `${base}/only/mcp`, 'Grace')
  t.same(await Promise.all([session, modern].map(async client => Number(text(await client.callTool({ name: 'pid', arguments: {} }))))), [pid, pid])
  t.equal(text(await session.callTool({ name: 'greet-me', arguments: {} })), 'Hello, Ada!', 'a 2025 session is asked, and the requestState goes back as it came')
  t.equal(text(await modern.callTool({ name: 'greet-me', arguments: {} })), 'Hello, Grace!')
  await session.close()
  await modern.close()
  await app.close()
  t.notOk(alive(pid), 'the child is gone')
})
