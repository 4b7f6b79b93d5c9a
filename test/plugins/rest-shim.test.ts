import t from 'tap'
import { build, json } from '../helper.js'
import { builtinEntries } from '../../src/app.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createOddNamesServer, createCrashingServer, createDefsServer, createSlowServer } from '../fixtures/servers.js'

t.test('the seed examples answer 200 with the CallToolResult', async t => {
  const app = await build(t)
  const add = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: { a: 5, b: 3 } })
  t.equal(add.statusCode, 200)
  t.same(add.json(), { content: [{ type: 'text', text: '8' }], structuredContent: { sum: 8 } })
  const hai = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'Ada' } })
  t.same(hai.json(), { content: [{ type: 'text', text: 'Hello, Ada!' }] })
  const bye = await app.inject({ method: 'POST', url: '/bye/tools/echoBye', headers: json, payload: { userName: 'Ada' } })
  t.same(bye.json(), { content: [{ type: 'text', text: 'Bye, Ada!' }] })
})

t.test('invalid arguments answer 400 naming the bad field, before the tool runs', async t => {
  const app = await build(t)
  const wrongType = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: { a: '5', b: 3 } })
  t.equal(wrongType.statusCode, 400)
  t.match(wrongType.json(), { statusCode: 400, code: 'GW_ERR_INVALID_ARGUMENTS', error: 'Bad Request', details: [{ field: 'a', message: 'must be number' }] })
  t.match(wrongType.json().message, /'a' must be number/)

  const missing = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: {} })
  t.equal(missing.statusCode, 400)
  t.match(missing.json(), { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field: 'userName' }] })

  const notObject = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: '[1,2]' })
  t.equal(notObject.statusCode, 400)
  t.match(notObject.json(), { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field: '', message: 'must be object' }] })
})

t.test('a POST with no body at all means no arguments', async t => {
  const app = await build(t, { servers: [{ name: 'slow', factory: createSlowServer, timeoutMs: 20 }, ...builtinEntries()] })
  const noArgs = await app.inject({ method: 'POST', url: '/slow/tools/wait' })
  t.equal(noArgs.statusCode, 504, 'the argument-less tool was called')
  const needsArgs = await app.inject({ method: 'POST', url: '/greet/tools/echoHai' })
  t.equal(needsArgs.statusCode, 400)
  t.match(needsArgs.json(), { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field: 'userName' }] })
})

t.test('invalid JSON answers 400 GW_ERR_INVALID_JSON', async t => {
  const app = await build(t)
  const broken = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: '{"a":' })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'GW_ERR_INVALID_JSON')
  const empty = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: '' })
  t.equal(empty.statusCode, 400)
  t.equal(empty.json().code, 'GW_ERR_INVALID_JSON')
})

t.test('unknown tool and unknown server answer 404 naming them', async t => {
  const app = await build(t)
  const tool = await app.inject({ method: 'POST', url: '/math/tools/multiply', headers: json, payload: {} })
  t.equal(tool.statusCode, 404)
  t.same(tool.json(), { statusCode: 404, code: 'GW_ERR_TOOL_NOT_FOUND', error: 'Not Found', message: "Tool 'multiply' not found on server 'math'" })
  const server = await app.inject({ method: 'POST', url: '/nope/tools/add', headers: json, payload: {} })
  t.equal(server.statusCode, 404)
  t.same(server.json(), { statusCode: 404, code: 'GW_ERR_SERVER_NOT_FOUND', error: 'Not Found', message: "Server 'nope' not found" })
  const route = await app.inject({ method: 'GET', url: '/elsewhere?x=1' })
  t.equal(route.statusCode, 404)
  t.equal(route.json().code, 'GW_ERR_NOT_FOUND')
  t.equal(route.json().message, 'Route GET /elsewhere not found')
})

t.test('a non-JSON body answers 415 naming the content type', async t => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/math/tools/add', headers: { 'content-type': 'text/plain' }, payload: 'a=1&b=2' })
  t.equal(res.statusCode, 415)
  t.equal(res.json().code, 'GW_ERR_UNSUPPORTED_MEDIA_TYPE')
  t.match(res.json().message, /text\/plain/)
})

t.test('a body over the limit answers 413', async t => {
  const app = await build(t, { servers: builtinEntries(), defaults: { bodyLimit: 64 } })
  const res = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'x'.repeat(100) } })
  t.equal(res.statusCode, 413)
  t.same(res.json(), { statusCode: 413, code: 'GW_ERR_BODY_TOO_LARGE', error: 'Payload Too Large', message: 'Request body is larger than the limit of 64 bytes' })
})

t.test("the tool's own error answers 422 with its result and GW_ERR_TOOL_ERROR", async t => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: { a: 1e308, b: 1e308 } })
  t.equal(res.statusCode, 422)
  t.same(res.json(), {
    content: [{ type: 'text', text: 'The sum of 1e+308 and 1e+308 is not a finite number' }],
    isError: true,
    code: 'GW_ERR_TOOL_ERROR'
  })
})

