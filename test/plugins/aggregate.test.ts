import t from 'tap'
import { fileURLToPath } from 'node:url'
import { acceptedContent, inputRequired, McpServer } from '@modelcontextprotocol/server'
import { build, listen, mcpClient, text } from '../helper.js'
import { namespacedName } from '../../src/connections/aggregate.js'
import { parseConfig } from '../../src/config.js'
import { createAskingServer } from '../fixtures/servers.js'

// The aggregated endpoint `/mcp`: every server's tools and prompts under one MCP endpoint.
// How they are named there (namespace, rename, collisions) is aggregate-naming.test.ts's.

const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))

t.test('names are <server><separator><name>, cut to 64 characters by a stable rule', async t => {
  t.equal(namespacedName('math', 'add'), 'math_add')
  t.equal(namespacedName('math', 'add', '.'), 'math.add')
  const long = namespacedName('files', 'x'.repeat(100))
  t.equal(long.length, 64)
  t.equal(long, namespacedName('files', 'x'.repeat(100)), 'the same name every time')
  t.not(long, namespacedName('files', `${'x'.repeat(99)}y`), 'names that share a long start stay apart')
  t.match(long, /^files_x+_[0-9a-f]{8}$/)
})

t.test('/mcp serves the built-in and upstream servers together, each call reaching its own server', async t => {
  const config = parseConfig(JSON.stringify({
    mcpServers: {
      greet: { builtin: 'greet' },
      math: { builtin: 'math' },
      fixture: { command: process.execPath, args: [fixture], tools: { deny: ['block'] } }
    }
  }), 'gateway.json')
  const { base } = await listen(t, { config })
  const client = await mcpClient(t, `${base}/mcp`, 'aggregate-test')
  const names = (await client.listTools()).tools.map(tool => tool.name).sort()
  t.same(names, ['fixture_add', 'fixture_whoami', 'greet_echoHai', 'math_add'])
  t.equal(text(await client.callTool({ name: 'greet_echoHai', arguments: { userName: 'Ada' } })), 'Hello, Ada!')
  const sum = await client.callTool({ name: 'math_add', arguments: { a: 2, b: 3 } })
  t.same(sum.structuredContent, { sum: 5 })
  t.equal(text(await client.callTool({ name: 'fixture_add', arguments: { a: 20, b: 22 } })), '42')
  await t.rejects(client.callTool({ name: 'fixture_block', arguments: { label: 'x' } }), /not found/, 'a denied tool is not there either')
  await t.rejects(client.callTool({ name: 'nobody_nothing', arguments: {} }), /not found/)
})

t.test('a resource URI two servers list is listed once, read from the first; an unknown URI is an error that names it', async t => {
  const make = (text: string) => () => {
    const server = new McpServer({ name: 'docs', version: '1.0.0' })
    server.registerResource('readme', 'docs://readme', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text }] }))
    server.registerResource(`only-${text}`, `docs://only/${text}`, { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text }] }))
    return server
  }
  const { base } = await listen(t, { servers: [{ name: 'first', factory: make('first') }, { name: 'second', factory: make('second') }] })
  const client = await mcpClient(t, `${base}/mcp`, 'aggregate-test')
  const uris = (await client.listResources()).resources.map(resource => resource.uri)
  t.same(uris, ['docs://readme', 'docs://only/first', 'docs://only/second'])
  const read = await client.readResource({ uri: 'docs://readme' })
  t.match(read.contents, [{ uri: 'docs://readme', text: 'first' }], 'the first server in order answers for it')
  t.match((await client.readResource({ uri: 'docs://only/second' })).contents, [{ text: 'second' }])
  const missing = await client.readResource({ uri: 'docs://nowhere' }).then(() => undefined, (err: unknown) => err)
  t.match(missing, { code: -32602, data: { uri: 'docs://nowhere' } }, 'as an in-process server answers it (SEP-2164)')
})

t.test('aggregate: false, or gateway.aggregate false in the config, leaves /mcp unrouted', async t => {
  const app = await build(t, { aggregate: false })
  const response = await app.inject({ method: 'POST', url: '/mcp', payload: {} })
  t.equal(response.statusCode, 404)
  const configured = await build(t, { config: parseConfig(JSON.stringify({ mcpServers: { greet: { builtin: 'greet' } }, gateway: { aggregate: false } }), 'g.json') })
  t.equal((await configured.inject({ method: 'POST', url: '/mcp', payload: {} })).statusCode, 404)
})

t.test('an in-process server reached through /mcp asks the client that made the call, never another', async t => {
  const { base } = await listen(t, { servers: [{ name: 'asker', factory: createAskingServer }] })
  const client = await mcpClient(t, `${base}/mcp`, 'aggregate-test', { elicit: 'Ada' })
  t.equal(text(await client.callTool({ name: 'asker_askName', arguments: {} })), 'Hello, Ada!')

  // Asked the 2026-07-28 way (inputRequired), the question names its call: concurrent
  // clients each answer their own.
  const polite = (): McpServer => {
    const server = new McpServer({ name: 'polite', version: '1.0.0' })
    server.registerTool('greetMe', { description: 'Asks for a name' }, async ctx => {
      const answer = acceptedContent(ctx.mcpReq.inputResponses, 'name')
      if (answer !== undefined) return { content: [{ type: 'text', text: `Hello, ${String(answer.name)}!` }] }
      return inputRequired({ inputRequests: { name: inputRequired.elicit({ message: 'Name?', requestedSchema: { type: 'object', properties: { name: { type: 'string' } } } }) } })
    })
    return server
  }
  const { base: politeBase } = await listen(t, { servers: [{ name: 'polite', factory: polite }] })
  const clients = await Promise.all(['Alice', 'Bob', 'Carol'].map(async name => await mcpClient(t, `${politeBase}/mcp`, name, { elicit: name })))
  const greetings = await Promise.all(clients.map(async named => text(await named.callTool({ name: 'polite_greetMe', arguments: {} }))))
  t.same(greetings, ['Hello, Alice!', 'Hello, Bob!', 'Hello, Carol!'])

  // Over REST there is no client to ask: the server is told so, and its tool fails.
  const rest = await fetch(`${base}/asker/tools/askName`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(rest.status, 422)
  t.match(await rest.json(), { code: 'GW_ERR_TOOL_ERROR', content: [{ text: /came over the gateway's REST API, which has no client to ask/ }] })
})
