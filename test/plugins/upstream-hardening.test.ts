import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import type { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import gateway from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { ConfigError } from '../../src/errors.js'
import type { UpstreamConnection } from '../../src/connections/upstream.js'
import { alive, logCapture, json, mcpClient, text } from '../helper.js'

// The upstream's side of the gateway under hostile or careless upstreams: no secret of an
// entry in any answer, a bound on per-session child processes, and a child's stderr kept
// bounded. Real child processes, real HTTP, the gateway built from a config as the command
// builds it, its log written to memory.

const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
const noisy = fileURLToPath(new URL('../fixtures/hardening-stderr.mjs', import.meta.url))
const crash = fileURLToPath(new URL('../fixtures/hardening-crash.mjs', import.meta.url))
/** No reconnect while a test runs: each failure is the one the test caused. */
const noRetry = { retry: { initialMs: 600_000 } }


/** The gateway of a config's `mcpServers`, listening on loopback, logging at debug into memory. */
async function gatewayOf (t: Test, mcpServers: Record<string, unknown>) {
  const config = parseConfig(JSON.stringify({ mcpServers, gateway: { aggregate: false } }), 'gateway.json', {})
  const { stream, lines, raw, logged } = logCapture()
  const app: FastifyInstance = Fastify({ logger: { level: 'debug', stream } })
  await app.register(gateway, { config })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const connection = (name: string): UpstreamConnection => app.mcpRegistry.get(name)?.connection as UpstreamConnection
  return { app, base: `http://127.0.0.1:${port}`, lines, logged, log: () => raw.join(''), connection }
}

/** Polls a condition that has no event of its own (a process gone), a bounded number of times. */
async function eventually (condition: () => boolean): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (condition()) return true
    await delay(25)
  }
  return condition()
}

t.test('no secret of an entry reaches /ready, a 503 on REST or MCP, or the banner; the log has them masked', async t => {
  const secret = (label: string): string => `${label}-${randomBytes(6).toString('hex')}`
  const secrets = {
    urlPassword: secret('urlpass'),
    queryKey: secret('querykey'),
    header: secret('headertoken'),
    env: secret('envtoken'),
    arg: secret('argtoken'),
    body: secret('bodysecret')
  }
  // An upstream that refuses everyone, and says so with a secret of its own and the
  // credentials it was sent (as careless servers do).
  const upstream = createServer((req, res) => {
    req.resume()
    res.writeHead(401, { 'content-type': 'text/plain' })
    res.end(`${secrets.body}: rejected ${req.headers.authorization ?? ''} ${req.headers['x-api-key'] ?? ''}`)
  })
  upstream.listen(0, '127.0.0.1')
  await once(upstream, 'listening')
  t.teardown(() => { upstream.close() })
  const { port } = upstream.address() as { port: number }

  const { base, log, logged, connection } = await gatewayOf(t, {
    urlcreds: { url: `http://alice:${secrets.urlPassword}@127.0.0.1:${port}/mcp?api_key=${secrets.queryKey}`, ...noRetry },
    header: { url: `http://127.0.0.1:${port}/mcp`, headers: { Authorization: `Bearer ${secrets.header}` }, ...noRetry },
    sse: { type: 'sse', url: `http://127.0.0.1:${port}/sse?token=${secrets.queryKey}`, headers: { 'X-Api-Key': secrets.header }, ...noRetry },
    crash: { command: process.execPath, args: [crash, `--token=${secrets.arg}`], env: { HARDENING_TOKEN: secrets.env }, ...noRetry },
    nocmd: { command: '/nonexistent/hardening-mcp-server', args: ['--api-key', secrets.arg], env: { HARDENING_TOKEN: secrets.env }, ...noRetry }
  })
  const expected: Record<string, RegExp> = {
    urlcreds: /^HTTP 401 from the upstream$/,
    header: /^HTTP 401 from the upstream$/,
    sse: /^HTTP 401 from the upstream$/,
    crash: /^the server process exited with code 3 while starting \(see the log\)$/,
    nocmd: /^the command could not be started \(ENOENT\)$/
  }

  const answers: string[] = []
  const ready = await (await fetch(`${base}/ready`)).json() as { servers: Array<{ name: string, error?: string }> }
  answers.push(JSON.stringify(ready))
  for (const [name, failure] of Object.entries(expected)) {
    t.match(ready.servers.find(server => server.name === name)?.error, failure, `/ready says why ${name} is down, in the gateway's words`)
    t.match(connection(name).failure, failure, `the banner's failure of ${name} is the gateway's words`)
    answers.push(String(connection(name).failure))

    const rest = await fetch(`${base}/${name}/tools/anything`, { method: 'POST', headers: json, body: '{}' })
    t.equal(rest.status, 503)
    const restBody = await rest.text()
    t.match(JSON.parse(restBody), { code: 'GW_ERR_SERVER_UNAVAILABLE', message: `Server '${name}' is unavailable: ${connection(name).failure}` })
    answers.push(restBody, JSON.stringify(Object.fromEntries(rest.headers)))

    const mcp = await fetch(`${base}/${name}/mcp`, {
      method: 'POST',
      headers: { ...json, accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } })
    })
    t.equal(mcp.status, 503)
    const mcpBody = await mcp.text()
    t.match(JSON.parse(mcpBody), { jsonrpc: '2.0', error: { data: { code: 'GW_ERR_SERVER_UNAVAILABLE' } } })
    answers.push(mcpBody)
  }
  for (const name of Object.keys(expected)) await logged(line => line.msg === 'upstream mcp server is down' && line.mcpServer === name)

  const answered = answers.join('\n')
  const logText = log()
  const basic = Buffer.from(`alice:${secrets.urlPassword}`).toString('base64')
  for (const [kind, value] of Object.entries({ ...secrets, basic })) {
    t.notOk(answered.includes(value), `no ${kind} in any answer`)
    if (kind !== 'body') t.notOk(logText.includes(value), `no ${kind} in the log`)
  }
  t.ok(logText.includes(`http://alice:***@127.0.0.1:${port}/mcp?api_key=***`), 'the log names the URL, its secrets masked')
  t.ok(logText.includes('rejected *** '), 'a header value the upstream echoes is masked in the logged error')
  t.ok(logText.includes('rejected Basic ***'), 'URL credentials the upstream echoes are masked too')
  t.ok(logText.includes(secrets.body), "the upstream's own error body is in the log, for the operator")
  t.notOk(logText.includes('spawnargs'), "a spawn error's arguments are never logged")
  const crashed = await logged(line => line.msg === 'upstream mcp server is down' && line.mcpServer === 'crash')
  t.same(crashed.stderr, ['starting hardening-crash', 'fatal: the database refused token ***'], "the crashed child's stderr, its env value masked")
})

