import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

/** Runs the command as a user would, under tsx so no build is needed. */
function run (args: string[], env: Record<string, string> = {}): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  return Object.assign(child, { output: () => output })
}

async function exited (child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode
  const [code] = await once(child, 'exit')
  return code as number | null
}

async function waitForBanner (child: ChildProcess & { output: () => string }): Promise<string> {
  while (!/health\s+http/.test(child.output())) {
    if (child.exitCode !== null) throw new Error(`exited early: ${child.output()}`)
    await once(child.stdout as NodeJS.ReadableStream, 'data')
  }
  return child.output()
}

t.test('--help documents the flags and exits 0', async t => {
  const child = run(['--help'])
  t.equal(await exited(child), 0)
  t.match(child.output(), /--port N/)
  t.match(child.output(), /--host ADDR/)
  t.match(child.output(), /--config FILE/)
  t.match(child.output(), /^Usage: fastify-mcp-gateway /)
  for (const flag of ['--check', '--print-config', '--version']) t.match(child.output(), new RegExp(`^\\s+(-v, )?${flag}\\s`, 'm'), flag)
})

t.test('an unknown flag exits 2 with the usage', async t => {
  const child = run(['--bogus'])
  t.equal(await exited(child), 2)
  t.match(child.output(), /Unknown option '--bogus'/)
})

t.test('a port already in use ends the start with one line naming it, exit 1', async t => {
  const blocker = createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => { blocker.close() })
  const port = (blocker.address() as { port: number }).port
  const child = run(['--port', String(port)])
  t.equal(await exited(child), 1)
  t.equal(child.output().trim(), `fastify-mcp-gateway: port ${port} on 127.0.0.1 is already in use`)
})

