import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { alive, mcpClient, text } from '../helper.js'

// Config reload as a user meets it: the command with a config file, changed on disk (`--watch`)
// or followed by SIGHUP, while MCP clients hold sessions open.

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))
const stdioServer = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
const growingServer = fileURLToPath(new URL('../fixtures/growing-server.mjs', import.meta.url))

type Gateway = ChildProcess & { output: () => string, logged: (message: string, after?: number) => Promise<Record<string, unknown>>, base: string }

/** Runs the command on a config file; resolves once it listens, with its base URL. */
async function start (t: Test, file: string, args: string[] = []): Promise<Gateway> {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, '--config', file, '--port', '0', ...args], {
    env: { ...process.env, LOG_LEVEL: 'info', LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(async () => {
    if (child.exitCode !== null) return
    child.kill('SIGTERM')
    await once(child, 'exit')
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  const lines = (): Array<Record<string, unknown>> => output.split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as Record<string, unknown>)
  /** The `after`-th log line (0-based) with this message, written already or still to come. */
  const logged = async (message: string, after = 0): Promise<Record<string, unknown>> => {
    for (;;) {
      const found = lines().filter(line => line.msg === message)[after]
      if (found !== undefined) return found
      if (child.exitCode !== null) throw new Error(`exited early: ${output}`)
      await once(child.stdout, 'data')
    }
  }
  while (!/health\s+http/.test(output)) {
    if (child.exitCode !== null) throw new Error(`exited early: ${output}`)
    await once(child.stdout, 'data')
  }
  const base = /listening on (http:\/\/\S+)/.exec(output)?.[1] as string
  return Object.assign(child, { output: () => output, logged, base })
}

function configDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'gateway-reload-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

const stdio = (label: string): Record<string, unknown> => ({ command: process.execPath, args: [stdioServer, label] })

async function call (base: string, path: string, body: unknown = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

async function pidOf (base: string, server: string): Promise<number> {
  const { body } = await call(base, `/${server}/tools/whoami`)
  return Number(text(body))
}

t.test('--watch: a reload adds, changes and removes servers; untouched ones keep their sessions and children', async t => {
  const dir = configDir(t)
  const file = join(dir, 'mcp.json')
  writeFileSync(file, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math' }, keep: stdio('keep'), gone: stdio('gone') } }))
  const gateway = await start(t, file, ['--watch'])
  const { base } = gateway

  const keepPid = await pidOf(base, 'keep')
  const gonePid = await pidOf(base, 'gone')
  const keepClient = await mcpClient(t, `${base}/keep/mcp`, 'keep-client')
  const greetClient = await mcpClient(t, `${base}/greet/mcp`, 'greet-client')
  const mathClient = await mcpClient(t, `${base}/math/mcp`, 'math-client')
  const allClient = await mcpClient(t, `${base}/mcp`, 'aggregate-client')
  const keepSession = (keepClient.transport as { sessionId?: string }).sessionId
  const greetSession = (greetClient.transport as { sessionId?: string }).sessionId
  t.ok(keepSession, 'a 2025 session on the stdio server')
  const listChanged = new Promise<void>(resolve => { allClient.setNotificationHandler(ToolListChangedNotificationSchema, () => { resolve() }) })

  // Added: bye; changed: math (a new timeout); removed: gone; untouched: greet and keep.
  writeFileSync(file, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math', timeoutMs: 5000 }, keep: stdio('keep'), bye: { builtin: 'bye' } } }))
  const reloaded = await gateway.logged('config reloaded')
  t.same(reloaded.added, ['bye'])
  t.same(reloaded.changed, ['math'])
  t.same(reloaded.removed, ['gone'])

  // Untouched: the same sessions, answering, and the same child process.
  t.equal((keepClient.transport as { sessionId?: string }).sessionId, keepSession)
  t.equal(text(await keepClient.callTool({ name: 'add', arguments: { a: 2, b: 3 } })), '5', 'the stdio session answers after the reload')
  t.equal((greetClient.transport as { sessionId?: string }).sessionId, greetSession)
  t.match(text(await greetClient.callTool({ name: 'echoHai', arguments: { userName: 'x' } })), /Hello, x/, 'the in-process session answers after the reload')
  t.equal(await pidOf(base, 'keep'), keepPid, 'the untouched stdio server kept its child')
  t.ok(alive(keepPid))

  // Removed: its child stopped, its routes gone. Changed: its sessions ended.
  t.notOk(alive(gonePid), 'the removed server\'s child was stopped')
  t.equal((await call(base, '/gone/tools/whoami')).status, 404)
  await t.rejects(mathClient.callTool({ name: 'add', arguments: { a: 1, b: 1 } }), 'the changed server\'s session ended')
  t.same((await call(base, '/math/tools/add', { a: 1, b: 1 })).body.structuredContent, { sum: 2 }, 'the changed server serves again')

  // Added: served over REST and MCP, documented, and in /mcp, whose clients were told.
  const bye = await call(base, '/bye/tools/echoBye', { userName: 'Ann' })
  t.equal(bye.status, 200)
  await listChanged
  const tools = (await allClient.listTools()).tools.map(tool => tool.name)
  t.ok(tools.some(name => name.startsWith('bye_')), 'the added server is in /mcp')
  t.notOk(tools.some(name => name.startsWith('gone_')), 'the removed one is not')
  const document = await (await fetch(`${base}/docs/json`)).json() as { paths: Record<string, unknown> }
  t.ok(Object.keys(document.paths).some(path => path.startsWith('/bye/')), 'the added server is documented')
  t.notOk(Object.keys(document.paths).some(path => path.startsWith('/gone/')), 'the removed one is not')
  const ready = await (await fetch(`${base}/ready`)).json() as { servers: Array<{ name: string }> }
  t.same(ready.servers.map(server => server.name).sort(), ['bye', 'greet', 'keep', 'math'])
})

t.test('an invalid config is refused: logged, shown on /ready, and the running config keeps serving', async t => {
  const dir = configDir(t)
  const file = join(dir, 'mcp.json')
  writeFileSync(file, JSON.stringify({ mcpServers: { keep: stdio('keep') } }))
  const gateway = await start(t, file, ['--watch'])
  const client = await mcpClient(t, `${gateway.base}/keep/mcp`)
  const pid = await pidOf(gateway.base, 'keep')

  writeFileSync(file, JSON.stringify({ mcpServers: { keep: { ...stdio('keep'), timeoutMS: 5 } } }))
  const refused = await gateway.logged('config reload refused: the running config keeps serving')
  t.match(JSON.stringify(refused), /timeoutMS/)
  const ready = await (await fetch(`${gateway.base}/ready`)).json() as { reload?: { ok: boolean, error?: string } }
  t.equal(ready.reload?.ok, false)
  t.match(ready.reload?.error, /timeoutMS.*timeoutMs/)
  const status = await (await fetch(`${gateway.base}/status.json`)).json() as { gateway: { reload: { ok: boolean, error?: string } | null } }
  t.match(status.gateway.reload, { ok: false, error: /timeoutMS/ }, 'the status page is told too')
  t.equal(text(await client.callTool({ name: 'add', arguments: { a: 1, b: 2 } })), '3', 'the session goes on')
  t.equal(await pidOf(gateway.base, 'keep'), pid, 'and so does the child')

  // Fixed: applied, and /ready says so.
  writeFileSync(file, JSON.stringify({ mcpServers: { keep: { ...stdio('keep'), timeoutMs: 5000 } } }))
  await gateway.logged('config reloaded')
  const after = await (await fetch(`${gateway.base}/ready`)).json() as { reload?: { ok: boolean } }
  t.equal(after.reload?.ok, true)
})

t.test('SIGHUP reloads the config instead of stopping the gateway', async t => {
  const dir = configDir(t)
  const file = join(dir, 'mcp.json')
  writeFileSync(file, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' } } }))
  const gateway = await start(t, file)
  const client = await mcpClient(t, `${gateway.base}/greet/mcp`)

  // Written without --watch: nothing happens until the signal.
  writeFileSync(file, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math' } }, gateway: { aggregate: false } }))
  gateway.kill('SIGHUP')
  const reloaded = await gateway.logged('config reloaded')
  t.same(reloaded.added, ['math'])
  t.equal(gateway.exitCode, null, 'still running')
  t.same((await call(gateway.base, '/math/tools/add', { a: 2, b: 2 })).body.structuredContent, { sum: 4 })
  t.match(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'y' } })), /Hello, y/)
  // The gateway section applies too: /mcp is off now.
  t.equal((await fetch(`${gateway.base}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' })).status, 404)

  // A policy added by a second reload holds on the session opened before it, which goes on.
  writeFileSync(file, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math' } }, gateway: { aggregate: false, policy: [{ match: {}, allow: ['math/*'] }] } }))
  gateway.kill('SIGHUP')
  const second = await gateway.logged('config reloaded', 1)
  t.same([second.added, second.changed, second.removed], [[], [], []], 'no server was touched')
  const denied = await client.callTool({ name: 'echoHai', arguments: { userName: 'z' } }).then(result => result, (err: Error) => err)
  t.match(String(denied instanceof Error ? denied.message : JSON.stringify(denied)), /not found/i, 'the policy refuses the call as an unknown tool')
  t.same((await client.listTools()).tools, [], 'and hides it from the list')
  t.equal((await call(gateway.base, '/greet/tools/echoHai', { userName: 'z' })).status, 404)
  t.equal((await call(gateway.base, '/math/tools/add', { a: 1, b: 1 })).status, 200)

  gateway.kill('SIGTERM')
  const [code] = await once(gateway, 'exit')
  t.equal(code, 0)
})

t.test('tools a server adds after boot get their REST route and documentation, and sessions go on', async t => {
  const dir = configDir(t)
  const file = join(dir, 'mcp.json')
  writeFileSync(file, JSON.stringify({ mcpServers: { growing: { module: growingServer, export: 'createServer' }, keep: stdio('keep') } }))
  const gateway = await start(t, file)
  const client = await mcpClient(t, `${gateway.base}/keep/mcp`)
  const pid = await pidOf(gateway.base, 'keep')
  const documented = async (): Promise<string[]> => Object.keys((await (await fetch(`${gateway.base}/docs/json`)).json() as { paths: Record<string, unknown> }).paths)
  t.notOk((await documented()).includes('/growing/tools/grown'))

  t.equal((await call(gateway.base, '/growing/tools/grow')).status, 200)
  await gateway.logged('the OpenAPI document and REST routes follow the servers\' new tools')
  t.ok((await documented()).includes('/growing/tools/grown'), 'the new tool is documented')
  t.equal(text((await call(gateway.base, '/growing/tools/grown', { word: 'up' })).body), 'grown up')
  t.equal((await call(gateway.base, '/growing/tools/grown', { word: 5 })).status, 400, 'and its arguments are validated')
  t.equal(text(await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } })), '2', 'another server\'s session goes on')
  t.equal(await pidOf(gateway.base, 'keep'), pid)
})
