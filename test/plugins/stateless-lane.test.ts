import t from 'tap'
import { once } from 'node:events'
import { McpServer } from '@modelcontextprotocol/server'
import { listen } from '../helper.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createAskingServer, createProgressServer, toolEvents } from '../fixtures/servers.js'
import { createConformanceServer } from '../fixtures/conformance/server.js'

// Stateless requests of both eras are answered on one shared, long-lived connection per
// server and era. These tests pin down what sharing must never change for a client.

const headers = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
const modernMeta = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'lane-test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {}
}

function modernCall (name: string, args: Record<string, unknown>, id: number | string, meta: Record<string, unknown> = {}): RequestInit {
  return {
    method: 'POST',
    headers: { ...headers, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args, _meta: { ...modernMeta, ...meta } } })
  }
}

function legacyCall (name: string, args: Record<string, unknown>, id: number | string, meta?: Record<string, unknown>): RequestInit {
  return {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args, ...(meta !== undefined && { _meta: meta }) } })
  }
}

t.test('concurrent requests with the same JSON-RPC id each get their own answer', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, stateless: true }] })
  const names = Array.from({ length: 20 }, (_, i) => `user${i}`)
  const answers = await Promise.all(names.map(async (userName, i) => {
    const init = i % 2 === 0 ? legacyCall('echoHai', { userName }, 1) : modernCall('echoHai', { userName }, 1)
    const res = await fetch(`${base}/greet/mcp`, init)
    return res.json()
  }))
  for (const [i, answer] of answers.entries()) {
    t.equal(answer.id, 1, 'the client sees its own id')
    t.same(answer.result.content, [{ type: 'text', text: `Hello, ${names[i]}!` }])
  }
})

t.test('progress notifications stream as SSE before the result', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer, stateless: true }] })
  for (const init of [legacyCall('count', { label: 'sheep' }, 'a', { progressToken: 'p1' }), modernCall('count', { label: 'sheep' }, 'a', { progressToken: 'p1' })]) {
    const res = await fetch(`${base}/progress/mcp`, init)
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /text\/event-stream/)
    const events = (await res.text()).split('\n\n').filter(Boolean).map(frame => JSON.parse(frame.split('data: ')[1]))
    t.same(events.slice(0, 3).map(e => [e.method, e.params.progress, e.params.progressToken]), [
      ['notifications/progress', 1, 'p1'], ['notifications/progress', 2, 'p1'], ['notifications/progress', 3, 'p1']
    ])
    t.match(events[3], { id: 'a', result: { content: [{ type: 'text', text: 'counted sheep' }] } })
  }
})

t.test('a call that sends no notification is answered with plain JSON', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer, stateless: true }] })
  const res = await fetch(`${base}/progress/mcp`, legacyCall('count', { label: 'goats' }, 3))
  t.match(res.headers.get('content-type'), /application\/json/)
  t.match(await res.json(), { id: 3, result: { content: [{ type: 'text', text: 'counted goats' }] } })
})

t.test('a client that disconnects mid-call cancels the tool', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer, stateless: true }] })
  for (const init of [legacyCall('hold', {}, 1), modernCall('hold', {}, 1)]) {
    const controller = new AbortController()
    const started = once(toolEvents, 'hold:started')
    const response = fetch(`${base}/progress/mcp`, { ...init, signal: controller.signal }).catch(err => err)
    await started
    const cancelled = once(toolEvents, 'hold:cancelled')
    controller.abort()
    await cancelled
    t.match(await response, { name: 'AbortError' })
  }
})

t.test('once a lane has answered, its later calls (dispatched past the SDK entry) answer, stream and cancel as the first', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer, stateless: true }] })
  for (const [era, call] of [['2025', legacyCall], ['2026-07-28', modernCall]] as const) {
    const first = await fetch(`${base}/progress/mcp`, call('count', { label: 'sheep' }, 1))
    t.match(await first.json(), { id: 1, result: { content: [{ type: 'text', text: 'counted sheep' }] } }, `${era}: the first call, through the entry`)
    // Later calls take the quicker way into the pinned instance.
    const [a, b] = await Promise.all([1, 1].map(async (id, i) => await (await fetch(`${base}/progress/mcp`, call('count', { label: `goat ${i}` }, id))).json()))
    t.match([a, b], [{ id: 1, result: { content: [{ text: 'counted goat 0' }] } }, { id: 1, result: { content: [{ text: 'counted goat 1' }] } }], `${era}: two at once with the same id, each its own answer`)
    const streamed = await fetch(`${base}/progress/mcp`, call('count', { label: 'cows' }, 7, { progressToken: 'p' }))
    t.match(streamed.headers.get('content-type'), /text\/event-stream/, `${era}: progress streams`)
    t.match(await streamed.text(), /"progressToken":"p"[\s\S]*counted cows/, `${era}: progress, then the result`)
    const controller = new AbortController()
    const started = once(toolEvents, 'hold:started')
    const response = fetch(`${base}/progress/mcp`, { ...call('hold', {}, 8), signal: controller.signal }).catch(err => err)
    await started
    const cancelled = once(toolEvents, 'hold:cancelled')
    controller.abort()
    await cancelled
    t.match(await response, { name: 'AbortError' }, `${era}: a client that disconnects cancels the tool`)
  }
})

