import t, { type Test } from 'tap'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'

// The package as a user gets it: `npm pack` (whose `prepare` builds dist), the tarball
// installed into an empty folder with no dev dependency, and `npx fastify-mcp-gateway` run
// from there. One pack and one install for the whole file: they take most of a minute.

const root = fileURLToPath(new URL('../../', import.meta.url))
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

/** Pack and install, bounded; the file's own timeout (tap's, per file) is raised to match. */
const PACK_AND_INSTALL_MS = 420_000
t.setTimeout(PACK_AND_INSTALL_MS + 120_000)

/**
 * The environment of a machine with only Node: none of the npm settings of an `npm test`
 * around this one, nor tap's NODE_OPTIONS hooks.
 */
function cleanEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('npm_') && key !== 'NODE_OPTIONS'))
  return { ...env, ...extra }
}

interface Run { code: number | null, stdout: string, stderr: string }

function run (command: string, args: string[], cwd: string, options: { env?: Record<string, string>, timeout?: number } = {}): Promise<Run> {
  return new Promise(resolve => {
    execFile(command, args, { cwd, env: cleanEnv(options.env), timeout: options.timeout ?? 60_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

async function busyPort (t: Test): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return (server.address() as { port: number }).port
}

t.test('the packed package installed into an empty folder runs as npx fastify-mcp-gateway', { timeout: PACK_AND_INSTALL_MS + 60_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-mcp-gateway-package-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))

  const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], root, { timeout: PACK_AND_INSTALL_MS / 2 })
  // tsc reports its errors on stdout.
  if (packed.code !== 0) throw new Error(`npm pack failed:\n${packed.stdout}\n${packed.stderr}`)
  const [{ filename, files }] = JSON.parse(packed.stdout) as Array<{ filename: string, files: Array<{ path: string }> }>
  const paths = files.map(file => file.path)
  for (const needed of ['dist/src/server.js', 'dist/src/index.js', 'dist/plugins/core.js', 'dist/servers/greet/index.js', 'plugins/status/index.html', 'plugins/status/status.js']) {
    t.ok(paths.includes(needed), `the tarball carries ${needed}`)
  }
  t.notOk(paths.some(path => path.endsWith('.ts') && !path.endsWith('.d.ts')), 'and no TypeScript source')
  t.notOk(paths.some(path => path.startsWith('test/') || path.startsWith('dist/test/') || path.startsWith('dist/bench/')), 'nor tests or the benchmark')

  const app = join(dir, 'app')
  mkdirSync(app)
  // Its own package.json, so npm installs here and not into a project above.
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'empty', private: true }))
  const installed = await run('npm', ['install', join(dir, filename), '--no-audit', '--no-fund', '--prefer-offline'], app, { timeout: PACK_AND_INSTALL_MS / 2 })
  if (installed.code !== 0) throw new Error(`npm install of the tarball failed:\n${installed.stdout}\n${installed.stderr}`)
  const installedDir = join(app, 'node_modules/fastify-mcp-gateway')
  t.ok(readFileSync(join(installedDir, 'dist/src/server.js'), 'utf8').startsWith('#!/usr/bin/env node\n'), 'the command has its shebang')
  t.notOk(existsSync(join(app, 'node_modules/typescript')) || existsSync(join(app, 'node_modules/tsx')), 'no TypeScript tooling was installed: the command runs on Node alone')

  writeFileSync(join(app, 'mcp.json'), JSON.stringify({ mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math' } } }))
  const npx = (args: string[], env?: Record<string, string>): Promise<Run> => run('npx', ['fastify-mcp-gateway', ...args], app, { ...(env !== undefined && { env }) })

  await t.test('it serves a REST and an MCP call, its status page and docs, and exits 0 on SIGTERM', async t => {
    const child = spawn('npx', ['fastify-mcp-gateway', '--config', 'mcp.json', '--port', '0', '--log-format', 'json'], {
      cwd: app,
      env: cleanEnv({ LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true
    }) as ChildProcess & { stdout: NodeJS.ReadableStream }
    let output = ''
    child.stdout.on('data', chunk => { output += chunk })
    child.stderr?.on('data', chunk => { output += chunk })
    // npx runs the command through a shell and passes no SIGTERM on (it leaves the command
    // running), so the gateway is stopped by its own PID; this is only for a failed test.
    t.teardown(() => { if (child.exitCode === null) process.kill(-(child.pid as number), 'SIGKILL') })
    while (!/health\s+http/.test(output)) {
      if (child.exitCode !== null) throw new Error(`exited early: ${output}`)
      await once(child.stdout, 'data')
    }
    const base = /listening on (http:\/\/\S+)/.exec(output)?.[1] as string
    t.match(output, new RegExp(`greet\\s+${base}/greet/mcp\\s+tools: echoHai`))

    const rest = await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"userName":"Ada"}' })
    t.equal(rest.status, 200)
    t.match(await rest.json(), { content: [{ type: 'text', text: 'Hello, Ada!' }] })

    const client = new Client({ name: 'package-test', version: '1.0.0' })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`)))
    t.match(await client.callTool({ name: 'math_add', arguments: { a: 2, b: 3 } }), { content: [{ type: 'text', text: '5' }], structuredContent: { sum: 5 } })
    await client.close()

    // Files read at run time from the package: the status page's, ReDoc's bundle, Swagger UI's.
    const page = await fetch(`${base}/`, { headers: { accept: 'text/html' } })
    t.equal(page.status, 200)
    t.match(await page.text(), /<html/i)
    t.equal((await fetch(`${base}/status.js`)).status, 200)
    t.equal((await fetch(`${base}/redoc/redoc.standalone.js`)).status, 200)
    t.equal((await fetch(`${base}/docs`)).status, 200)

    const pid = Number(/"pid":(\d+)/.exec(output)?.[1])
    t.not(pid, child.pid, 'the gateway is its own process under npx')
    process.kill(pid, 'SIGTERM')
    const [code] = await once(child, 'exit') as [number | null]
    t.equal(code, 0, 'the gateway exits 0, and npx with it')
    t.match(output, /shutting down/)
  })

  await t.test('--version names the command and its version', async t => {
    const result = await npx(['--version'])
    t.equal(result.code, 0)
    t.equal(result.stdout, `fastify-mcp-gateway ${version}\n`)
  })

  await t.test('--check validates the config, names the servers and exits 0 without listening', async t => {
    // A port in use would stop a start; --check never listens.
    const result = await npx(['--check', '--config', 'mcp.json', '--port', String(await busyPort(t))])
    t.equal(result.code, 0, result.stderr)
    t.equal(result.stdout, `OK: ${join(app, 'mcp.json')}: 2 servers: greet (builtin at /greet), math (builtin at /math)\n`)
  })

  await t.test('--check of an invalid config exits 2 with the messages a start gives', async t => {
    writeFileSync(join(app, 'bad.json'), JSON.stringify({ mcpServers: { files: { command: 'npx', args: 'oops' } } }))
    const checked = await npx(['--check', '--config', 'bad.json'])
    t.equal(checked.code, 2)
    t.equal(checked.stdout, '')
    t.match(checked.stderr, /^fastify-mcp-gateway: bad\.json: mcpServers\.files\.args must be an array of strings \(got string\)$/m)
    const started = await npx(['--config', 'bad.json', '--port', '0'])
    t.equal(started.code, 2)
    t.equal(checked.stderr, started.stderr, 'the same messages as a start')
  })

  await t.test('--print-config prints the effective config with secrets masked', async t => {
    const secret = `pkg-test-${Math.random().toString(36).slice(2)}`
    writeFileSync(join(app, 'secret.json'), JSON.stringify({
      mcpServers: {
        tool: { command: 'node', args: ['server.js'], env: { API_TOKEN: '${PKG_TEST_SECRET}', MODE: 'fast' } },
        remote: { url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer ${PKG_TEST_SECRET}' }, timeoutMs: 5000 }
      }
    }))
    const result = await npx(['--print-config', '--config', 'secret.json'], { PKG_TEST_SECRET: secret })
    t.equal(result.code, 0, result.stderr)
    t.notMatch(result.stdout + result.stderr, secret, 'the secret is never printed')
    const printed = JSON.parse(result.stdout) as { file: string, servers: Array<Record<string, unknown>> }
    t.equal(printed.file, join(app, 'secret.json'))
    t.same(printed.servers[0], { name: 'tool', kind: 'stdio', command: 'node', args: ['server.js'], env: { API_TOKEN: '***', MODE: '***' } })
    t.same(printed.servers[1], { name: 'remote', kind: 'http', timeoutMs: 5000, url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer ***' } })
  })
})