t.test('it prints where everything is, serves, and exits 0 on SIGTERM', async t => {
  const child = run(['--port', '0'])
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const banner = await waitForBanner(child)
  const base = /listening on (http:\/\/\S+)/.exec(banner)?.[1] as string
  t.match(banner, new RegExp(`greet\\s+${base}/greet/mcp\\s+tools: echoHai`))
  t.match(banner, new RegExp(`math\\s+${base}/math/mcp\\s+tools: add`))
  t.match(banner, new RegExp(`docs\\s+${base}/docs`))
  const res = await fetch(`${base}/math/tools/add`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":5,"b":3}' })
  t.same(await res.json(), { content: [{ type: 'text', text: '8' }], structuredContent: { sum: 8 } })
  child.kill('SIGTERM')
  t.equal(await exited(child), 0)
})

t.test('PORT and HOST come from the environment', async t => {
  const child = run([], { PORT: '0', HOST: '127.0.0.1' })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  t.match(await waitForBanner(child), /listening on http:\/\/127\.0\.0\.1:\d+/)
  child.kill('SIGINT')
  t.equal(await exited(child), 0)
})

t.test('an invalid config file exits 2 naming the file and every bad field, and starts nothing', async t => {
  const dir = t.testdir({ 'gateway.json': JSON.stringify({ mcpServers: { files: { command: 'npx', args: 'oops' }, remote: { url: 'https://x/mcp', headers: { Authorization: 'Bearer ${NOT_SET_ANYWHERE}' } } } }) })
  const file = `${dir}/gateway.json`
  const child = run(['--config', file, '--port', '0'])
  t.equal(await exited(child), 2)
  t.match(child.output(), `${file}: mcpServers.files.args must be an array of strings (got string)`)
  t.match(child.output(), `${file}: mcpServers.remote.headers.Authorization refers to \${NOT_SET_ANYWHERE}, which is not set`)
  t.notMatch(child.output(), /listening/)
})

t.test('MCP_GATEWAY_CONFIG names the config: its stdio upstream is served beside a built-in one', async t => {
  const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
  const dir = t.testdir({ 'gateway.yaml': `mcpServers:\n  up:\n    command: ${JSON.stringify(process.execPath)}\n    args: [${JSON.stringify(fixture)}]\n  greet:\n    builtin: greet\n    prefix: /hello\n` })
  const child = run(['--port', '0'], { MCP_GATEWAY_CONFIG: `${dir}/gateway.yaml` })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const banner = await waitForBanner(child)
  const base = /listening on (http:\/\/\S+)/.exec(banner)?.[1] as string
  t.match(banner, new RegExp(`up\\s+${base}/up/mcp\\s+tools: add, whoami, block`))
  t.match(banner, new RegExp(`greet\\s+${base}/hello/mcp\\s+tools: echoHai`), 'the banner shows a custom prefix')
  t.match(banner, new RegExp(`all\\s+${base}/mcp`))
  t.notMatch(banner, /math/, 'the built-in servers not in the config are not mounted')
  const res = await fetch(`${base}/up/tools/add`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":5,"b":3}' })
  t.equal(res.status, 200)
  const hello = await fetch(`${base}/hello/tools/echoHai`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"userName":"Ada"}' })
  t.equal(hello.status, 200)
  child.kill('SIGTERM')
  t.equal(await exited(child), 0)
})

t.test('a module entry runs its factory in process; one that does not load exits 2 naming the entry', async t => {
  const dir = t.testdir({
    'my-server.mjs': [
      "import { McpServer } from '@modelcontextprotocol/server'",
      "import * as z from 'zod'",
      'export function createServer () {',
      "  const server = new McpServer({ name: 'mine', version: '1.0.0' })",
      "  server.registerTool('shout', { inputSchema: z.object({ text: z.string() }) }, async ({ text }) => ({ content: [{ type: 'text', text: text.toUpperCase() }] }))",
      '  return server',
      '}'
    ].join('\n'),
    'gateway.json': JSON.stringify({ mcpServers: { mine: { module: './my-server.mjs', export: 'createServer' } } }),
    'broken.json': JSON.stringify({ mcpServers: { gone: { module: './no-such-file.mjs' } } })
  })
  const child = run(['--config', `${dir}/gateway.json`, '--port', '0'])
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const banner = await waitForBanner(child)
  const base = /listening on (http:\/\/\S+)/.exec(banner)?.[1] as string
  t.match(banner, new RegExp(`mine\\s+${base}/mine/mcp\\s+tools: shout`))
  const res = await fetch(`${base}/mine/tools/shout`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text":"hi"}' })
  t.equal(res.status, 200)
  t.match(await res.json(), { content: [{ text: 'HI' }] })
  child.kill('SIGTERM')
  t.equal(await exited(child), 0)

  const broken = run(['--config', `${dir}/broken.json`, '--port', '0'])
  t.equal(await exited(broken), 2)
  t.match(broken.output(), /mcpServers\.gone\.module: cannot load '.*no-such-file\.mjs'/)
  t.notMatch(broken.output(), /listening/)
})

t.test('--check loads module entries as a start does: one that does not load exits 2 with the same message', async t => {
  const dir = t.testdir({
    'good.mjs': 'export function createServer () { throw new Error("--check must not build the server") }\n',
    'good.json': JSON.stringify({ mcpServers: { mine: { module: './good.mjs', export: 'createServer' } } }),
    'broken.json': JSON.stringify({ mcpServers: { gone: { module: './no-such-file.mjs' } } }),
    'unexported.json': JSON.stringify({ mcpServers: { mine: { module: './good.mjs', export: 'build' } } })
  })
  const good = run(['--check', '--config', `${dir}/good.json`])
  t.equal(await exited(good), 0, good.output())
  t.equal(good.output(), `OK: ${dir}/good.json: 1 server: mine (module at /mine)\n`)
  for (const file of ['broken.json', 'unexported.json']) {
    const checked = run(['--check', '--config', `${dir}/${file}`])
    t.equal(await exited(checked), 2)
    const started = run(['--config', `${dir}/${file}`, '--port', '0'])
    t.equal(await exited(started), 2)
    // Node's own message names the importing file: src/app.ts at a start, src/server.ts here.
    const importer = (output: string): string => output.replace(/imported from \S+/, 'imported from <gateway>')
    t.equal(importer(checked.output()), importer(started.output()), `${file}: the start's message`)
  }
  const broken = run(['--check', '--config', `${dir}/broken.json`])
  await exited(broken)
  t.match(broken.output(), /^fastify-mcp-gateway: Invalid options: mcpServers\.gone\.module: cannot load '.*no-such-file\.mjs'/)
})

t.test('SIGTERM drains: calls in flight past --drain-timeout are answered with an error and cancelled upstream, and the exit is 0', async t => {
  const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
  const dir = t.testdir({ 'gateway.json': JSON.stringify({ mcpServers: { up: { command: process.execPath, args: [fixture] } } }) })
  const child = run(['--config', `${dir}/gateway.json`, '--port', '0', '--drain-timeout', '500'], { LOG_LEVEL: 'info' })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const base = /listening on (http:\/\/\S+)/.exec(await waitForBanner(child))?.[1] as string
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js')
  const client = new Client({ name: 'drain-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/up/mcp`)))
  const rest = fetch(`${base}/up/tools/block`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"label":"rest"}' })
  const session = client.callTool({ name: 'block', arguments: { label: 'session' } }).then(() => undefined, (err: unknown) => err)
  while (!/block started rest/.test(child.output()) || !/block started session/.test(child.output())) {
    await once(child.stdout as NodeJS.ReadableStream, 'data')
  }
  child.kill('SIGTERM')
  const refused = await rest
  t.equal(refused.status, 503, 'the REST call is answered when the drain times out')
  t.match(await refused.json(), { code: 'GW_ERR_SHUTTING_DOWN' })
  t.match(await session, { message: /shutting down/ }, 'the MCP call gets a JSON-RPC error on its stream')
  t.equal(await exited(child), 0)
  t.match(child.output(), /block cancelled rest/, 'the upstream was told the REST call is cancelled')
  t.match(child.output(), /block cancelled session/, 'and the session call')
  await client.close().catch(() => {})
})
