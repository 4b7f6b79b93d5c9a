import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import gateway, { type ServerEntry } from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { UpstreamConnection, type UpstreamOptions } from '../../src/connections/upstream.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { alive, logCapture, listen, mcpClient, text } from '../helper.js'

// Upstream servers nobody here wrote (server-everything, server-filesystem) and a small stdio
// fixture, reached through the gateway over real child processes and real HTTP.

const require = createRequire(import.meta.url)
const everything = require.resolve('@modelcontextprotocol/server-everything/dist/index.js')
const filesystem = require.resolve('@modelcontextprotocol/server-filesystem/dist/index.js')
const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
const json = { 'content-type': 'application/json' }

/** A gateway that logs into memory, so tests can wait for what an upstream wrote on stderr. */
async function gatewayWith (t: Test, upstreams: Record<string, Omit<UpstreamOptions, 'log'>>, extra: ServerEntry[] = []) {
  const { stream, logged } = logCapture()
  const app: FastifyInstance = Fastify({ logger: { level: 'info', stream } })
  const connections: Record<string, UpstreamConnection> = {}
  for (const [name, options] of Object.entries(upstreams)) {
    connections[name] = new UpstreamConnection(name, { ...options, log: app.log.child({ mcpServer: name }) })
  }
  // An upstream's timeoutMs applies to its mount too, as a config entry's does.
  const entries = Object.entries(connections).map(([name, connection]) => {
    const timeoutMs = upstreams[name]?.timeoutMs
    return { name, connection, ...(timeoutMs !== undefined && { timeoutMs }) }
  })
  await app.register(gateway, { servers: [...entries, ...extra] })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address() as { port: number }
  return { app, base: `http://127.0.0.1:${address.port}`, connections, logged }
}

const stdio = (script: string, ...args: string[]): UpstreamOptions['transport'] => ({ kind: 'stdio', command: process.execPath, args: [script, ...args], env: {} })

t.test('a stdio upstream has the face of a built-in server: REST tools, prompts, resources, OpenAPI, /ready', async t => {
  const { base } = await gatewayWith(t, { everything: { transport: stdio(everything, 'stdio') } })

  const sum = await fetch(`${base}/everything/tools/get-sum`, { method: 'POST', headers: json, body: JSON.stringify({ a: 2, b: 3 }) })
  t.equal(sum.status, 200)
  t.match(text(await sum.json()), /5/)
  const bad = await fetch(`${base}/everything/tools/get-sum`, { method: 'POST', headers: json, body: JSON.stringify({ a: 'two' }) })
  t.equal(bad.status, 400, 'arguments are validated against the upstream tool schema')

  const ready = await (await fetch(`${base}/ready`)).json() as { status: string, servers: Array<{ name: string, state: string, tools: number }> }
  t.equal(ready.status, 'ready')
  t.match(ready.servers, [{ name: 'everything', state: 'up' }])
  t.ok(ready.servers[0].tools > 5)

  const doc = await (await fetch(`${base}/docs/json`)).json() as { paths: Record<string, unknown> }
  for (const path of ['/everything/tools/get-sum', '/everything/prompts', '/everything/prompts/{prompt}', '/everything/resources', '/everything/resources/read']) {
    t.ok(doc.paths[path], `${path} is in the OpenAPI document`)
  }

  const prompts = await (await fetch(`${base}/everything/prompts`)).json() as { prompts: Array<{ name: string }> }
  t.ok(prompts.prompts.some(prompt => prompt.name === 'args-prompt'))
  const missing = await fetch(`${base}/everything/prompts/args-prompt`, { method: 'POST', headers: json, body: '{}' })
  t.equal(missing.status, 400)
  t.match(await missing.json(), { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field: 'city' }] })
  const rendered = await fetch(`${base}/everything/prompts/args-prompt`, { method: 'POST', headers: json, body: JSON.stringify({ city: 'Paris' }) })
  t.equal(rendered.status, 200)
  t.match(JSON.stringify(await rendered.json()), /Paris/)
  const unknown = await fetch(`${base}/everything/prompts/nope`, { method: 'POST', headers: json, body: '{}' })
  t.equal(unknown.status, 404)
  t.match(await unknown.json(), { code: 'GW_ERR_PROMPT_NOT_FOUND' })

  const resources = await (await fetch(`${base}/everything/resources`)).json() as { resources: Array<{ uri: string }>, resourceTemplates: unknown[] }
  const uri = resources.resources[0]?.uri as string
  t.ok(uri, 'resources are listed')
  t.ok(resources.resourceTemplates.length > 0, 'resource templates are listed')
  const read = await fetch(`${base}/everything/resources/read?uri=${encodeURIComponent(uri)}`)
  t.equal(read.status, 200)
  t.match(await read.json(), { contents: [{ uri }] })
  const noUri = await fetch(`${base}/everything/resources/read`)
  t.equal(noUri.status, 400)
})

