import t from 'tap'
import { once } from 'node:events'
import { mock } from 'node:test'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { listen } from '../helper.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createProgressServer, toolEvents } from '../fixtures/servers.js'
import { createConformanceServer } from '../fixtures/conformance/server.js'

// 2025-era sessions, at the HTTP level: what a client sees on the wire.

const accept = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }

async function openSession (base: string, path: string, protocolVersion = '2025-06-18'): Promise<Record<string, string>> {
  const init = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: accept,
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
  })
  const sessionId = init.headers.get('mcp-session-id')
  if (sessionId === null) throw new Error(`no session: ${init.status} ${await init.text()}`)
  await init.body?.cancel()
  const headers = { ...accept, 'mcp-session-id': sessionId, 'mcp-protocol-version': protocolVersion }
  await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  return headers
}

t.test('progress in a session streams on the POST as SSE', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer }] })
  const client = new LegacyClient({ name: 'legacy-test', version: '1.0.0' })
  await client.connect(new LegacyTransport(new URL(`${base}/progress/mcp`)))
  t.teardown(() => client.close())
  const seen: number[] = []
  const result = await client.callTool({ name: 'count', arguments: { label: 'stars' } }, undefined, { onprogress: progress => { seen.push(progress.progress) } })
  t.same(seen, [1, 2, 3])
  t.same(result.content, [{ type: 'text', text: 'counted stars' }])
})

t.test('with jsonResponse a session answers with one JSON body', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, jsonResponse: true }] })
  const headers = await openSession(base, '/greet/mcp')
  const res = await fetch(`${base}/greet/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 'x', method: 'tools/call', params: { name: 'echoHai', arguments: { userName: 'Ada' } } }) })
  t.match(res.headers.get('content-type'), /application\/json/)
  t.equal(res.headers.get('mcp-session-id'), headers['mcp-session-id'])
  t.same(await res.json(), { jsonrpc: '2.0', id: 'x', result: { content: [{ type: 'text', text: 'Hello, Ada!' }] } })
})

t.test('a batch of requests is answered with an array, in order (2025-03-26, the last revision with batches)', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, jsonResponse: true }] })
  const headers = await openSession(base, '/greet/mcp', '2025-03-26')
  const res = await fetch(`${base}/greet/mcp`, {
    method: 'POST',
    headers,
    body: JSON.stringify([
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echoHai', arguments: { userName: 'A' } } },
      { jsonrpc: '2.0', id: 2, method: 'ping' }
    ])
  })
  const answers = await res.json()
  t.same(answers.map((a: { id: number }) => a.id), [1, 2])
  t.same(answers[0].result.content, [{ type: 'text', text: 'Hello, A!' }])
})

t.test('transport errors answer as the SDK transport does', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }] })
  const headers = await openSession(base, '/greet/mcp')
  const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })

  const jsonOnly = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...headers, accept: 'application/json' }, body: call })
  t.equal(jsonOnly.status, 406)
  t.match(await jsonOnly.json(), { error: { message: /must accept both application\/json and text\/event-stream/ } })

  const badVersion = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...headers, 'mcp-protocol-version': '1999-01-01' }, body: call })
  t.equal(badVersion.status, 400)
  t.match(await badVersion.json(), { error: { message: /Unsupported protocol version: 1999-01-01/ } })

  const again = await fetch(`${base}/greet/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }) })
  t.equal(again.status, 400)
  t.match(await again.json(), { error: { message: /already initialized/ } })

  const notification = await fetch(`${base}/greet/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/roots/list_changed' }) })
  t.equal(notification.status, 202)
})

t.test('a client that disconnects mid-call in a session cancels the tool', async t => {
  const { base } = await listen(t, { servers: [{ name: 'progress', factory: createProgressServer }] })
  const headers = await openSession(base, '/progress/mcp')
  const controller = new AbortController()
  const started = once(toolEvents, 'hold:started')
  const response = fetch(`${base}/progress/mcp`, {
    method: 'POST', headers, signal: controller.signal, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'hold', arguments: {} } })
  }).catch(err => err)
  await started
  const cancelled = once(toolEvents, 'hold:cancelled')
  controller.abort()
  await cancelled
  t.match(await response, { name: 'AbortError' })
  // The session lives on.
  const ping = await fetch(`${base}/progress/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }) })
  t.equal(ping.status, 200)
})