t.test('a tool that does not answer in time gets 504, and the call is cancelled', async t => {
  const app = await build(t, { servers: [{ name: 'slow', factory: createSlowServer, timeoutMs: 50 }] })
  const res = await app.inject({ method: 'POST', url: '/slow/tools/wait', headers: json, payload: {} })
  t.equal(res.statusCode, 504)
  t.same(res.json(), { statusCode: 504, code: 'GW_ERR_TOOL_TIMEOUT', error: 'Gateway Timeout', message: "Tool 'wait' on server 'slow' did not answer within 50 ms" })
})

t.test('a server dying mid-call answers 502, then 503 while it is down', async t => {
  const app = await build(t, { servers: [{ name: 'crashing', factory: createCrashingServer }, { name: 'greet', factory: createGreetServer }] })
  const res = await app.inject({ method: 'POST', url: '/crashing/tools/crash', headers: json, payload: {} })
  t.equal(res.statusCode, 502)
  t.same(res.json(), { statusCode: 502, code: 'GW_ERR_UPSTREAM', error: 'Bad Gateway', message: "Server 'crashing' failed to handle the call" })
  t.notMatch(res.body, /stack|at .*\.js/)
  const after = await app.inject({ method: 'POST', url: '/crashing/tools/crash', headers: json, payload: {} })
  t.equal(after.statusCode, 503)
  t.equal(after.json().code, 'GW_ERR_SERVER_UNAVAILABLE')
  const ready = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 200, 'degraded, still serving')
  t.match(ready.json(), { status: 'degraded', servers: [{ name: 'crashing', state: 'down' }, { name: 'greet', state: 'up' }] })
  const others = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'Ada' } })
  t.equal(others.statusCode, 200)
})

t.test('$defs and $ref in an input schema are honoured', async t => {
  const app = await build(t, { servers: [{ name: 'defs', factory: createDefsServer }] })
  const ok = await app.inject({ method: 'POST', url: '/defs/tools/order', headers: json, payload: { item: { sku: 'A1', qty: 2 } } })
  t.equal(ok.statusCode, 200)
  t.same(ok.json().content, [{ type: 'text', text: '2 x A1' }])
  const bad = await app.inject({ method: 'POST', url: '/defs/tools/order', headers: json, payload: { item: { sku: 'A1', qty: 0 } } })
  t.equal(bad.statusCode, 400)
  t.match(bad.json(), { details: [{ field: 'item.qty', message: 'must be >= 1' }] })
})

t.test('GET /<server>/tools lists the tools with their schemas', async t => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/math/tools' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.server, 'math')
  t.match(body.tools, [{ name: 'add', description: 'Add two numbers', inputSchema: { type: 'object', required: ['a', 'b'] }, outputSchema: { properties: { sum: { type: 'number' } } } }])
})

t.test('Host and Origin outside the allow-list answer 403, REST and MCP alike', async t => {
  const app = await build(t)
  const rest = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, host: 'evil.example' }, payload: { userName: 'Ada' } })
  t.equal(rest.statusCode, 403)
  t.equal(rest.json().code, 'GW_ERR_FORBIDDEN_ORIGIN')
  const mcp = await app.inject({ method: 'POST', url: '/greet/mcp', headers: { ...json, host: 'evil.example', accept: 'application/json, text/event-stream' }, payload: { jsonrpc: '2.0', id: 7, method: 'ping' } })
  t.equal(mcp.statusCode, 403)
  // Host is checked before the body is read, so the JSON-RPC id is not known yet.
  t.match(mcp.json(), { jsonrpc: '2.0', id: null, error: { data: { code: 'GW_ERR_FORBIDDEN_ORIGIN' } } })
  const origin = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, origin: 'https://evil.example' }, payload: { userName: 'Ada' } })
  t.equal(origin.statusCode, 403)
  const localOrigin = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, origin: 'http://localhost:5173' }, payload: { userName: 'Ada' } })
  t.equal(localOrigin.statusCode, 200)
  // Health checks from a load balancer use whatever Host they like.
  const health = await app.inject({ method: 'GET', url: '/health', headers: { host: '10.0.0.7:3000' } })
  t.equal(health.statusCode, 200)
})

t.test('allowedHosts admits a configured public name', async t => {
  const app = await build(t, { servers: builtinEntries(), defaults: { allowedHosts: ['mcp.example.com'] } })
  const ok = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, host: 'mcp.example.com' }, payload: { userName: 'Ada' } })
  t.equal(ok.statusCode, 200)
  const other = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, host: 'localhost' }, payload: { userName: 'Ada' } })
  t.equal(other.statusCode, 403)
})

t.test('tools whose names are not plain path segments are called URL-encoded', async t => {
  const app = await build(t, { servers: [{ name: 'odd', factory: createOddNamesServer }] })
  for (const name of ['files/read', 'ns:tool', 'plain']) {
    const res = await app.inject({ method: 'POST', url: `/odd/tools/${encodeURIComponent(name)}`, headers: json, payload: {} })
    t.equal(res.statusCode, 200, name)
    t.same(res.json().content, [{ type: 'text', text: `called ${name}` }])
  }
  const missing = await app.inject({ method: 'POST', url: '/odd/tools/files%2Fwrite', headers: json, payload: {} })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().message, "Tool 'files/write' not found on server 'odd'")
  const document = (await app.inject({ method: 'GET', url: '/docs/json' })).json()
  t.same(Object.keys(document.paths).filter(path => path.startsWith('/odd/')), ['/odd/tools', '/odd/tools/plain'])
})
