import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { builtinEntries } from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createFailingServer } from '../fixtures/servers.js'
import { json, legacyRequest, listen, mcpClient, mcpHeaders, modernRequest, text } from '../helper.js'

// `/metrics`: what a Prometheus scrape sees after real calls on every way in, for an
// in-process server and a stdio upstream, and what it sees of the gateway's state.

const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))

interface Sample { name: string, labels: Record<string, string>, value: number }

/**
 * Parses the Prometheus text format strictly: every line is a `# HELP`, a `# TYPE` or a
 * sample, and every sample belongs to a family with a `# TYPE` line. Throws on anything else.
 */
function parse (exposition: string): { types: Map<string, string>, samples: Sample[] } {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of exposition.split('\n')) {
    if (line === '' || /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* /.test(line)) continue
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line)
    if (type !== null) {
      types.set(type[1] as string, type[2] as string)
      continue
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (sample === null) throw new Error(`not a line of the Prometheus text format: ${line}`)
    const name = sample[1] as string
    if (!types.has(name) && !types.has(name.replace(/_(bucket|sum|count)$/, ''))) throw new Error(`a sample without a # TYPE line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g)) labels[key as string] = value as string
    // prom-client writes NaN as `Nan`, which Prometheus reads (Go's ParseFloat ignores case).
    const raw = sample[3] as string
    const value = /^nan$/i.test(raw) ? NaN : Number(raw === '+Inf' ? Infinity : raw)
    if (Number.isNaN(value) && !/^nan$/i.test(raw)) throw new Error(`not a number: ${line}`)
    samples.push({ name, labels, value })
  }
  return { types, samples }
}

/** Scrapes `url` and parses what it answered. */
async function scrape (t: Test, url: string, headers: Record<string, string> = {}): Promise<Metrics> {
  const res = await fetch(url, { headers })
  t.equal(res.status, 200, `GET ${new URL(url).pathname}: 200`)
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  return new Metrics(parse(await res.text()))
}

class Metrics {
  constructor (readonly parsed: { types: Map<string, string>, samples: Sample[] }) {}
  /** The sum of the samples named `name` whose labels include `labels`; undefined when there is none. */
  value (name: string, labels: Record<string, string> = {}): number | undefined {
    const matching = this.parsed.samples.filter(s => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value))
    return matching.length === 0 ? undefined : matching.reduce((sum, s) => sum + s.value, 0)
  }

  /** Every value label `label` takes on samples named `name`. */
  labelValues (name: string, label: string): string[] {
    return [...new Set(this.parsed.samples.filter(s => s.name === name).map(s => s.labels[label] as string))]
  }
}

function configWith (servers: Record<string, unknown>) {
  return parseConfig(JSON.stringify({ mcpServers: servers }), 'gateway.json')
}

async function modern (url: string, name: string, args: Record<string, unknown>): Promise<string> {
  return await (await fetch(url, modernRequest('tools/call', { name, arguments: args }))).text()
}

async function legacy (url: string, name: string, args: Record<string, unknown>): Promise<string> {
  return await (await fetch(url, legacyRequest('tools/call', { name, arguments: args }))).text()
}

async function rest (url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(body) })
}

t.test('every tool call is counted once on every way in, under the member server\'s own names, for an in-process and a stdio upstream server', async t => {
  const config = configWith({
    greet: { builtin: 'greet' },
    'greet-stateless': { builtin: 'greet', stateless: true },
    fixture: { command: process.execPath, args: [fixture] }
  })
  const { base } = await listen(t, { config })
  const ada = { userName: 'Ada' }

  t.match(await (await rest(`${base}/greet/tools/echoHai`, ada)).text(), /Hello, Ada!/)
  t.match(text(await (await mcpClient(t, `${base}/greet/mcp`)).callTool({ name: 'echoHai', arguments: ada })), /Hello, Ada!/)
  t.match(await modern(`${base}/greet/mcp`, 'echoHai', ada), /Hello, Ada!/)
  t.match(await legacy(`${base}/greet-stateless/mcp`, 'echoHai', ada), /Hello, Ada!/)
  const aggregate = await mcpClient(t, `${base}/mcp`)
  t.match(text(await aggregate.callTool({ name: 'greet_echoHai', arguments: ada })), /Hello, Ada!/)

  const sum = { a: 1, b: 2 }
  t.match(await (await rest(`${base}/fixture/tools/add`, sum)).text(), /3/)
  const upstream = await mcpClient(t, `${base}/fixture/mcp`)
  t.match(text(await upstream.callTool({ name: 'add', arguments: sum })), /3/)
  t.match(await modern(`${base}/fixture/mcp`, 'add', sum), /3/)
  t.match(text(await aggregate.callTool({ name: 'fixture_add', arguments: sum })), /3/)
  await upstream.listTools()

  const metrics = await scrape(t, `${base}/metrics`)
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet', tool: 'echoHai', outcome: 'ok' }), 4, 'greet: REST, 2025 session, 2026-07-28 and /mcp')
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet-stateless', tool: 'echoHai', outcome: 'ok' }), 1, 'a 2025 stateless request')
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'fixture', tool: 'add', outcome: 'ok' }), 4, 'the stdio upstream: REST, 2025 session, 2026-07-28 and /mcp')
  t.same(metrics.labelValues('mcp_tool_calls_total', 'server').sort(), ['fixture', 'greet', 'greet-stateless'], '/mcp counts under its members, never as a server of its own')

  const greetCalls = { mcp_method_name: 'tools/call', server: 'greet', tool: 'echoHai', outcome: 'ok' }
  t.equal(metrics.value('mcp_server_operation_duration_seconds_count', greetCalls), 4, 'the histogram has an observation per call')
  t.equal(metrics.value('mcp_server_operation_duration_seconds_bucket', { ...greetCalls, le: '+Inf' }), 4)
  t.ok((metrics.value('mcp_server_operation_duration_seconds_bucket', { ...greetCalls, le: '60' }) ?? 0) === 4, 'every call under the 60 s bucket')
  t.ok((metrics.value('mcp_server_operation_duration_seconds_sum', greetCalls) ?? 0) > 0, 'durations are summed')
  t.same(metrics.labelValues('mcp_server_operation_duration_seconds_bucket', 'le').slice(0, 1), ['0.001'], 'buckets start at 1 ms')
  t.ok((metrics.value('mcp_server_operation_duration_seconds_count', { mcp_method_name: 'tools/list', server: 'fixture', tool: '' }) ?? 0) >= 1, 'lists are observed, with an empty tool label')

  t.equal(metrics.parsed.types.get('mcp_tool_calls_total'), 'counter')
  t.equal(metrics.parsed.types.get('mcp_server_operation_duration_seconds'), 'histogram')
  t.equal(metrics.parsed.types.get('process_cpu_user_seconds_total'), 'counter', "prom-client's default process metrics")
  t.equal(metrics.parsed.types.get('nodejs_eventloop_lag_seconds'), 'gauge')
})

t.test('HTTP requests are timed by route pattern, never by raw URL, unmatched ones under one value', async t => {
  const { base } = await listen(t)
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' })).status, 200)
  t.equal((await rest(`${base}/greet/tools/made-up`, {})).status, 404)
  t.equal((await fetch(`${base}/no/such/place-1`)).status, 404)
  t.equal((await fetch(`${base}/no/such/place-2`)).status, 404)
  t.equal((await fetch(`${base}/ready`)).status, 200)

  const metrics = await scrape(t, `${base}/metrics`)
  t.equal(metrics.parsed.types.get('http_request_duration_seconds'), 'histogram')
  t.equal(metrics.value('http_request_duration_seconds_count', { method: 'POST', route: '/greet/tools/echoHai', status_code: '200' }), 1)
  t.equal(metrics.value('http_request_duration_seconds_count', { method: 'POST', route: '/greet/tools/:tool', status_code: '404' }), 1, 'an unknown tool by its parametric route')
  t.equal(metrics.value('http_request_duration_seconds_count', { method: 'GET', route: '_unmatched', status_code: '404' }), 2, 'unmatched paths share one value')
  t.equal(metrics.value('http_request_duration_seconds_count', { method: 'GET', route: '/ready', status_code: '200' }), 1)
  t.notOk(metrics.labelValues('http_request_duration_seconds_count', 'route').some(route => route.includes('place') || route.includes('made-up')), 'no raw URL becomes a label')
})

t.test('a tool the server does not list is counted under one `_unknown` label, whatever the name', async t => {
  const { base } = await listen(t)
  const client = await mcpClient(t, `${base}/greet/mcp`)
  for (const name of ['made-up-1', 'made-up-2', 'made-up-3']) {
    const result = await client.callTool({ name, arguments: {} }).catch((err: Error) => ({ isError: true, content: [{ type: 'text', text: err.message }] }))
    t.equal(result.isError, true, `${name}: an error`)
  }
  const metrics = await scrape(t, `${base}/metrics`)
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet', tool: '_unknown' }), 3)
  t.notOk(metrics.labelValues('mcp_tool_calls_total', 'tool').some(tool => tool.startsWith('made-up')), 'no made-up name becomes a label')
})

t.test('mcp_server_up is 1 for a server that is up and 0 for one that failed to start', async t => {
  const { base } = await listen(t, { servers: [...builtinEntries(), { name: 'db', factory: createFailingServer }] })
  const metrics = await scrape(t, `${base}/metrics`)
  t.equal(metrics.parsed.types.get('mcp_server_up'), 'gauge')
  t.equal(metrics.value('mcp_server_up', { server: 'db' }), 0)
  t.equal(metrics.value('mcp_server_up', { server: 'greet' }), 1)
  t.equal(metrics.value('mcp_server_up', { server: 'math' }), 1)
})

t.test('the gauges read at scrape time: live sessions, their GET streams and listen streams', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }] })
  const url = `${base}/greet/mcp`
  const before = await scrape(t, `${base}/metrics`)
  t.equal(before.value('mcp_sessions', { server: 'greet' }), 0)
  t.equal(before.value('mcp_session_streams', { server: 'greet' }), 0)
  t.equal(before.value('mcp_listen_streams', { server: 'greet' }), 0)

  const init = await fetch(url, legacyRequest('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } }))
  const sessionId = init.headers.get('mcp-session-id') as string
  await init.body?.cancel()
  const session = { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' }
  await (await fetch(url, { method: 'POST', headers: session, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })).body?.cancel()
  const stream = await fetch(url, { headers: { ...session, accept: 'text/event-stream' } })
  t.equal(stream.status, 200, 'the session\'s GET stream is open')
  t.teardown(() => stream.body?.cancel())
  const listening = await fetch(url, modernRequest('subscriptions/listen', { notifications: { toolsListChanged: true } }))
  t.match(listening.headers.get('content-type'), /text\/event-stream/, 'the listen stream is open')
  t.teardown(() => listening.body?.cancel())

  const during = await scrape(t, `${base}/metrics`)
  t.equal(during.value('mcp_sessions', { server: 'greet' }), 1)
  t.equal(during.value('mcp_session_streams', { server: 'greet' }), 1)
  t.equal(during.value('mcp_listen_streams', { server: 'greet' }), 1)
  t.equal(during.value('mcp_sessions', { server: 'gateway' }), 0, '/mcp has its own, as `gateway`')

  await (await fetch(url, { method: 'DELETE', headers: session })).body?.cancel()
  const after = await scrape(t, `${base}/metrics`)
  t.equal(after.value('mcp_sessions', { server: 'greet' }), 0, 'a closed session is gone')
  t.equal(after.value('mcp_session_streams', { server: 'greet' }), 0, 'and its stream with it')
})

t.test('an upstream\'s restarts and its per-session child processes are counted', async t => {
  const crashing = new UpstreamConnection('crashing', { transport: { kind: 'stdio', command: process.execPath, args: [fixture], env: {} }, retry: { initialMs: 10 } })
  const config = configWith({ isolated: { command: process.execPath, args: [fixture], isolation: 'session' } })
  const { base } = await listen(t, { config })
  const isolated = await mcpClient(t, `${base}/isolated/mcp`)
  t.match(text(await isolated.callTool({ name: 'add', arguments: { a: 1, b: 1 } })), /2/)
  const metrics = await scrape(t, `${base}/metrics`)
  t.equal(metrics.value('mcp_upstream_isolated_connections', { server: 'isolated' }), 1, 'one session, one child process of its own')
  t.equal(metrics.value('mcp_upstream_restarts_total', { server: 'isolated' }), 0)

  const second = await listen(t, { servers: [{ name: 'crashing', connection: crashing }] })
  const pid = crashing.pid as number
  const back = new Promise<void>(resolve => { crashing.onListChanged(() => { resolve() }) })
  process.kill(pid, 'SIGKILL')
  await back
  const restarted = await scrape(t, `${second.base}/metrics`)
  t.equal(restarted.parsed.types.get('mcp_upstream_restarts_total'), 'counter')
  t.equal(restarted.value('mcp_upstream_restarts_total', { server: 'crashing' }), 1, 'the crash brought one restart')
  t.equal(restarted.value('mcp_server_up', { server: 'crashing' }), 1, 'and it is up again')
})

t.test('refused credentials and rate-limited calls are counted', async t => {
  const key = 'metrics-test-key'
  const { base } = await listen(t, {
    servers: [{ name: 'greet', factory: createGreetServer }],
    security: {
      auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} },
      rateLimit: { max: 1, timeWindow: 60_000, servers: {} }
    }
  })
  const withKey = { 'x-api-key': key }
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' })).status, 401, 'no credentials')
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' }, { 'x-api-key': 'wrong' })).status, 401, 'a wrong key')
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' }, withKey)).status, 200)
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' }, withKey)).status, 429, 'over the limit')

  const metrics = await scrape(t, `${base}/metrics`, withKey)
  t.equal(metrics.value('mcp_gateway_auth_failures_total', { code: 'GW_ERR_UNAUTHENTICATED' }), 2)
  t.equal(metrics.value('mcp_rate_limited_calls_total', { server: 'greet', method: 'tools/call' }), 1)
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet', tool: 'echoHai', outcome: 'rate_limited' }), 1)
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet', tool: 'echoHai', outcome: 'ok' }), 1)
})

t.test('a missing scope is counted as an auth failure', async t => {
  const key = 'metrics-test-key'
  const { base } = await listen(t, {
    servers: [{ name: 'greet', factory: createGreetServer, scopes: ['greet:call'] }],
    security: { auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} } }
  })
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' }, { 'x-api-key': key })).status, 403)
  // /metrics is the gateway's own resource, which needs no scope.
  const metrics = await scrape(t, `${base}/metrics`, { 'x-api-key': key })
  t.equal(metrics.value('mcp_gateway_auth_failures_total', { code: 'GW_ERR_INSUFFICIENT_SCOPE' }), 1)
})

t.test('with `protect`, /metrics needs the gateway\'s credentials', async t => {
  const key = 'metrics-test-key'
  const { base } = await listen(t, {
    servers: [{ name: 'greet', factory: createGreetServer }],
    security: { auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} } },
    observability: { metrics: { protect: true } }
  })
  t.equal((await fetch(`${base}/metrics`)).status, 401)
  await scrape(t, `${base}/metrics`, { 'x-api-key': key })
})

t.test('without `protect`, /metrics answers without credentials on a gateway that requires them', async t => {
  const { base } = await listen(t, {
    servers: [{ name: 'greet', factory: createGreetServer }],
    security: { auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update('k').digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} } }
  })
  await scrape(t, `${base}/metrics`)
})

t.test('`port` serves /metrics on a port of its own, closed with the gateway', async t => {
  const { app, base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }], observability: { metrics: { port: 0 } } })
  t.equal((await rest(`${base}/greet/tools/echoHai`, { userName: 'Ada' })).status, 200)
  t.equal((await fetch(`${base}/metrics`)).status, 404, 'not on the gateway\'s port')
  const server = app.gatewayMetrics.server
  t.ok(server?.listening, 'listening')
  const own = `http://127.0.0.1:${(server?.address() as AddressInfo).port}`
  const metrics = await scrape(t, `${own}/metrics`)
  t.equal(metrics.value('mcp_tool_calls_total', { server: 'greet', tool: 'echoHai', outcome: 'ok' }), 1)
  t.equal((await fetch(`${own}/other`)).status, 404, 'it serves nothing else')
  await app.close()
  t.notOk(server?.listening, 'closed with the gateway')
})

t.test('metrics can be turned off: no /metrics', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }], observability: { metrics: { enabled: false } } })
  t.equal((await fetch(`${base}/metrics`)).status, 404)
})
