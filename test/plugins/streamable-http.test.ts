import t, { type Test } from 'tap'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { listen } from '../helper.js'
import { builtinEntries } from '../../src/app.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createAskingServer } from '../fixtures/servers.js'

const mcpAccept = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }

async function legacyClient (t: Test, url: string): Promise<{ client: LegacyClient, transport: LegacyTransport }> {
  const client = new LegacyClient({ name: 'legacy-test', version: '1.0.0' })
  const transport = new LegacyTransport(new URL(url))
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport }
}

t.test('a 2025-era client gets a session: list, call, DELETE', async t => {
  const { base } = await listen(t)
  const { client, transport } = await legacyClient(t, `${base}/greet/mcp`)
  t.type(transport.sessionId, 'string', 'the gateway issued an Mcp-Session-Id')
  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name), ['echoHai'])
  const result = await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })
  t.same(result.content, [{ type: 'text', text: 'Hello, Ada!' }])

  const sessionId = transport.sessionId as string
  await transport.terminateSession()
  const stale = await fetch(`${base}/greet/mcp`, {
    method: 'POST',
    headers: { ...mcpAccept, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' })
  })
  t.equal(stale.status, 404, 'a deleted session is gone')
  t.match(await stale.json(), { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' } })
})

t.test('a request without a session that is not initialize answers 400', async t => {
  const { base } = await listen(t)
  const res = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: mcpAccept, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
  t.equal(res.status, 400)
  t.match(await res.json(), { jsonrpc: '2.0', error: { message: /Mcp-Session-Id/ } })
})

t.test('a 2026-07-28 client lists and calls tools on the same URL', async t => {
  const { base } = await listen(t)
  const client = new Client({ name: 'modern-test', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/math/mcp`)))
  t.teardown(() => client.close())
  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name), ['add'])
  const result = await client.callTool({ name: 'add', arguments: { a: 2, b: 40 } })
  t.same(result.structuredContent, { sum: 42 })
  t.same(result.content, [{ type: 'text', text: '42' }])
})

t.test('stateless mode keeps no session, for either era', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, stateless: true }] })
  const { client, transport } = await legacyClient(t, `${base}/greet/mcp`)
  t.equal(transport.sessionId, undefined, 'no Mcp-Session-Id was issued')
  const first = await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })
  const second = await client.callTool({ name: 'echoHai', arguments: { userName: 'Grace' } })
  t.same([first.content, second.content], [[{ type: 'text', text: 'Hello, Ada!' }], [{ type: 'text', text: 'Hello, Grace!' }]])
  const get = await fetch(`${base}/greet/mcp`, { headers: { accept: 'text/event-stream' } })
  t.equal(get.status, 405, 'no standalone stream without sessions')
  await get.body?.cancel()

  const modern = new Client({ name: 'modern-test', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } })
  await modern.connect(new StreamableHTTPClientTransport(new URL(`${base}/greet/mcp`)))
  t.teardown(() => modern.close())
  t.same((await modern.callTool({ name: 'echoHai', arguments: { userName: 'Lin' } })).content, [{ type: 'text', text: 'Hello, Lin!' }])
})

t.test('a server→client request reaches the session that caused it', async t => {
  const { base } = await listen(t, { servers: [{ name: 'asker', factory: createAskingServer }] })
  const client = new LegacyClient({ name: 'legacy-test', version: '1.0.0' }, { capabilities: { elicitation: {} } })
  client.setRequestHandler(ElicitRequestSchema, async request => {
    t.equal(request.params.message, 'What is your name?')
    return { action: 'accept', content: { name: 'Grace' } }
  })
  await client.connect(new LegacyTransport(new URL(`${base}/asker/mcp`)))
  t.teardown(() => client.close())
  const result = await client.callTool({ name: 'askName', arguments: {} })
  t.same(result.content, [{ type: 'text', text: 'Hello, Grace!' }])
})

t.test('closing the app ends open sessions and their streams', async t => {
  const { app, base } = await listen(t, { servers: builtinEntries() })
  const init = await fetch(`${base}/greet/mcp`, {
    method: 'POST',
    headers: mcpAccept,
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
  })
  const sessionId = init.headers.get('mcp-session-id') as string
  await init.body?.cancel()
  const session = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' }
  const initialized = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...mcpAccept, ...session }, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  t.equal(initialized.status, 202)
  const stream = await fetch(`${base}/greet/mcp`, { headers: { accept: 'text/event-stream', ...session } })
  t.equal(stream.status, 200, 'a standalone SSE stream is open')
  const reader = (stream.body as ReadableStream<Uint8Array>).getReader()
  const ended = (async () => { while (!(await reader.read()).done); })()
  // Without preClose ending the stream, close() would wait on it for ever.
  await app.close()
  t.equal(app.server.listening, false)
  await ended
  t.pass('the stream ended')
})
