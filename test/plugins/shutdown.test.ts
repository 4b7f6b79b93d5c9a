import t from 'tap'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { listen } from '../helper.js'
import { createGateServer, toolEvents } from '../fixtures/servers.js'

// Graceful shutdown: new work is refused, work in flight finishes.

const headers = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }

t.test('calls in flight when the app closes still get their answers', async t => {
  const { app, base } = await listen(t, {
    servers: [{ name: 'gate', factory: createGateServer }, { name: 'gate-stateless', factory: createGateServer, stateless: true }]
  })
  const calls = [
    fetch(`${base}/gate/tools/gate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }),
    fetch(`${base}/gate-stateless/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'gate', arguments: {} } }) }),
    fetch(`${base}/gate-stateless/mcp`, {
      method: 'POST',
      headers: { ...headers, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'gate' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'gate', arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 't', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} } } })
    })
  ]
  let waiting = 0
  while (waiting < calls.length) {
    await once(toolEvents, 'gate:waiting')
    waiting++
  }
  // Fastify closes the listening socket once the preClose hooks are done: open the gate only
  // then, so the calls are still in flight while the gateway shuts its streams.
  const server = app.server
  const stoppedListening = new Promise<void>(resolve => {
    const close = server.close.bind(server)
    server.close = (callback?: (err?: Error) => void) => { resolve(); return close(callback) }
  })
  const closed = app.close()
  await stoppedListening
  toolEvents.emit('gate:open')
  const [rest, legacy, modern] = await Promise.all(calls)
  t.equal(rest.status, 200)
  t.same((await rest.json()).content, [{ type: 'text', text: 'through' }])
  t.match(await legacy.json(), { id: 1, result: { content: [{ type: 'text', text: 'through' }] } })
  t.match(await modern.json(), { id: 2, result: { content: [{ type: 'text', text: 'through' }] } })
  await closed
  t.equal(app.server.listening, false)
})

t.test('a client that ended a listen stream does not hold the close up', async t => {
  // Node's fetch opens a spare connection when a streaming response is aborted
  // (nodejs/undici#5845) and never uses it; close() must not wait for the client to drop it
  // (after its keep-alive, 4 s): the gateway closes it, before the client ever does.
  const { app, base } = await listen(t)
  const spare = new Promise<Socket>(resolve => {
    let connections = 0
    app.server.on('connection', socket => { if (++connections === 2) resolve(socket) })
  })
  const controller = new AbortController()
  const res = await fetch(`${base}/greet/mcp`, {
    method: 'POST',
    signal: controller.signal,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'subscriptions/listen', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 't', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} }, notifications: { toolsListChanged: true } } })
  })
  t.equal(res.status, 200)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  await reader.read()
  controller.abort()
  await reader.read().catch(() => {})
  const socket = await spare
  let endedByClient = false
  socket.once('end', () => { endedByClient = true })
  await app.close()
  t.ok(socket.destroyed, 'the spare connection is closed')
  t.notOk(endedByClient, 'by the gateway, not by the client at the end of its keep-alive')
})