t.test('MCP clients reach a stdio upstream at /<name>/mcp: progress, sampling and elicitation reach the caller', async t => {
  const { base } = await gatewayWith(t, { everything: { transport: stdio(everything, 'stdio') } })
  const client = await mcpClient(t, `${base}/everything/mcp`, 'one', { elicit: 'Ada', sample: 'sampled text' })
  const tools = await client.listTools()
  t.ok(tools.tools.some(tool => tool.name === 'echo'))
  t.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'hi' } })), 'Echo: hi')

  const progress: number[] = []
  await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.2, steps: 2 } }, undefined, { onprogress: p => { progress.push(p.progress) } })
  t.same(progress, [1, 2])

  t.match(text(await client.callTool({ name: 'trigger-elicitation-request', arguments: {} })), /Ada/)
  t.match(text(await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hello' } })), /sampled text/)

  const prompt = await client.getPrompt({ name: 'args-prompt', arguments: { city: 'Oslo' } })
  t.match(JSON.stringify(prompt.messages), /Oslo/)
  const listed = await client.listResources()
  t.ok(listed.resources.length > 0)
})

t.test('two sessions on one shared upstream each receive only their own progress', async t => {
  const { base } = await gatewayWith(t, { everything: { transport: stdio(everything, 'stdio') } })
  const [a, b] = await Promise.all([mcpClient(t, `${base}/everything/mcp`, 'a'), mcpClient(t, `${base}/everything/mcp`, 'b')])
  const seen: Record<string, number[]> = { a: [], b: [] }
  await Promise.all([
    a.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 2 } }, undefined, { onprogress: p => { seen.a.push(p.progress) } }),
    b.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } }, undefined, { onprogress: p => { seen.b.push(p.progress) } })
  ])
  t.same(seen, { a: [1, 2], b: [1, 2, 3] })
})

t.test('with isolation "session" each session has its own upstream, and its own elicitation', async t => {
  const { base } = await gatewayWith(t, { fixture: { transport: stdio(fixture), isolation: 'session' }, everything: { transport: stdio(everything, 'stdio'), isolation: 'session' } })
  const [a, b] = await Promise.all([
    mcpClient(t, `${base}/everything/mcp`, 'a', { elicit: 'Alice' }),
    mcpClient(t, `${base}/everything/mcp`, 'b', { elicit: 'Bob' })
  ])
  const [fromA, fromB] = await Promise.all([
    a.callTool({ name: 'trigger-elicitation-request', arguments: {} }),
    b.callTool({ name: 'trigger-elicitation-request', arguments: {} })
  ])
  t.match(text(fromA), /Alice/)
  t.notMatch(text(fromA), /Bob/)
  t.match(text(fromB), /Bob/)

  const [c, d] = await Promise.all([mcpClient(t, `${base}/fixture/mcp`, 'c'), mcpClient(t, `${base}/fixture/mcp`, 'd')])
  const pids = await Promise.all([c, d].map(async client => Number(text(await client.callTool({ name: 'whoami', arguments: {} })))))
  t.not(pids[0], pids[1], 'each session talks to its own child process')
  await c.close()
  await d.close()
})

