import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { McpServer } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { build, listen, logCapture, mcpClient, text, type LogLine } from '../helper.js'
import core from '../../plugins/core.js'
import mcpServer from '../../plugins/mcp-server.js'
import type { ServerEntry } from '../../src/app.js'
import { AggregateConnection, exposedName } from '../../src/connections/aggregate.js'
import { InProcessConnection } from '../../src/connections/in-process.js'
import { ServerRegistry } from '../../src/connections/registry.js'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import type { CallContext, CallFilter, Outcome } from '../../src/pipeline/pipeline.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createMathServer } from '../../servers/math/index.js'
import { createSlowServer } from '../fixtures/servers.js'

// Tool and prompt names on `/mcp`: each server's `namespace` and `rename`, collisions refused
// at start (and, later, kept by the server that had the name), errors in the names the client
// used, filters in the member's own, and resource URIs two servers share reported.

const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))

/** The stdio fixture (tools add, whoami, block) as an upstream. */
function stdio (name: string): UpstreamConnection {
  return new UpstreamConnection(name, { transport: { kind: 'stdio', command: process.execPath, args: [fixture], env: {} } })
}

/** A server with a prompt, a tool, and a tool that fails naming itself as Python's FastMCP does. */
function createNotesServer (): McpServer {
  const server = new McpServer({ name: 'notes', version: '1.0.0' })
  server.registerTool('lookup', { description: 'Finds a note', inputSchema: z.object({ word: z.string() }) }, async ({ word }) => ({ content: [{ type: 'text', text: `note about ${word}` }] }))
  server.registerTool('fail', { description: 'Always fails' }, async () => ({ isError: true, content: [{ type: 'text', text: 'Error executing tool fail: the index is down' }] }))
  server.registerPrompt('summarize', { description: 'Summarize a note', argsSchema: z.object({ topic: z.string() }) }, async ({ topic }) => ({
    messages: [{ role: 'user', content: { type: 'text', text: `Summarize the note about ${topic}` } }]
  }))
  return server
}

/** A server offering one tool, `tool`, that answers `answer`. */
function oneTool (tool: string, answer: string) {
  return () => {
    const server = new McpServer({ name: answer, version: '1.0.0' })
    server.registerTool(tool, { description: tool }, async () => ({ content: [{ type: 'text', text: answer }] }))
    return server
  }
}

/** An SDK v2 client of `url`, closed when the test ends. */
async function modernClient (t: Test, url: string): Promise<Client> {
  const client = new Client({ name: 'naming-test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

/** A rejection's message, or a failure of the test when there was none. */
async function failure (t: Test, call: Promise<unknown>): Promise<string> {
  const err = await call.then(() => undefined, (err: unknown) => err as Error)
  t.ok(err, 'the call fails')
  return err?.message ?? ''
}

/** The servers most tests mount: every way of naming, in process and over stdio. */
function naming (): ServerEntry[] {
  return [
    { name: 'math', factory: createMathServer, namespace: 'calc' },
    { name: 'greet', factory: createGreetServer, namespace: false },
    { name: 'fx', connection: stdio('fx'), rename: { add: 'plus' } },
    { name: 'notes', factory: createNotesServer, namespace: false, rename: { lookup: 'find', summarize: 'notes_summary', fail: 'notes_fail' } }
  ]
}

t.test('namespace (a string, or false) and rename name tools and prompts on /mcp, for both SDK clients; the server\'s own endpoint keeps its names', async t => {
  const { base } = await listen(t, { servers: naming() })
  const client = await mcpClient(t, `${base}/mcp`, 'naming-test')
  const names = (await client.listTools()).tools.map(tool => tool.name).sort()
  t.same(names, ['calc_add', 'echoHai', 'find', 'fx_block', 'fx_plus', 'fx_whoami', 'notes_fail'])
  t.same((await client.callTool({ name: 'calc_add', arguments: { a: 2, b: 3 } })).structuredContent, { sum: 5 }, 'a namespace of its own')
  t.equal(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })), 'Hello, Ada!', 'namespace false: the name as the server has it')
  t.equal(text(await client.callTool({ name: 'fx_plus', arguments: { a: 20, b: 22 } })), '42', 'renamed, then namespaced (stdio upstream)')
  t.equal(text(await client.callTool({ name: 'find', arguments: { word: 'tap' } })), 'note about tap', 'renamed, no namespace')
  t.same((await client.listPrompts()).prompts.map(prompt => prompt.name), ['notes_summary'], 'prompts are renamed too')
  t.match((await client.getPrompt({ name: 'notes_summary', arguments: { topic: 'tap' } })).messages, [{ content: { text: 'Summarize the note about tap' } }])
  t.match(await failure(t, client.callTool({ name: 'fx_add', arguments: { a: 1, b: 2 } })), /Tool fx_add not found/, 'the old name is gone')
  t.match(await failure(t, client.callTool({ name: 'math_add', arguments: { a: 1, b: 2 } })), /Tool math_add not found/, 'the default namespace is replaced')

  const modern = await modernClient(t, `${base}/mcp`)
  t.same((await modern.listTools()).tools.map(tool => tool.name).sort(), names, 'an SDK v2 client sees the same names')
  t.equal(text(await modern.callTool({ name: 'fx_plus', arguments: { a: 1, b: 1 } })), '2')

  const own = await mcpClient(t, `${base}/fx/mcp`, 'naming-test')
  t.same((await own.listTools()).tools.map(tool => tool.name).sort(), ['add', 'block', 'whoami'], 'only /mcp renames')
  const rest = await fetch(`${base}/fx/tools/add`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: 1, b: 2 }) })
  t.equal(rest.status, 200, 'and REST keeps the server\'s own names')
})