t.test('isolation "session": at most maxIsolated children; past it a session is refused, until one ends', async t => {
  const { app, base } = await gatewayOf(t, { solo: { command: process.execPath, args: [fixture], isolation: 'session', maxIsolated: 2 } })
  const whoami = async (client: Awaited<ReturnType<typeof mcpClient>>): Promise<number> => Number(text(await client.callTool({ name: 'whoami', arguments: {} })))
  const a = await mcpClient(t, `${base}/solo/mcp`, 'a')
  const b = await mcpClient(t, `${base}/solo/mcp`, 'b')
  const c = await mcpClient(t, `${base}/solo/mcp`, 'c')
  const [pidA, pidB] = [await whoami(a), await whoami(b)]
  t.not(pidA, pidB)

  const refused = await c.callTool({ name: 'whoami', arguments: {} }).then(() => undefined, (err: unknown) => err as { code: number, message: string, data?: { code?: string } })
  t.match(refused, { code: -32000, data: { code: 'GW_ERR_TOO_MANY_ISOLATED' } }, 'the third session is refused with the catalogue code')
  t.match(refused?.message, /\b2\b.*maxIsolated/, 'the message names the limit and the field')
  t.equal(await whoami(a), pidA, 'the sessions that have their child keep it')

  // Ending a session (DELETE) frees its slot.
  await (a.transport as LegacyTransport).terminateSession()
  t.ok(await eventually(() => !alive(pidA)), "the ended session's child is gone")
  const pidC = await whoami(c)
  t.not(pidC, pidB)
  t.ok(alive(pidC))

  await app.close()
  t.notOk(alive(pidB) || alive(pidC), 'no child outlives app.close()')
})