t.test('an upstream child killed mid-call: the call is a 502, then 503 with Retry-After, then it is back', async t => {
  const { base, connections, logged } = await gatewayWith(t, { fixture: { transport: stdio(fixture), retry: { initialMs: 1000 } } })
  const connection = connections.fixture as UpstreamConnection
  const pid = connection.pid as number
  t.ok(pid > 0)

  const call = fetch(`${base}/fixture/tools/block`, { method: 'POST', headers: json, body: JSON.stringify({ label: 'kill-me' }) })
  const line = await logged(entry => entry.stderr === 'block started kill-me')
  t.equal(line.mcpServer, 'fixture', "the child's stderr is logged under its server's name")
  const back = new Promise<void>(resolve => { connection.onListChanged(() => { resolve() }) })
  process.kill(pid, 'SIGKILL')

  const failed = await call
  t.equal(failed.status, 502)
  t.match(await failed.json(), { code: 'GW_ERR_UPSTREAM' })

  const down = await fetch(`${base}/fixture/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 2 }) })
  t.equal(down.status, 503)
  t.ok(Number(down.headers.get('retry-after')) >= 1, 'Retry-After says when to try again')
  t.match(await down.json(), { code: 'GW_ERR_SERVER_UNAVAILABLE' })
  const ready = await fetch(`${base}/ready`)
  t.equal(ready.status, 200, 'degraded: the gateway still serves its other servers')
  t.match(await ready.json(), { status: 'degraded', servers: [{ name: 'fixture', state: 'down', error: /exited/ }] })

  await back
  t.not(connection.pid, pid, 'a new child was started')
  const again = await fetch(`${base}/fixture/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 2 }) })
  t.equal(again.status, 200)
  t.equal(text(await again.json()), '3')
})

t.test('a cancelled MCP call cancels the upstream call', async t => {
  const { base, logged } = await gatewayWith(t, { fixture: { transport: stdio(fixture) } })
  const client = await mcpClient(t, `${base}/fixture/mcp`)
  const controller = new AbortController()
  const call = client.callTool({ name: 'block', arguments: { label: 'cancel-me' } }, undefined, { signal: controller.signal })
  await logged(entry => entry.stderr === 'block started cancel-me')
  controller.abort('changed my mind')
  await t.rejects(call)
  await logged(entry => entry.stderr === 'block cancelled cancel-me')
  t.pass('the upstream tool saw the cancellation')
})