t.test('errors on /mcp name the tool or prompt as the client called it', async t => {
  const { base } = await listen(t, { servers: naming() })
  for (const client of [await mcpClient(t, `${base}/mcp`, 'naming-test'), await modernClient(t, `${base}/mcp`)]) {
    const invalid = text(await client.callTool({ name: 'calc_add', arguments: { a: 'two', b: 3 } }))
    t.match(invalid, /Invalid arguments for tool calc_add: /, 'an in-process server\'s validation error')
    t.notMatch(invalid, /tool add\b/)
    t.match(text(await client.callTool({ name: 'fx_plus', arguments: { a: 'two', b: 3 } })), /Invalid arguments for tool fx_plus: /, 'a stdio upstream\'s validation error, renamed and namespaced')
    t.equal(text(await client.callTool({ name: 'notes_fail', arguments: {} })), 'Error executing tool notes_fail: the index is down', 'a tool\'s own error result naming it')
    t.match(await failure(t, client.callTool({ name: 'calc_nope', arguments: {} })), /Tool calc_nope not found/)
    t.match(await failure(t, client.getPrompt({ name: 'summarize', arguments: { topic: 'x' } })), /Prompt summarize not found/)
    await t.rejects(client.getPrompt({ name: 'notes_summary', arguments: {} }), { code: -32602, message: /Invalid arguments for prompt notes_summary: / }, 'a server\'s own JSON-RPC error keeps its code, the prompt renamed')
  }
})

