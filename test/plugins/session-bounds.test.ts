import t, { type Test } from 'tap'
import { once } from 'node:events'
import { listen, mcpClient, text } from '../helper.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createGateServer, toolEvents } from '../fixtures/servers.js'

// The bounds on what a client can hold open (sessions, GET streams, listen streams, batches),
// and that none of them locks other clients out.

const accept = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
const modernMeta = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'bounds-test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {}
}

function initialize (protocolVersion: string): RequestInit {
  return {
    method: 'POST',
    headers: accept,
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
  }
}

/** Opens a 2025-era session over raw HTTP; the headers its later requests carry. */
async function openSession (url: string, protocolVersion = '2025-06-18'): Promise<Record<string, string>> {
  const init = await fetch(url, initialize(protocolVersion))
  const sessionId = init.headers.get('mcp-session-id')
  if (sessionId === null) throw new Error(`no session: ${init.status} ${await init.text()}`)
  await init.body?.cancel()
  const headers = { ...accept, 'mcp-session-id': sessionId, 'mcp-protocol-version': protocolVersion }
  await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  return headers
}

/** The HTTP status of a `ping` in the session. */
async function ping (url: string, headers: Record<string, string>): Promise<number> {
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 'ping', method: 'ping' }) })
  await res.body?.cancel()
  return res.status
}

/** Starts a `gate` call in the session and resolves once the tool is running; the call stays in flight until `gate:open`. */
async function holdCall (t: Test, url: string, headers: Record<string, string>): Promise<void> {
  const waiting = once(toolEvents, 'gate:waiting')
  const answered = fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 'gate', method: 'tools/call', params: { name: 'gate', arguments: {} } }) })
    .then(async res => { await res.text() })
  t.teardown(async () => { toolEvents.emit('gate:open'); await answered })
  await waiting
}

t.test('at maxSessions a new session closes the least recently used one, which then answers 404', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, maxSessions: 3 }] })
  const url = `${base}/greet/mcp`
  const first = await openSession(url)
  const second = await openSession(url)
  const third = await openSession(url)
  t.equal(await ping(url, first), 200, 'using the first session makes the second the least recently used')

  const fourth = await openSession(url)
  const gone = await fetch(url, { method: 'POST', headers: second, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
  t.equal(gone.status, 404, 'the least recently used session was closed')
  t.match(await gone.json(), { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' } })
  t.same([await ping(url, first), await ping(url, third), await ping(url, fourth)], [200, 200, 200], 'the others live on')
})

t.test('a session with a call in flight is never evicted; when every one has a call, 503 with Retry-After', async t => {
  const { base } = await listen(t, { servers: [{ name: 'gate', factory: createGateServer, maxSessions: 2 }] })
  const url = `${base}/gate/mcp`
  const busy = await openSession(url)
  await holdCall(t, url, busy)
  const idle = await openSession(url)
  t.equal(await ping(url, idle), 200, 'the idle session is now the more recently used')

  const third = await openSession(url)
  t.equal(await ping(url, idle), 404, 'the idle session made room, though the busy one was used less recently')
  t.equal(await ping(url, busy), 200, 'the session with a call in flight lives on')

  await holdCall(t, url, third)
  const refused = await fetch(url, initialize('2025-06-18'))
  t.equal(refused.status, 503)
  t.equal(refused.headers.get('retry-after'), '5')
  t.match(await refused.json(), { jsonrpc: '2.0', id: null, error: { code: -32000, message: /limit of 2 sessions/, data: { code: 'GW_ERR_TOO_MANY_SESSIONS' } } })

  toolEvents.emit('gate:open')
  await t.resolves(openSession(url), 'once a call answers, its session can make room')
})

t.test('5,000 initialize calls do not lock out the next client', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }] })
  const url = `${base}/greet/mcp`
  const statuses = new Map<number, number>()
  let sent = 0
  // 50 at a time, 5,000 in all, against the default limit of 1,000 sessions.
  await Promise.all(Array.from({ length: 50 }, async () => {
    while (sent < 5000) {
      sent++
      const res = await fetch(url, initialize('2025-06-18'))
      await res.body?.cancel()
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
    }
  }))
  t.same(Object.fromEntries(statuses), { 200: 5000 }, 'every initialize got a session')

  const client = await mcpClient(t, url, 'latecomer')
  t.equal(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })), 'Hello, Ada!')
})

t.test('a GET stream ends after maxStreamLifetimeMs; a 2025-11-25 client is told when to reconnect', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, maxStreamLifetimeMs: 50 }] })
  const url = `${base}/greet/mcp`
  for (const version of ['2025-11-25', '2025-06-18']) {
    const headers = await openSession(url, version)
    const stream = await fetch(url, { headers: { ...headers, accept: 'text/event-stream' } })
    t.equal(stream.status, 200)
    const body = await stream.text()
    if (version === '2025-11-25') t.match(body, /^retry: \d+$/m, `${version}: a retry hint before the end`)
    else t.equal(body, '', `${version}: no hint for a client before 2025-11-25`)
    t.equal(await ping(url, headers), 200, `${version}: the session lives on`)
    const again = await fetch(url, { headers: { ...headers, accept: 'text/event-stream' } })
    t.equal(again.status, 200, `${version}: the client may reconnect at once`)
    await again.body?.cancel()
  }
})