t.test('a call the upstream does not answer in timeoutMs is a 504, and is cancelled upstream', async t => {
  const { base, logged } = await gatewayWith(t, { fixture: { transport: stdio(fixture), timeoutMs: 300 } })
  const res = await fetch(`${base}/fixture/tools/block`, { method: 'POST', headers: json, body: JSON.stringify({ label: 'too-slow' }) })
  t.equal(res.status, 504)
  t.match(await res.json(), { code: 'GW_ERR_TOOL_TIMEOUT', message: /300 ms/ })
  await logged(entry => entry.stderr === 'block cancelled too-slow')
  t.pass('the upstream tool saw the cancellation')
  const after = await fetch(`${base}/fixture/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 1 }) })
  t.equal(after.status, 200, 'the upstream is still up')
})

t.test('no child process outlives app.close(), shared or per session', async t => {
  const { app, base, connections } = await gatewayWith(t, { shared: { transport: stdio(fixture) }, own: { transport: stdio(fixture), isolation: 'session' } })
  const client = await mcpClient(t, `${base}/own/mcp`)
  const sessionPid = Number(text(await client.callTool({ name: 'whoami', arguments: {} })))
  const sharedPid = (connections.shared as UpstreamConnection).pid as number
  t.ok(alive(sharedPid) && alive(sessionPid))
  await app.close()
  t.notOk(alive(sharedPid), 'the shared child is gone')
  t.notOk(alive(sessionPid), "the session's child is gone")
})

t.test('an upstream that cannot start leaves the gateway serving, and /ready says why', async t => {
  const { base } = await gatewayWith(t, { broken: { transport: { kind: 'stdio', command: '/nonexistent/mcp-server', args: [], env: {} } } }, [{ name: 'greet', factory: createGreetServer }])
  const ready = await fetch(`${base}/ready`)
  t.equal(ready.status, 200, 'degraded: the gateway still serves its other servers')
  t.match(await ready.json(), { status: 'degraded', servers: [{ name: 'broken', state: 'down', error: /ENOENT/, retryAfter: Number }, { name: 'greet', state: 'up' }] })
  const greet = await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: JSON.stringify({ userName: 'Ada' }) })
  t.equal(greet.status, 200)
  const broken = await fetch(`${base}/broken/tools/anything`, { method: 'POST', headers: json, body: '{}' })
  t.equal(broken.status, 503)
  t.ok(broken.headers.get('retry-after'))
})

t.test("an upstream silent past the config's connectTimeoutMs is down, retried after its retry.initialMs", async t => {
  const config = parseConfig(JSON.stringify({
    mcpServers: { mute: { command: process.execPath, args: ['-e', 'setInterval(() => {}, 1000)'], connectTimeoutMs: 200, retry: { initialMs: 45000 } } }
  }), 'gateway.json')
  const { base } = await listen(t, { config })
  const ready = await fetch(`${base}/ready`)
  t.equal(ready.status, 200, 'degraded: the gateway still serves its other servers')
  const body = await ready.json() as { servers: Array<{ retryAfter: number }> }
  t.match(body, { servers: [{ name: 'mute', state: 'down', error: /no answer to initialize within 200 ms/ }] })
  t.ok((body.servers[0]?.retryAfter ?? 0) > 30, `the next attempt is about 45 s away (retryAfter ${body.servers[0]?.retryAfter})`)
})

t.test('a remote Streamable HTTP upstream: REST and MCP through the gateway, 502 and 503 when it goes away', async t => {
  const port = await freePort()
  const remote = spawn(process.execPath, [everything, 'streamableHttp'], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => { if (remote.exitCode === null) remote.kill('SIGKILL') })
  let stderr = ''
  while (!/listening on port/.test(stderr)) {
    const [chunk] = await once(remote.stderr, 'data') as [Buffer]
    stderr += String(chunk)
  }
  const { base } = await gatewayWith(t, { remote: { transport: { kind: 'http', url: `http://127.0.0.1:${port}/mcp`, headers: { 'x-test': 'yes' } }, retry: { initialMs: 60_000 } } })
  const sum = await fetch(`${base}/remote/tools/get-sum`, { method: 'POST', headers: json, body: JSON.stringify({ a: 40, b: 2 }) })
  t.equal(sum.status, 200)
  t.match(text(await sum.json()), /42/)
  const client = await mcpClient(t, `${base}/remote/mcp`)
  t.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'over http' } })), 'Echo: over http')

  remote.kill('SIGKILL')
  await once(remote, 'exit')
  const failed = await fetch(`${base}/remote/tools/get-sum`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 1 }) })
  t.equal(failed.status, 502)
  const down = await fetch(`${base}/remote/tools/get-sum`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 1 }) })
  t.equal(down.status, 503)
  t.ok(Number(down.headers.get('retry-after')) > 1)
})

t.test('server-filesystem on a temporary folder, through the REST shim', async t => {
  const folder = await mkdtemp(join(tmpdir(), 'gateway-fs-'))
  t.teardown(() => rm(folder, { recursive: true, force: true }))
  const { base } = await gatewayWith(t, { files: { transport: stdio(filesystem, folder), tools: { deny: ['move_file'] } } })
  const call = async (tool: string, args: unknown): Promise<Response> => await fetch(`${base}/files/tools/${tool}`, { method: 'POST', headers: json, body: JSON.stringify(args) })

  const written = await call('write_file', { path: join(folder, 'note.txt'), content: 'hello from REST' })
  t.equal(written.status, 200)
  t.equal(await readFile(join(folder, 'note.txt'), 'utf8'), 'hello from REST')
  const read = await call('read_text_file', { path: join(folder, 'note.txt') })
  t.equal(read.status, 200)
  t.match(text(await read.json()), 'hello from REST')
  const listed = await call('list_directory', { path: folder })
  t.match(text(await listed.json()), /note\.txt/)
  const outside = await call('read_text_file', { path: '/etc/hostname' })
  t.equal(outside.status, 422, "the server's refusal is the tool's own error")
  t.match(await outside.json(), { code: 'GW_ERR_TOOL_ERROR', isError: true })
  const missing = await call('read_text_file', {})
  t.equal(missing.status, 400)
  const denied = await call('move_file', { source: join(folder, 'note.txt'), destination: join(folder, 'moved.txt') })
  t.equal(denied.status, 404, 'a denied tool is not offered')
  const tools = await (await fetch(`${base}/files/tools`)).json() as { tools: Array<{ name: string }> }
  t.notOk(tools.tools.some(tool => tool.name === 'move_file'))
})

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}