t.test('a timeout on /mcp names the tool as the client called it', async t => {
  // Assembled as src/app.ts does, for a short timeout of the aggregate's own.
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(core)
  await app.register(mcpServer, { name: 'slow', factory: createSlowServer, namespace: 'lazy', prefix: '/slow' })
  const connection = new AggregateConnection('gateway', app.mcpRegistry, { timeoutMs: 100, pipeline: app.callPipeline })
  await app.register(mcpServer, { name: 'gateway', connection, endpointOnly: true, prefix: '' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const client = await mcpClient(t, `http://127.0.0.1:${(app.server.address() as { port: number }).port}/mcp`)
  const message = await failure(t, client.callTool({ name: 'lazy_wait', arguments: {} }))
  t.match(message, /Tool lazy_wait: No answer within 100 ms/)
  t.notMatch(message, /\bwait\b/, 'not the server\'s own name for it')
})

t.test('the call pipeline\'s filters see the member server and its own names; the client sees only its own', async t => {
  const seen: Array<{ call: CallContext, outcome: Outcome }> = []
  const recorder: CallFilter = { name: 'recorder', observe: (call, { outcome }) => { if (call.method === 'tools/call' || call.method === 'prompts/get') seen.push({ call, outcome }) } }
  // A policy written in the servers' own terms, as the config's policy rules are.
  const policy: CallFilter = { name: 'policy', allows: call => !(call.server === 'fx' && call.name === 'whoami') }
  const { base } = await listen(t, { servers: naming(), filters: [recorder, policy] })
  const client = await mcpClient(t, `${base}/mcp`, 'naming-test')
  t.notOk((await client.listTools()).tools.some(tool => tool.name === 'fx_whoami'), 'a policy on the own name hides the exposed one')
  t.match(await failure(t, client.callTool({ name: 'fx_whoami', arguments: {} })), /Tool fx_whoami not found/, 'and its call answers as an unknown name, under the client\'s name')
  await client.callTool({ name: 'calc_add', arguments: { a: 1, b: 2 } })
  await client.callTool({ name: 'fx_plus', arguments: { a: 'two', b: 2 } })
  await client.getPrompt({ name: 'notes_summary', arguments: { topic: 'tap' } })
  t.same(seen.map(({ call, outcome }) => ({ server: call.server, method: call.method, name: call.name, way: call.way, outcome })), [
    { server: 'fx', method: 'tools/call', name: 'whoami', way: 'aggregate', outcome: 'denied' },
    { server: 'math', method: 'tools/call', name: 'add', way: 'aggregate', outcome: 'ok' },
    { server: 'fx', method: 'tools/call', name: 'add', way: 'aggregate', outcome: 'tool_error' },
    { server: 'notes', method: 'prompts/get', name: 'summarize', way: 'aggregate', outcome: 'ok' }
  ])
})

t.test('a name two servers would offer refuses the start, naming the name and both servers', async t => {
  // `a_b`'s `c` and `a`'s `b_c` both become `a_b_c` with the default namespaces.
  const registry = new ServerRegistry()
  const mount = async (name: string, factory: () => McpServer, naming: { namespace?: false, rename?: Record<string, string> } = {}): Promise<void> => {
    registry.add({ name, prefix: `/${name}`, connection: new InProcessConnection(name, factory), ...naming })
    await registry.start(name)
  }
  t.teardown(() => registry.close())
  await mount('a_b', oneTool('c', 'from a_b'))
  await mount('a', oneTool('b_c', 'from a'))
  const aggregate = new AggregateConnection('gateway', registry)
  await t.rejects(aggregate.start(), {
    code: 'GW_ERR_INVALID_OPTIONS',
    message: "Invalid options: the tool name 'a_b_c' on /mcp is offered by server 'a_b' (its tool 'c') and by server 'a' (its tool 'b_c'): give one of the servers its own \"namespace\", or \"rename\" one of the items"
  })
  t.equal(aggregate.state, 'down', 'should the boot go on regardless, /mcp answers 503 with the reason')
  t.match(aggregate.failure, /offered by server 'a_b'/)

  const prompts = new ServerRegistry()
  t.teardown(() => prompts.close())
  const notes = (): McpServer => createNotesServer()
  for (const [name, naming] of [['one', { namespace: false as const }], ['two', { namespace: false as const, rename: { lookup: 'find', summarize: 'summarize' } }]] as const) {
    prompts.add({ name, prefix: `/${name}`, connection: new InProcessConnection(name, notes), ...naming })
    await prompts.start(name)
  }
  await t.rejects(new AggregateConnection('gateway', prompts).start(), { message: /the tool name 'fail' on \/mcp is offered by server 'one' and by server 'two'; the prompt name 'summarize' on \/mcp is offered by server 'one' and by server 'two'/ }, 'every collision, prompts too')
})

t.test('a gateway whose servers collide on /mcp does not boot', async t => {
  await t.rejects(build(t, { servers: [{ name: 'a_b', factory: oneTool('c', 'from a_b') }, { name: 'a', factory: oneTool('b_c', 'from a') }] }), {
    code: 'GW_ERR_INVALID_OPTIONS',
    message: /'a_b_c' on \/mcp is offered by server 'a_b' \(its tool 'c'\) and by server 'a' \(its tool 'b_c'\)/
  })
})

t.test('a collision that appears later keeps the name with the server that had it, and is logged naming both', async t => {
  // `late` is first in the config, but `x` was `early`'s when `late` began to offer it.
  const instances: McpServer[] = []
  const late = (): McpServer => {
    const server = oneTool('y', 'from late')()
    instances.push(server)
    return server
  }
  const log = logCapture()
  const { base } = await listen(t, { servers: [{ name: 'late', factory: late, namespace: false }, { name: 'early', factory: oneTool('x', 'from early'), namespace: false }] }, { logger: { level: 'info', stream: log.stream } })
  const client = await mcpClient(t, `${base}/mcp`, 'naming-test')
  t.equal(text(await client.callTool({ name: 'x', arguments: {} })), 'from early')

  // The connection's own instance (the first built) announces the new tool.
  instances[0]?.registerTool('x', { description: 'x' }, async () => ({ content: [{ type: 'text', text: 'from late' }] }))
  const line = await log.logged((line: LogLine) => line.msg.startsWith('name collision on the aggregated endpoint'))
  t.match(line, { level: 50, kind: 'tool', name: 'x', servers: ['early', 'late'], kept: 'early/x', dropped: 'late/x' })
  t.same((await client.listTools()).tools.map(tool => tool.name).sort(), ['x', 'y'])
  t.equal(text(await client.callTool({ name: 'x', arguments: {} })), 'from early', 'the name still reaches the server clients knew it from')
  t.equal(log.lines.filter(line => line.msg.startsWith('name collision')).length, 1, 'logged once, not on every list')
})

t.test('a server that joins after the start (a config reload) gets the names nobody has, and its collisions are logged', async t => {
  const registry = new ServerRegistry()
  t.teardown(() => registry.close())
  const log = logCapture()
  const logger = Fastify({ logger: { level: 'info', stream: log.stream } })
  t.teardown(() => logger.close())
  const aggregate = new AggregateConnection('gateway', registry, { log: logger.log })
  const mount = async (name: string, tool: string): Promise<void> => {
    registry.add({ name, prefix: `/${name}`, connection: new InProcessConnection(name, oneTool(tool, `from ${name}`)), namespace: false })
    await registry.start(name)
  }
  await mount('first', 'x')
  await aggregate.start()
  // Announced when it joins, before it has started: the index follows its start all the same.
  await mount('joined', 'x')
  await mount('other', 'z')
  t.same(aggregate.tools().map(tool => tool.name), ['x', 'z'])
  t.equal(text(await aggregate.callTool('x', {})), 'from first')
  t.match(await log.logged(line => line.msg.startsWith('name collision')), { name: 'x', servers: ['first', 'joined'] })
})

t.test('a resource URI two servers list is reported at start, naming it and both servers; the first server in the config answers for it', async t => {
  const docs = (text: string) => () => {
    const server = new McpServer({ name: 'docs', version: '1.0.0' })
    server.registerResource('readme', 'docs://readme', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text }] }))
    return server
  }
  const log = logCapture()
  const { base } = await listen(t, { servers: [{ name: 'first', factory: docs('first') }, { name: 'second', factory: docs('second') }] }, { logger: { level: 'info', stream: log.stream } })
  const reported = log.lines.filter(line => line.msg.startsWith('resource URI offered by two servers'))
  t.match(reported, [{ level: 40, kind: 'resource', name: 'docs://readme', servers: ['first', 'second'], kept: 'first/docs://readme' }], 'a warning before any client asked')
  const client = await mcpClient(t, `${base}/mcp`, 'naming-test')
  t.same((await client.listResources()).resources.map(resource => resource.uri), ['docs://readme'])
  t.match((await client.readResource({ uri: 'docs://readme' })).contents, [{ text: 'first' }])
  t.equal(log.lines.filter(line => line.msg.startsWith('resource URI offered by two servers')).length, 1, 'reported once')
})

t.test('exposed names stay within 64 characters by the one rule, and rename reads only the map\'s own keys', async t => {
  const long = 'x'.repeat(80)
  const bare = exposedName({ name: 'files', namespace: false }, long)
  t.equal(bare.length, 64)
  t.match(bare, /^x{55}_[0-9a-f]{8}$/)
  t.equal(exposedName({ name: 'files', rename: { add: long } }, 'add'), exposedName({ name: 'files', namespace: 'files' }, long))
  t.equal(exposedName({ name: 'files', namespace: 'fs', rename: { add: 'plus' } }, 'add', '.'), 'fs.plus')
  t.equal(exposedName({ name: 'files', rename: {} }, 'constructor'), 'files_constructor')
})

t.test('namespace and rename are validated with the mount\'s other options', async t => {
  await t.rejects(build(t, { servers: [{ name: 'math', factory: createMathServer, rename: { add: 'two words' } }] }), { code: 'GW_ERR_INVALID_OPTIONS', message: /rename/ })
  await t.rejects(build(t, { servers: [{ name: 'math', factory: createMathServer, namespace: '' }] }), { code: 'GW_ERR_INVALID_OPTIONS', message: /namespace/ })
})
