import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { McpServer as LegacyMcpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport as LegacyServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import * as z from 'zod'
import gateway from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { alive, listen, mcpClient, text } from '../helper.js'

// 2026-07-28 clients behind the gateway: an upstream that speaks that revision asks its
// clients for input with `input_required` results, which the gateway passes to the client
// that made the call; one that speaks only 2025 serves them over its 2025-era connection.

const require = createRequire(import.meta.url)
const ask = fileURLToPath(new URL('../fixtures/stdio-ask-server.mjs', import.meta.url))
const everything = require.resolve('@modelcontextprotocol/server-everything/dist/index.js')
const mcpHeaders = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
const modernMeta = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'modern-test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {}
}

async function gatewayFor (t: Test, servers: Record<string, unknown>): Promise<{ base: string, close: () => Promise<void> }> {
  const { app, base } = await listen(t, { config: parseConfig(JSON.stringify({ mcpServers: servers }), 'gateway.json') })
  return { base, close: async () => { await app.close() } }
}

/** A 2026-07-28 client that answers elicitations with `name`. */
async function modernClient (t: Test, url: string, name?: string): Promise<Client> {
  const client = new Client({ name: 'modern-test', version: '1.0.0' }, {
    capabilities: name === undefined ? {} : { elicitation: { form: {} } },
    versionNegotiation: { mode: { pin: '2026-07-28' } }
  })
  if (name !== undefined) client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name } }))
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

/** One raw 2026-07-28 tools/call; the JSON-RPC messages of its answer, JSON or SSE. */
async function modernCall (url: string, name: string, args: Record<string, unknown>, meta: Record<string, unknown> = {}, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<{ status: number, messages: Array<Record<string, any>> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { ...mcpHeaders, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name, ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args, _meta: { ...modernMeta, ...meta }, ...extra } })
  })
  const body = await res.text()
  const messages = res.headers.get('content-type')?.includes('text/event-stream') === true
    ? body.split('\n').filter(line => line.startsWith('data: ')).map(line => JSON.parse(line.slice(6)))
    : [JSON.parse(body)]
  return { status: res.status, messages }
}

t.test('a 2026-07-28 upstream asks each 2026-07-28 client for its own input, over one shared connection', async t => {
  const { base } = await gatewayFor(t, { ask: { command: process.execPath, args: [ask] } })
  const [alice, bob] = await Promise.all([modernClient(t, `${base}/ask/mcp`, 'Alice'), modernClient(t, `${base}/ask/mcp`, 'Bob')])
  const answers = await Promise.all([alice, bob, alice, bob].map(async client => text(await client.callTool({ name: 'greet-me', arguments: {} }))))
  t.same(answers, ['Hello, Alice!', 'Hello, Bob!', 'Hello, Alice!', 'Hello, Bob!'])

  // The raw exchange: the input_required result reaches the client as the upstream sent it.
  const first = await modernCall(`${base}/ask/mcp`, 'greet-me', {}, { 'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} } } })
  t.match(first.messages.at(-1), { id: 1, result: { resultType: 'input_required', inputRequests: { name: { method: 'elicitation/create' } } } })
  const refused = await modernCall(`${base}/ask/mcp`, 'greet-me', {})
  t.match(refused.messages.at(-1), { error: { code: -32021 } }, 'a client that declared no elicitation is not asked')

  // A 2025-era session on the same upstream is asked with a server→client request.
  const legacy = await mcpClient(t, `${base}/ask/mcp`, 'legacy', { elicit: 'Ada' })
  t.equal(text(await legacy.callTool({ name: 'greet-me', arguments: {} })), 'Hello, Ada!')
})

t.test('log messages reach a 2026-07-28 client only when its request names a level, and only at or above it', async t => {
  const { base } = await gatewayFor(t, { ask: { command: process.execPath, args: [ask] }, everything: { command: process.execPath, args: [everything, 'stdio'] } })
  const logs = (messages: Array<Record<string, any>>): string[] => messages.filter(message => message.method === 'notifications/message').map(message => message.params.level)

  const silent = await modernCall(`${base}/ask/mcp`, 'chatty', {})
  t.same(logs(silent.messages), [], 'no level, no log messages')
  t.match(silent.messages.at(-1), { result: { content: [{ text: 'done' }] } })
  const info = await modernCall(`${base}/ask/mcp`, 'chatty', {}, { 'io.modelcontextprotocol/logLevel': 'info' })
  t.same(logs(info.messages), ['info', 'error'])

  // A 2025-only upstream logs by its own level; the gateway applies the client's.
  const legacySilent = await modernCall(`${base}/everything/mcp`, 'trigger-long-running-operation', { duration: 0.1, steps: 1 })
  t.same(logs(legacySilent.messages), [])
  t.match(legacySilent.messages.at(-1), { result: { content: [{ type: 'text' }] } })
})

t.test("a 2025-only upstream's questions reach a 2026-07-28 client as input_required rounds", async t => {
  const { base } = await gatewayFor(t, { everything: { command: process.execPath, args: [everything, 'stdio'] } })
  const url = `${base}/everything/mcp`
  const client = await modernClient(t, url, 'Ada')
  t.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'hi' } })), 'Echo: hi')
  t.match(text(await client.callTool({ name: 'trigger-elicitation-request', arguments: {} })), /Ada/, 'the SDK client answered the round itself')

  // The raw rounds: the question, then the answer with the requestState that continues the call.
  const elicit = { 'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} } } }
  const first = await modernCall(url, 'trigger-elicitation-request', {}, elicit)
  const asked = first.messages.at(-1)?.result as { resultType: string, inputRequests: Record<string, { method: string }>, requestState: string }
  t.equal(asked.resultType, 'input_required')
  const [[id, question]] = Object.entries(asked.inputRequests) as Array<[string, { method: string }]>
  t.equal(question.method, 'elicitation/create')
  const answered = await modernCall(url, 'trigger-elicitation-request', {}, elicit, {}, { inputResponses: { [id]: { action: 'accept', content: { name: 'Grace', check: true, firstLine: 'x', integer: 1, number: 1, enum: 'option1' } } }, requestState: asked.requestState })
  t.match(text(answered.messages.at(-1)?.result), /Name: Grace/)

  const again = await modernCall(url, 'trigger-elicitation-request', {}, elicit, {}, { inputResponses: { [id]: { action: 'accept', content: {} } }, requestState: asked.requestState })
  t.match(again.messages.at(-1), { error: { code: -32602, message: /expired requestState/ } }, 'a finished call cannot be continued')

  const undeclared = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi' } })
  t.match(text(undeclared), /did not declare the sampling capability/, 'a question the client did not declare is refused to the upstream')
})