t.test('past maxSessions the least recently used idle session makes way; DELETE frees one too', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, maxSessions: 1 }] })
  const first = await openSession(base, '/greet/mcp')
  const second = await openSession(base, '/greet/mcp')
  const gone = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: first, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) })
  t.equal(gone.status, 404, 'the evicted session is unknown, so its client initializes again')
  const deleted = await fetch(`${base}/greet/mcp`, { method: 'DELETE', headers: second })
  t.equal(deleted.status, 200)
  await t.resolves(openSession(base, '/greet/mcp'))
})

t.test('an empty POST body gets a JSON-RPC parse error; an empty DELETE body is fine', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }] })
  const empty = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: accept, body: '' })
  t.equal(empty.status, 400)
  t.match(await empty.json(), { jsonrpc: '2.0', error: { code: -32700 } }, 'a JSON-RPC parse error')
  const headers = await openSession(base, '/greet/mcp')
  t.equal((await fetch(`${base}/greet/mcp`, { method: 'DELETE', headers })).status, 200, 'DELETE with content-type and no body')
})

t.test('an open SSE stream carries a keep-alive comment every 15 s', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }] })
  const headers = await openSession(base, '/greet/mcp')
  mock.timers.enable({ apis: ['setInterval'] })
  t.teardown(() => { mock.timers.reset() })
  const stream = await fetch(`${base}/greet/mcp`, { headers: { ...headers, accept: 'text/event-stream' } })
  t.equal(stream.status, 200)
  const reader = (stream.body as ReadableStream<Uint8Array>).getReader()
  mock.timers.tick(15_000)
  const { value } = await reader.read()
  t.equal(new TextDecoder().decode(value), ': keep-alive\n\n')
  await reader.cancel()
})

t.test('a stream the server closes mid-call is resumed with Last-Event-ID', async t => {
  const { base } = await listen(t, { servers: [{ name: 'conformance', factory: createConformanceServer }] })
  const headers = await openSession(base, '/conformance/mcp', '2025-11-25')
  const post = await fetch(`${base}/conformance/mcp`, {
    method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'test_reconnection', arguments: {} } })
  })
  t.match(post.headers.get('content-type'), /text\/event-stream/)
  // The tool closes the stream before answering: all the client gets is the priming event.
  const primed = await post.text()
  const lastEventId = /^id: (\S+)$/m.exec(primed)?.[1] as string
  t.match(primed, /^retry: \d+$/m, 'the priming event says when to reconnect')
  t.notMatch(primed, /"result"/)

  const resumed = await fetch(`${base}/conformance/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  t.equal(resumed.status, 200)
  const rest = await resumed.text()
  const answer = JSON.parse(/^data: (.+)$/m.exec(rest)?.[1] ?? 'null')
  t.match(answer, { id: 7, result: { content: [{ type: 'text', text: 'Reconnection test completed' }] } }, 'the answer arrives on the resumed stream')
  t.match(rest, /^id: \S+$/m)

  const again = await fetch(`${base}/conformance/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  t.equal(again.status, 400, 'a stream read to its end is gone')
})

t.test('a client before 2025-11-25 gets no priming event and cannot be asked to reconnect', async t => {
  const { base } = await listen(t, { servers: [{ name: 'conformance', factory: createConformanceServer }] })
  const headers = await openSession(base, '/conformance/mcp', '2025-06-18')
  const post = await fetch(`${base}/conformance/mcp`, {
    method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'test_reconnection', arguments: {} } })
  })
  // No closeSSE for this client: the answer comes on the POST, as one JSON body.
  t.match(await post.json(), { id: 8, result: { content: [{ text: 'Reconnection test completed' }] } })
})