t.test('the SDK internals a lane relies on are where it expects them', async t => {
  // lanes.ts, `directDelivery`: a request reaches a pinned instance through its protocol's dispatch.
  const server = new McpServer({ name: 'probe', version: '1' })
  t.equal(typeof (server.server as unknown as { _onrequest?: unknown })._onrequest, 'function', 'Protocol._onrequest')
  t.ok('transport' in server.server, 'Protocol.transport, unset until connected')
  t.equal(server.server.transport, undefined)
})

t.test('a server→client request without a session fails the call at once', async t => {
  const { base } = await listen(t, { servers: [{ name: 'asker', factory: createAskingServer, stateless: true }] })
  const res = await fetch(`${base}/asker/mcp`, legacyCall('askName', {}, 9))
  const body = await res.json()
  t.equal(body.id, 9)
  t.equal(body.result.isError, true)
  t.match(body.result.content[0].text, /elicitation/i)
})

t.test('2026-07-28 errors carry the HTTP status the revision asks for', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, stateless: true }] })
  const modern = (method: string, params: Record<string, unknown> = {}): RequestInit => ({
    method: 'POST',
    headers: { ...headers, 'mcp-protocol-version': '2026-07-28', 'mcp-method': method },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { ...params, _meta: modernMeta } })
  })
  // A method the server has no handler for: rejected before dispatch, 404.
  const prompts = await fetch(`${base}/greet/mcp`, modern('prompts/list'))
  t.equal(prompts.status, 404)
  t.match(await prompts.json(), { id: 1, error: { code: -32601 } })
  // ping was removed in 2026-07-28.
  const ping = await fetch(`${base}/greet/mcp`, modern('ping'))
  t.equal(ping.status, 404)
  // A handler's own error is in-band: 200.
  const unknownTool = await fetch(`${base}/greet/mcp`, {
    ...modern('tools/call', { name: 'nope', arguments: {} }),
    headers: { ...headers, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'nope' }
  })
  t.equal(unknownTool.status, 200)
  t.match(await unknownTool.json(), { id: 1, error: { code: -32602 } })
  // The 2025 era answers JSON-RPC errors with 200.
  const legacy = await fetch(`${base}/greet/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'prompts/list' }) })
  t.equal(legacy.status, 200)
  t.match(await legacy.json(), { id: 2, error: { code: -32601 } })
})

t.test('a list change announced during a call reaches 2026-07-28 listen streams', async t => {
  const { base } = await listen(t, { servers: [{ name: 'conformance', factory: createConformanceServer, stateless: true }] })
  const controller = new AbortController()
  t.teardown(() => { controller.abort() })
  const stream = await fetch(`${base}/conformance/mcp`, {
    method: 'POST',
    signal: controller.signal,
    headers: { ...headers, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 'listen', method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true }, _meta: modernMeta } })
  })
  t.equal(stream.status, 200)
  const reader = (stream.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  async function nextMessage (): Promise<{ method?: string }> {
    while (!buffered.includes('\n\n')) {
      const { value, done } = await reader.read()
      if (done) throw new Error('the listen stream ended')
      buffered += decoder.decode(value, { stream: true })
    }
    const frame = buffered.slice(0, buffered.indexOf('\n\n'))
    buffered = buffered.slice(buffered.indexOf('\n\n') + 2)
    const data = frame.split('\n').find(line => line.startsWith('data: '))
    return data === undefined ? await nextMessage() : JSON.parse(data.slice(6))
  }
  t.match(await nextMessage(), { method: 'notifications/subscriptions/acknowledged' })
  const trigger = await fetch(`${base}/conformance/mcp`, modernCall('test_trigger_tool_change', {}, 5))
  t.match(await trigger.json(), { id: 5, result: {} })
  t.match(await nextMessage(), { method: 'notifications/tools/list_changed' })
})