t.test('Mcp-Param-* headers that disagree with the arguments are refused with 400 and -32020', async t => {
  const { base } = await gatewayFor(t, { ask: { command: process.execPath, args: [ask] } })
  const url = `${base}/ask/mcp`
  const wrong = await modernCall(url, 'in-region', { region: 'eu-west' }, {}, { 'mcp-param-region': 'us-east' })
  t.equal(wrong.status, 400)
  t.match(wrong.messages[0], { id: 1, error: { code: -32020, message: /Mcp-Param-Region/, data: { mismatch: { header: 'Mcp-Param-Region' } } } })
  const missing = await modernCall(url, 'in-region', { region: 'eu-west' })
  t.equal(missing.status, 400)
  t.match(missing.messages[0], { error: { code: -32020, message: /absent/ } })
  const right = await modernCall(url, 'in-region', { region: 'eu-west' }, {}, { 'mcp-param-region': 'eu-west' })
  t.equal(right.status, 200)
  t.match(right.messages.at(-1), { result: { content: [{ text: 'eu-west' }] } })
  const client = await modernClient(t, url)
  t.equal(text(await client.callTool({ name: 'in-region', arguments: { region: 'ap-south' } })), 'ap-south', 'the SDK client mirrors the header itself')
})

t.test('the 2026-07-28 connection of a stdio upstream is a second child, and neither outlives app.close()', async t => {
  const { base, close } = await gatewayFor(t, { ask: { command: process.execPath, args: [ask] } })
  const legacyPid = Number(text(await (await fetch(`${base}/ask/tools/pid`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).json()))
  const client = await modernClient(t, `${base}/ask/mcp`)
  const modernPid = Number(text(await client.callTool({ name: 'pid', arguments: {} })))
  t.not(modernPid, legacyPid)
  t.ok(alive(legacyPid) && alive(modernPid))
  await client.close()
  await close()
  t.notOk(alive(legacyPid), 'the 2025-era child is gone')
  t.notOk(alive(modernPid), 'the 2026-07-28 child is gone')
})

t.test('closing the gateway ends its sessions with a 2025-only HTTP upstream (DELETE); one that speaks 2026-07-28 has none', async t => {
  const deletes: string[] = []
  const legacy = createHttpServer(legacyHttpUpstream(deletes))
  legacy.listen(0, '127.0.0.1')
  await once(legacy, 'listening')
  t.teardown(() => { legacy.closeAllConnections(); legacy.close() })
  const upstream = Fastify()
  upstream.addHook('onRequest', async request => { if (request.method === 'DELETE') deletes.push(request.url) })
  await upstream.register(gateway, { servers: [{ name: 'greet', factory: createGreetServer }] })
  await upstream.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => upstream.close())
  const port = (server: { address: () => unknown }): number => (server.address() as { port: number }).port
  const { base, close } = await gatewayFor(t, {
    old: { url: `http://127.0.0.1:${port(legacy)}/mcp` },
    remote: { url: `http://127.0.0.1:${port(upstream.server)}/greet/mcp` }
  })
  const client = await modernClient(t, `${base}/remote/mcp`)
  t.equal(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })), 'Hello, Ada!')
  const session = await mcpClient(t, `${base}/old/mcp`)
  t.equal(text(await session.callTool({ name: 'echo', arguments: { message: 'hi' } })), 'hi')
  await client.close()
  await session.close()
  await close()
  t.same(deletes, ['/mcp'], "the gateway's 2025-era session was ended; its 2026-07-28 connection has none")
})

/** A Streamable HTTP server built on the SDK 1.x, which speaks only 2025: one session per `initialize`. */
function legacyHttpUpstream (deletes: string[]): (req: IncomingMessage, res: ServerResponse) => void {
  const sessions = new Map<string, LegacyServerTransport>()
  return (req, res) => {
    if (req.method === 'DELETE') deletes.push(req.url ?? '')
    const id = req.headers['mcp-session-id']
    const transport = typeof id === 'string' ? sessions.get(id) : undefined
    const ready = transport !== undefined
      ? Promise.resolve(transport)
      : (async () => {
          const created: LegacyServerTransport = new LegacyServerTransport({ sessionIdGenerator: randomUUID, onsessioninitialized: sessionId => { sessions.set(sessionId, created) } })
          const server = new LegacyMcpServer({ name: 'legacy-http', version: '1.0.0' })
          server.registerTool('echo', { description: 'Echoes', inputSchema: { message: z.string() } }, async ({ message }) => ({ content: [{ type: 'text', text: message }] }))
          await server.connect(created)
          return created
        })()
    ready.then(async ready => { await ready.handleRequest(req, res) }).catch(() => { if (!res.headersSent) res.writeHead(500).end() })
  }
}
