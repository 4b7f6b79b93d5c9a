import t from 'tap'
import { connect } from 'node:net'
import Fastify from 'fastify'
import { builtinServers, corePlugin, gateway, limitConnections, mcpServer, serverOptions, tuneGarbageCollection } from '../../src/index.js'
import { createMathServer } from '../../servers/math/index.js'

t.test('the plugins mount into a user\'s own Fastify app, piece by piece', async t => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.get('/', async () => ({ mine: true }))
  await app.register(corePlugin, { title: 'My tools' })
  await app.register(mcpServer, { prefix: '/api/calc', name: 'calc', factory: createMathServer, stateless: true })

  t.same((await app.inject({ method: 'GET', url: '/' })).json(), { mine: true })
  const res = await app.inject({ method: 'POST', url: '/api/calc/tools/add', payload: { a: 2, b: 2 } })
  t.same(res.json().structuredContent, { sum: 4 })
  const document = (await app.inject({ method: 'GET', url: '/docs/json' })).json()
  t.equal(document.info.title, 'My tools')
  t.ok(document.paths['/api/calc/tools/add'].post)
  t.match((await app.inject({ method: 'GET', url: '/ready' })).json(), { status: 'ready', servers: [{ name: 'calc', state: 'up' }] })
})

t.test('the gateway plugin mounts chosen servers under chosen prefixes', async t => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gateway, { servers: [{ name: 'hello', factory: builtinServers.greet, prefix: '/v1/hello' }] })
  const res = await app.inject({ method: 'POST', url: '/v1/hello/tools/echoHai', payload: { userName: 'Ada' } })
  t.same(res.json().content, [{ type: 'text', text: 'Hello, Ada!' }])
  t.equal((await app.inject({ method: 'POST', url: '/greet/tools/echoHai', payload: { userName: 'Ada' } })).statusCode, 404)
})

t.test('mount options are validated at registration', async t => {
  const badName = Fastify({ logger: false })
  await badName.register(corePlugin)
  await t.rejects(async () => { await badName.register(mcpServer, { name: 'no spaces', factory: createMathServer }) }, { code: 'GW_ERR_INVALID_OPTIONS', message: /name/ })
  await badName.close().catch(() => {})

  const both = Fastify({ logger: false })
  await both.register(corePlugin)
  await t.rejects(async () => { await both.register(mcpServer, { name: 'x' }) }, { code: 'GW_ERR_INVALID_OPTIONS', message: /exactly one of factory or connection/ })
  await both.close().catch(() => {})

  const twice = Fastify({ logger: false })
  await twice.register(corePlugin)
  await twice.register(mcpServer, { prefix: '/a', name: 'same', factory: createMathServer })
  await t.rejects(async () => { await twice.register(mcpServer, { prefix: '/b', name: 'same', factory: createMathServer }) }, { message: /already mounted/ })
  await twice.close().catch(() => {})
})

t.test('an application takes the command\'s process settings from the package: its HTTP bounds and garbage-collection setting', async t => {
  tuneGarbageCollection()
  const app = Fastify({ ...serverOptions(), logger: false })
  t.teardown(() => app.close())
  await app.register(gateway, { servers: [{ name: 'greet', factory: builtinServers.greet }] })
  limitConnections(app.server)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  // Malformed HTTP is answered by the options' client error handler, in the catalogue's JSON.
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => { socket.end('GARBAGE\r\n\r\n') })
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', chunk => { text += chunk })
    socket.on('end', () => { resolve(text) })
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 400 /, 'a 400')
  t.match(answer, /"code":"GW_ERR_BAD_REQUEST"/, 'with the catalogue\'s code')
  const response = await fetch(`http://127.0.0.1:${port}/greet/tools/echoHai`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"userName":"Ada"}' })
  t.equal(response.status, 200, 'and the gateway serves as usual')
})