t.test('isolation "session": a per-session child idle for isolatedIdleMs is closed, and reopened on the next request', async t => {
  const { base, logged } = await gatewayOf(t, { solo: { command: process.execPath, args: [fixture], isolation: 'session', isolatedIdleMs: 100 } })
  const client = await mcpClient(t, `${base}/solo/mcp`)
  const first = Number(text(await client.callTool({ name: 'whoami', arguments: {} })))
  const closed = await logged(line => line.msg === 'closing an idle per-session upstream connection')
  t.equal(closed.pid, first)
  t.ok(await eventually(() => !alive(first)), 'the idle child exited')
  const second = Number(text(await client.callTool({ name: 'whoami', arguments: {} })))
  t.not(second, first, 'the session got a new child')
})

t.test("a child's stderr: long lines are cut at 8 KiB, floods are summed up, the last 50 lines are kept", async t => {
  const { base, lines, logged, connection } = await gatewayOf(t, { noisy: { command: process.execPath, args: [noisy] } })
  const call = async (tool: string, args: unknown): Promise<void> => {
    const res = await fetch(`${base}/noisy/tools/${tool}`, { method: 'POST', headers: json, body: JSON.stringify(args) })
    t.equal(res.status, 200)
  }

  await call('long', { bytes: 4 * 1024 * 1024 })
  const long = await logged(line => line.truncated === true)
  const logged8k = String(long.stderr)
  t.ok(logged8k.length <= 8192 && logged8k.length > 8000, `the line is cut at 8 KiB (${logged8k.length} characters logged)`)
  t.notOk(logged8k.includes('end-of-long-line'), 'what came after the cut is dropped')
  t.match(connection('noisy').stderrTail().at(-1), /^x+ \[truncated\]$/, 'the tail marks the cut line')

  await call('many', { count: 200 })
  const dropped = await logged(line => line.msg === 'upstream mcp server stderr lines dropped')
  t.ok(Number(dropped.dropped) > 0, `lines over the rate are dropped and counted (${String(dropped.dropped)})`)
  const burst = lines.filter(line => typeof line.stderr === 'string' && /^line \d+ of 200$/.test(line.stderr))
  t.ok(burst.length <= 40, `at most 20 lines a second reach the log (${burst.length} of 200)`)
  t.ok(await eventually(() => connection('noisy').stderrTail().at(-1) === 'line 200 of 200'))
  const tail = connection('noisy').stderrTail()
  t.equal(tail.length, 50, 'the last 50 lines are kept')
  t.equal(tail[0], 'line 151 of 200')
})

t.test('a stdio server that crashes at boot: its exit code in /ready, its stderr once in the log', async t => {
  const { base, lines, logged, connection } = await gatewayOf(t, { crashy: { command: process.execPath, args: [crash], ...noRetry } })
  const ready = await (await fetch(`${base}/ready`)).json() as { servers: Array<{ name: string, error?: string }> }
  t.match(ready.servers, [{ name: 'crashy', state: 'down', error: 'the server process exited with code 3 while starting (see the log)' }])
  const down = await logged(line => line.msg === 'upstream mcp server is down')
  t.same(down.stderr, ['starting hardening-crash', 'fatal: the database refused token none'], 'the stderr of the failed start is one entry')
  t.equal(lines.filter(line => line.msg === 'upstream mcp server stderr').length, 0, 'and not separate lines')
  t.same(connection('crashy').stderrTail(), ['starting hardening-crash', 'fatal: the database refused token none'])
})

t.test('maxIsolated and isolatedIdleMs are checked, and refused on in-process entries', async t => {
  const parse = (entry: Record<string, unknown>): unknown => parseConfig(JSON.stringify({ mcpServers: { s: entry } }), 'gateway.json', {}, ['greet'])
  t.match(parse({ command: 'x', isolation: 'session', maxIsolated: 3, isolatedIdleMs: 1000 }), { servers: [{ maxIsolated: 3, isolatedIdleMs: 1000 }] })
  t.throws(() => parse({ command: 'x', maxIsolated: 0 }), new ConfigError('gateway.json: mcpServers.s.maxIsolated must be a whole number, at least 1 (got 0)'))
  t.throws(() => parse({ command: 'x', isolatedIdleMs: 'soon' }), { message: /mcpServers\.s\.isolatedIdleMs must be a whole number of milliseconds/ })
  t.throws(() => parse({ builtin: 'greet', maxIsolated: 2 }), { message: /mcpServers\.s\.maxIsolated applies only to stdio, http and sse servers/ })
})
