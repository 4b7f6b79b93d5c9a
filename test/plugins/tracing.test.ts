import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import type { FastifyInstance } from 'fastify'
import type { GatewayOptions } from '../../src/app.js'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import { json, listen, mcpClient, text } from '../helper.js'

// Traces as an operator sees them: the gateway's real OTLP/HTTP exporter posts to a collector
// this test runs, and the spans it receives say which MCP operation ran, under whose trace.

const fixture = fileURLToPath(new URL('../fixtures/tracing-upstream.mjs', import.meta.url))

// The tests set the endpoint themselves; a developer's own OTel settings must not leak in.
for (const name of ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_SERVICE_NAME']) Reflect.deleteProperty(process.env, name)

interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  kind: number
  attributes: Record<string, unknown>
  links: Array<{ traceId: string, spanId: string }>
  service: unknown
}

/** A collector: every span the exporter POSTs to `/v1/traces` (OTLP/HTTP, JSON). */
async function collector (t: Test): Promise<{ url: string, spans: ReceivedSpan[], posts: () => number }> {
  const spans: ReceivedSpan[] = []
  let posts = 0
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', chunk => chunks.push(chunk))
    req.on('end', () => {
      posts++
      if (req.url === '/v1/traces' && req.headers['content-type'] === 'application/json') {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
        for (const resource of body.resourceSpans ?? []) {
          const service = attributes(resource.resource?.attributes)['service.name']
          for (const scope of resource.scopeSpans ?? []) {
            for (const span of scope.spans ?? []) {
              spans.push({ ...span, parentSpanId: span.parentSpanId ?? '', attributes: attributes(span.attributes), links: span.links ?? [], service })
            }
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('expected a TCP address')
  return { url: `http://127.0.0.1:${address.port}/v1/traces`, spans, posts: () => posts }
}

function attributes (list: Array<{ key: string, value: Record<string, unknown> }> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const { key, value } of list ?? []) out[key] = Object.values(value)[0]
  return out
}

const CLIENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CLIENT_SPAN = '00f067aa0ba902b7'
const TRACEPARENT = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`
const SERVER_KIND = 2

/** Exports what the gateway has pending: once this resolves, the collector has answered the POST. */
async function flush (app: FastifyInstance): Promise<void> {
  await app.tracerProvider.forceFlush()
}

/** The span named so, exactly one. */
function one (t: Test, spans: ReceivedSpan[], name: string): ReceivedSpan {
  const found = spans.filter(span => span.name === name)
  t.equal(found.length, 1, `one span named '${name}'`)
  return found[0] as ReceivedSpan
}

/** Whether `span` descends from the span with id `ancestor` within the collected spans. */
function descends (spans: ReceivedSpan[], span: ReceivedSpan, ancestor: string): boolean {
  let parent = span.parentSpanId
  for (let hops = 0; hops < 10 && parent !== ''; hops++) {
    if (parent === ancestor) return true
    parent = spans.find(candidate => candidate.spanId === parent)?.parentSpanId ?? ''
  }
  return false
}

function tracedUpstream (): UpstreamConnection {
  return new UpstreamConnection('traced', { transport: { kind: 'stdio', command: process.execPath, args: [fixture], env: {} } })
}

async function tracedGateway (t: Test, endpoint: string, options: GatewayOptions = {}): Promise<{ app: FastifyInstance, base: string }> {
  return await listen(t, { observability: { tracing: { endpoint, serviceName: 'gateway-under-test' } }, ...options })
}

t.test('a REST call is traced under the caller\'s traceparent header, with the MCP attributes', async t => {
  const otlp = await collector(t)
  const { app, base } = await tracedGateway(t, otlp.url)
  const res = await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: { ...json, traceparent: TRACEPARENT }, body: JSON.stringify({ userName: 'Ada' }) })
  t.equal(res.status, 200)
  await flush(app)

  const call = one(t, otlp.spans, 'tools/call echoHai')
  t.equal(call.traceId, CLIENT_TRACE, 'the caller\'s trace')
  t.equal(call.kind, SERVER_KIND)
  t.match(call.attributes, { 'mcp.method.name': 'tools/call', 'gen_ai.tool.name': 'echoHai', 'gen_ai.operation.name': 'execute_tool' })
  t.notOk('error.type' in call.attributes, 'no error')
  t.notOk('mcp.session.id' in call.attributes, 'REST has no MCP session')
  t.equal(call.service, 'gateway-under-test')
  const request = otlp.spans.find(span => span.attributes['fastify.root'] === '@fastify/otel' && span.attributes['url.path'] === '/greet/tools/echoHai')
  t.ok(request, '@fastify/otel\'s HTTP request span')
  t.equal(request?.parentSpanId, CLIENT_SPAN, 'the HTTP span is the child of the caller\'s span')
  t.ok(descends(otlp.spans, call, request?.spanId ?? '-'), 'the MCP span is inside the HTTP request\'s span')

  await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: 1, b: 2 }) })
  await flush(app)
  const fresh = one(t, otlp.spans, 'tools/call add')
  t.not(fresh.traceId, CLIENT_TRACE, 'a call without traceparent starts a trace of its own')
})

t.test('calls on /<server>/mcp are traced with the session, protocol version and JSON-RPC id, under _meta.traceparent', async t => {
  const otlp = await collector(t)
  const { app, base } = await tracedGateway(t, otlp.url)

  // A 2025-era session client (SDK v1) puts the trace context in params._meta.
  const legacy = await mcpClient(t, `${base}/greet/mcp`)
  const answer = await legacy.callTool({ name: 'echoHai', arguments: { userName: 'Ada' }, _meta: { traceparent: TRACEPARENT } })
  t.equal(text(answer), 'Hello, Ada!')
  await legacy.listTools()
  await flush(app)
  const call = one(t, otlp.spans, 'tools/call echoHai')
  t.equal(call.traceId, CLIENT_TRACE)
  t.equal(call.parentSpanId, CLIENT_SPAN, '_meta.traceparent is the parent')
  t.equal(call.kind, SERVER_KIND)
  t.match(call.attributes, { 'mcp.method.name': 'tools/call', 'gen_ai.tool.name': 'echoHai', 'mcp.protocol.version': /^2025-/, 'mcp.session.id': String, 'jsonrpc.request.id': String })
  t.equal(call.links.length, 1, 'linked to the HTTP request\'s span it replaced as parent')
  const list = one(t, otlp.spans, 'tools/list')
  t.equal(list.attributes['mcp.method.name'], 'tools/list')

  // A call that fails says how, as the JSON-RPC error code the client got.
  await t.rejects(legacy.callTool({ name: 'nope', arguments: {} }))
  await flush(app)
  t.match(one(t, otlp.spans, 'tools/call nope').attributes, { 'rpc.response.status_code': '-32602', 'error.type': '-32602' })

  // A 2026-07-28 client: its version, and never a session id.
  const modern = new Client({ name: 'modern', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } })
  await modern.connect(new StreamableHTTPClientTransport(new URL(`${base}/bye/mcp`)))
  t.teardown(() => modern.close())
  const MODERN_PARENT = '1111111111111111'
  await modern.callTool({ name: 'echoBye', arguments: { userName: 'Ada' }, _meta: { traceparent: `00-${CLIENT_TRACE}-${MODERN_PARENT}-01` } })
  await flush(app)
  const modernCall = one(t, otlp.spans, 'tools/call echoBye')
  t.equal(modernCall.traceId, CLIENT_TRACE)
  t.equal(modernCall.parentSpanId, MODERN_PARENT)
  t.equal(modernCall.attributes['mcp.protocol.version'], '2026-07-28')
  t.notOk('mcp.session.id' in modernCall.attributes, 'a 2026-07-28 request belongs to no session')

  // Without _meta trace context, the HTTP header's: the MCP span is inside that request's span.
  const HEADER_PARENT = '3333333333333333'
  const res = await fetch(`${base}/math/mcp`, {
    method: 'POST',
    headers: { accept: 'application/json, text/event-stream', 'content-type': 'application/json', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'add', traceparent: `00-${CLIENT_TRACE}-${HEADER_PARENT}-01` },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: { name: 'add', arguments: { a: 1, b: 2 }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} } }
    })
  })
  t.equal(res.status, 200)
  await res.text()
  await flush(app)
  const byHeader = one(t, otlp.spans, 'tools/call add')
  t.equal(byHeader.traceId, CLIENT_TRACE)
  // The shared lanes renumber requests; the span reports the id the client gave.
  t.equal(byHeader.attributes['jsonrpc.request.id'], '7', 'the client\'s JSON-RPC id')
  const request = otlp.spans.find(span => span.attributes['fastify.root'] === '@fastify/otel' && span.parentSpanId === HEADER_PARENT)
  t.ok(request !== undefined && descends(otlp.spans, byHeader, request.spanId), 'inside the span of the HTTP request that carried it')
})

t.test('a trace crosses a stdio upstream: it gets the gateway span\'s context in _meta.traceparent', async t => {
  const otlp = await collector(t)
  const { app, base } = await tracedGateway(t, otlp.url, { servers: [{ name: 'traced', connection: tracedUpstream() }] })

  // Over REST, the parent comes from the HTTP header.
  const res = await fetch(`${base}/traced/tools/traceparent`, { method: 'POST', headers: { ...json, traceparent: TRACEPARENT }, body: '{}' })
  const received = text(await res.json())
  await flush(app)
  const rest = one(t, otlp.spans, 'tools/call traceparent')
  t.equal(received, `00-${CLIENT_TRACE}-${rest.spanId}-01`, 'the upstream\'s parent is the gateway\'s span, in the client\'s trace')

  // Over MCP, from _meta: the client's traceparent is replaced, not passed through.
  const client = await mcpClient(t, `${base}/traced/mcp`)
  const PARENT = '2222222222222222'
  const relayed = text(await client.callTool({ name: 'traceparent', arguments: {}, _meta: { traceparent: `00-${CLIENT_TRACE}-${PARENT}-01` } }))
  await flush(app)
  const mcp = otlp.spans.filter(span => span.name === 'tools/call traceparent' && span.parentSpanId === PARENT)
  t.equal(mcp.length, 1)
  t.equal(relayed, `00-${CLIENT_TRACE}-${mcp[0]?.spanId ?? '-'}-01`)
})

t.test('tracing off: no spans, no exporter, and nothing added to upstream requests', async t => {
  const otlp = await collector(t)
  const { app, base } = await listen(t, { servers: [{ name: 'traced', connection: tracedUpstream() }] })
  t.notOk(app.hasDecorator('tracerProvider'), 'no tracer provider')
  t.notOk(app.hasRequestDecorator('opentelemetry'), 'no HTTP instrumentation')
  const res = await fetch(`${base}/traced/tools/traceparent`, { method: 'POST', headers: { ...json, traceparent: TRACEPARENT }, body: '{}' })
  t.equal(text(await res.json()), 'none', 'the upstream request carries no trace context')
  await app.close()
  t.equal(otlp.posts(), 0, 'nothing was exported')
})
