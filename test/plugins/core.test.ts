import t from 'tap'
import SwaggerParser from '@apidevtools/swagger-parser'
import { build, json } from '../helper.js'
import { builtinEntries } from '../../src/app.js'
import { createDefsServer, createFailingServer } from '../fixtures/servers.js'
import { createConformanceServer } from '../fixtures/conformance/server.js'

t.test('/health answers 200', async t => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/health' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ok' })
})

t.test('/ready lists every server and its state', async t => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), {
    status: 'ready',
    servers: [
      { name: 'greet', state: 'up', tools: 1 },
      { name: 'bye', state: 'up', tools: 1 },
      { name: 'math', state: 'up', tools: 1 }
    ]
  })
})

t.test('a server that throws at start is down; the others serve', async t => {
  const app = await build(t, { servers: [...builtinEntries(), { name: 'db', factory: createFailingServer }] })
  const ready = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 200, 'one server down degrades the gateway; it still serves')
  t.equal(ready.json().status, 'degraded')
  t.same(ready.json().servers.at(-1), { name: 'db', state: 'down', tools: 0, error: 'the server failed to start; see the log' })
  t.notMatch(ready.body, /secret\.sock/, "the factory's own error text stays in the log")

  const call = await app.inject({ method: 'POST', url: '/db/tools/anything', headers: json, payload: {} })
  t.equal(call.statusCode, 503)
  t.equal(call.json().code, 'GW_ERR_SERVER_UNAVAILABLE')
  t.match(call.json().message, /Server 'db' is unavailable/)
  const mcp = await app.inject({ method: 'POST', url: '/db/mcp', headers: { ...json, accept: 'application/json, text/event-stream' }, payload: { jsonrpc: '2.0', id: 1, method: 'ping' } })
  t.equal(mcp.statusCode, 503)
  t.match(mcp.json(), { jsonrpc: '2.0', error: { code: -32000, data: { code: 'GW_ERR_SERVER_UNAVAILABLE' } } })

  const greet = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'Ada' } })
  t.equal(greet.statusCode, 200)
})

t.test('the OpenAPI document is valid 3.1 with one operation per tool', async t => {
  const app = await build(t, { servers: [...builtinEntries(), { name: 'defs', factory: createDefsServer }] })
  const res = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(res.statusCode, 200)
  const document = res.json()
  t.equal(document.openapi, '3.1.0')
  await t.resolves(SwaggerParser.validate(structuredClone(document)), 'swagger-parser accepts the document')

  const add = document.paths['/math/tools/add'].post
  t.equal(add.operationId, 'math__add')
  t.same(add.tags, ['math'])
  t.equal(add.summary, 'Add two numbers')
  t.match(add.requestBody.content['application/json'].schema, { type: 'object', required: ['a', 'b'], properties: { a: { type: 'number' }, b: { type: 'number' } } })
  t.match(add.responses['200'].content['application/json'].schema.properties.structuredContent, { type: 'object', properties: { sum: { type: 'number' } } })
  t.ok(add.responses['422'], 'the tool-error status is documented')
  t.ok(document.paths['/greet/tools/echoHai'].post)
  t.ok(document.paths['/bye/tools/echoBye'].post)
  t.notOk(document.paths['/greet/mcp'], 'protocol routes are hidden')

  // $defs move to components, and the body refers to them there.
  const order = document.paths['/defs/tools/order'].post.requestBody.content['application/json'].schema
  t.same(order.properties.item, { $ref: '#/components/schemas/defs.order.input.Item' })
  t.match(document.components.schemas['defs.order.input.Item'], { type: 'object', required: ['sku', 'qty'] })
})

t.test('the conformance fixture\'s 2020-12 schemas still make a valid document', async t => {
  // $anchor, allOf/anyOf, if/then/else and x-mcp-header: real-world schema features.
  const app = await build(t, { servers: [{ name: 'conformance', factory: createConformanceServer }] })
  const document = (await app.inject({ method: 'GET', url: '/docs/json' })).json()
  await t.resolves(SwaggerParser.validate(structuredClone(document)))
  const tool = document.paths['/conformance/tools/json_schema_2020_12_tool'].post.requestBody.content['application/json'].schema
  t.same(tool.properties.address, { $ref: '#/components/schemas/conformance.json_schema_2020_12_tool.input.address' })
  const call = await app.inject({ method: 'POST', url: '/conformance/tools/json_schema_2020_12_tool', payload: { name: 'Ada', contactMethod: 'phone' } })
  t.equal(call.statusCode, 400, 'if/then/else is enforced: phone is required when contactMethod is phone')
  t.match(call.json().details, [{ field: 'phone' }])
})

t.test('Swagger UI at /docs and ReDoc at /redoc work offline', async t => {
  const app = await build(t)
  const docs = await app.inject({ method: 'GET', url: '/docs/' })
  t.equal(docs.statusCode, 200)
  t.match(docs.headers['content-type'], /text\/html/)
  const redoc = await app.inject({ method: 'GET', url: '/redoc' })
  t.equal(redoc.statusCode, 200)
  t.match(redoc.body, /<redoc spec-url="\/docs\/json">/)
  t.match(redoc.body, /src="\/redoc\/redoc.standalone.js"/)
  const bundle = await app.inject({ method: 'GET', url: '/redoc/redoc.standalone.js' })
  t.equal(bundle.statusCode, 200)
  t.match(bundle.headers['content-type'], /javascript/)
  t.ok(bundle.body.length > 100_000, 'the bundle is served from the installed package')
})

t.test('an unexpected error answers 500 without its message or stack', async t => {
  // A route of the user's own, embedded beside the gateway, that fails.
  const Fastify = (await import('fastify')).default
  const gateway = (await import('../../src/app.js')).default
  const own = Fastify({ logger: false })
  await own.register(gateway)
  own.get('/boom', async () => { throw new Error('secret connection string postgres://u:p@db') })
  t.teardown(() => own.close())
  const res = await own.inject({ method: 'GET', url: '/boom' })
  t.equal(res.statusCode, 500)
  t.same(res.json(), { statusCode: 500, code: 'GW_ERR_INTERNAL', error: 'Internal Server Error', message: 'Internal server error' })
})
