import t from 'tap'
import Fastify from 'fastify'
import gateway, { builtinEntries } from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { build, json } from '../helper.js'
import { createFailingServer } from '../fixtures/servers.js'

// Readiness that suits a load balancer: one server that cannot start degrades the gateway but
// does not take it out of rotation, unless the config says the gateway is useless without it.

t.test('a server that is down degrades the gateway: /ready 200, the server listed as down', async t => {
  const app = await build(t, { servers: [...builtinEntries(), { name: 'db', factory: createFailingServer }] })
  const ready = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'degraded', servers: [{ name: 'greet', state: 'up' }, { name: 'bye', state: 'up' }, { name: 'math', state: 'up' }, { name: 'db', state: 'down' }] })
  const probe = await app.inject({ method: 'GET', url: '/ready/db' })
  t.equal(probe.statusCode, 503, 'one server probed alone: 503 while it is down')
  t.match(probe.json(), { name: 'db', state: 'down', error: 'the server failed to start; see the log' })
  const up = await app.inject({ method: 'GET', url: '/ready/math' })
  t.equal(up.statusCode, 200)
  t.match(up.json(), { name: 'math', state: 'up', tools: 1 })
  const unknown = await app.inject({ method: 'GET', url: '/ready/nobody' })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.json().code, 'GW_ERR_SERVER_NOT_FOUND')
})

t.test('a required server that is down makes the gateway unavailable: /ready 503', async t => {
  const app = await build(t, { servers: [...builtinEntries(), { name: 'db', factory: createFailingServer, required: true }] })
  const ready = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.match(ready.json(), { status: 'unavailable', servers: [{ name: 'greet' }, { name: 'bye' }, { name: 'math' }, { name: 'db', state: 'down', required: true }] })
  const healthy = await build(t, { servers: builtinEntries().map(entry => ({ ...entry, required: true })) })
  const all = await healthy.inject({ method: 'GET', url: '/ready' })
  t.equal(all.statusCode, 200)
  t.equal(all.json().status, 'ready')
})

t.test('required comes from the config file, and must be a boolean', async t => {
  const config = parseConfig(JSON.stringify({ mcpServers: { greet: { builtin: 'greet', required: true }, math: { builtin: 'math' } } }), 'gateway.json')
  t.equal(config.servers[0]?.required, true)
  const app = await build(t, { config })
  t.match((await app.inject({ method: 'GET', url: '/ready' })).json().servers, [{ name: 'greet', required: true }, { name: 'math' }])
  t.notOk('required' in ((await app.inject({ method: 'GET', url: '/ready' })).json().servers[1]))
  t.throws(() => parseConfig(JSON.stringify({ mcpServers: { greet: { builtin: 'greet', required: 'yes' } } }), 'gateway.json'), /mcpServers\.greet\.required must be true or false/)
})

t.test('while the gateway drains, /ready answers 503 draining and new requests 503 with Connection: close', async t => {
  const app = Fastify({ logger: false, return503OnClosing: false })
  await app.register(gateway, { servers: builtinEntries() })
  // Holds the shutdown in its preClose phase, where the gateway drains but still listens.
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  let draining = (): void => {}
  const drainingNow = new Promise<void>(resolve => { draining = resolve })
  app.addHook('preClose', async () => {
    draining()
    await held
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const closed = app.close()
  await drainingNow
  t.ok(app.gatewayShutdown.draining)
  const ready = await fetch(`${base}/ready`)
  t.equal(ready.status, 503)
  t.equal((await ready.json()).status, 'draining')
  t.equal((await fetch(`${base}/ready/math`)).status, 503)
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, 'liveness still answers')
  const refused = await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: '{"a":1,"b":2}' })
  t.equal(refused.status, 503)
  t.equal(refused.headers.get('connection'), 'close')
  t.match(await refused.json(), { statusCode: 503, code: 'GW_ERR_SHUTTING_DOWN' })
  const mcp = await fetch(`${base}/math/mcp`, { method: 'POST', headers: { ...json, accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'ping' }) })
  t.equal(mcp.status, 503)
  t.match(await mcp.json(), { jsonrpc: '2.0', id: 7, error: { data: { code: 'GW_ERR_SHUTTING_DOWN' } } }, 'an MCP client reads a JSON-RPC error')
  release()
  await closed
})