t.test('a session whose only activity is its GET stream is closed when idle', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, sessionIdleMs: 1000 }] })
  const url = `${base}/greet/mcp`
  const headers = await openSession(url)
  const stream = await fetch(url, { headers: { ...headers, accept: 'text/event-stream' } })
  t.equal(stream.status, 200)
  // Ends when the idle sweep closes the session (the stream lifetime is the default, minutes).
  await stream.text()
  t.equal(await ping(url, headers), 404, 'the session is gone')
})

function listenRequest (id: string): RequestInit {
  return {
    method: 'POST',
    headers: { ...accept, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true }, _meta: modernMeta } })
  }
}

/** The first SSE message of a listen stream, a promise of the rest of it, and a way to hang up. */
async function acknowledged (res: Response): Promise<{ ack: unknown, rest: Promise<string>, cancel: () => Promise<void> }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  while (!buffered.includes('\n\n')) {
    const { value, done } = await reader.read()
    if (done) throw new Error('the listen stream ended before its acknowledgement')
    buffered += decoder.decode(value, { stream: true })
  }
  const data = /^data: (.+)$/m.exec(buffered)?.[1] ?? 'null'
  const rest = (async () => {
    let tail = ''
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) tail += decoder.decode(chunk.value, { stream: true })
    return tail
  })()
  return { ack: JSON.parse(data), rest, cancel: async () => { await reader.cancel() } }
}

t.test('a subscriptions/listen stream ends after maxListenLifetimeMs', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, maxListenLifetimeMs: 50 }] })
  const res = await fetch(`${base}/greet/mcp`, listenRequest('listen'))
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /text\/event-stream/)
  const { ack, rest } = await acknowledged(res)
  t.match(ack, { method: 'notifications/subscriptions/acknowledged', params: { notifications: { toolsListChanged: true } } }, 'a live subscription, not one the server ends at once')
  await rest
  t.pass('the stream ended')
})

t.test('listen streams beyond maxListenStreams are refused; one more is accepted once one ends', async t => {
  // The first stream must outlive the refused request, sent right after its acknowledgement
  // on loopback; a second is plenty.
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, maxListenStreams: 1, maxListenLifetimeMs: 1000 }] })
  const url = `${base}/greet/mcp`
  const first = await acknowledged(await fetch(url, listenRequest('first')))
  t.match(first.ack, { method: 'notifications/subscriptions/acknowledged' })

  const refused = await fetch(url, listenRequest('second'))
  t.match(await refused.json(), { id: 'second', error: { code: -32603, message: 'Subscription limit reached' } })

  await first.rest
  const third = await acknowledged(await fetch(url, listenRequest('third')))
  t.teardown(third.cancel)
  t.match(third.ack, { method: 'notifications/subscriptions/acknowledged' }, 'the slot was freed when the first ended')
})

function batch (length: number): string {
  return JSON.stringify(Array.from({ length }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'echoHai', arguments: { userName: `u${i}` } } })))
}

t.test('a batch is refused from 2025-06-18 on, by header or by the session\'s negotiated version', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer }, { name: 'solo', factory: createGreetServer, stateless: true }] })
  const url = `${base}/greet/mcp`
  const headers = await openSession(url, '2025-06-18')
  const { 'mcp-protocol-version': _, ...noVersion } = headers
  for (const [what, sent] of [['with the header', headers], ['without the header', noVersion]] as const) {
    const res = await fetch(url, { method: 'POST', headers: sent, body: batch(2) })
    t.equal(res.status, 400, what)
    t.match(await res.json(), { jsonrpc: '2.0', id: null, error: { code: -32600, message: /batches are not supported in protocol version 2025-06-18/ } }, what)
  }
  const stateless = await fetch(`${base}/solo/mcp`, { method: 'POST', headers: { ...accept, 'mcp-protocol-version': '2025-11-25' }, body: batch(2) })
  t.equal(stateless.status, 400, 'stateless too')
  t.match(await stateless.json(), { error: { code: -32600 } })
})

t.test('a 2025-03-26 batch is answered up to maxBatchLength and refused beyond it', async t => {
  const { base } = await listen(t, { servers: [{ name: 'greet', factory: createGreetServer, jsonResponse: true, maxBatchLength: 3 }] })
  const url = `${base}/greet/mcp`
  const headers = await openSession(url, '2025-03-26')
  const within = await fetch(url, { method: 'POST', headers, body: batch(3) })
  t.equal(within.status, 200)
  t.same((await within.json()).map((answer: { result: unknown }) => text(answer.result)), ['Hello, u0!', 'Hello, u1!', 'Hello, u2!'])
  const over = await fetch(url, { method: 'POST', headers, body: batch(4) })
  t.equal(over.status, 400)
  t.match(await over.json(), { jsonrpc: '2.0', error: { code: -32600, message: /batch of 4 messages is over the limit of 3/ } })
})
