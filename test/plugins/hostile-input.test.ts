import { once, EventEmitter } from 'node:events'
import net from 'node:net'
import { Writable } from 'node:stream'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { builtinEntries } from '../../src/app.js'
import { createCrashingServer, createFailingServer, createGateServer, toolEvents } from '../fixtures/servers.js'
import { build, json, listen } from '../helper.js'

const mcpHeaders = { ...json, accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' }

interface RawAnswer {
  status: number
  headers: Record<string, string>
  body: string
}

function portOf (app: FastifyInstance): number {
  return (app.server.address() as net.AddressInfo).port
}

/** Parses the one HTTP response a raw socket received. */
function parseAnswer (text: string): RawAnswer {
  const [head = '', body = ''] = text.split('\r\n\r\n', 2)
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body }
}

/** Sends bytes on a raw socket and resolves with what came back once the server closed it. */
async function raw (port: number, data: string | Buffer): Promise<RawAnswer> {
  const socket = net.connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  socket.on('data', chunk => chunks.push(chunk))
  socket.on('error', () => {}) // a reset after the answer still counts as closed
  socket.write(data)
  await once(socket, 'close')
  return parseAnswer(Buffer.concat(chunks).toString())
}

/** A pino destination that keeps every line, parsed, and tells when one arrives. */
function captureLogs (): { stream: Writable, lines: Array<Record<string, unknown>>, waitFor: (match: (line: Record<string, unknown>) => boolean) => Promise<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const events = new EventEmitter()
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      for (const text of String(chunk).split('\n')) {
        if (text === '') continue
        const line = JSON.parse(text) as Record<string, unknown>
        lines.push(line)
        events.emit('line', line)
      }
      callback()
    }
  })
  const waitFor = async (match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    const found = lines.find(match)
    if (found !== undefined) return found
    return await new Promise(resolve => {
      const listener = (line: Record<string, unknown>): void => {
        if (!match(line)) return
        events.off('line', listener)
        resolve(line)
      }
      events.on('line', listener)
    })
  }
  return { stream, lines, waitFor }
}

const DEBUG = 20
const INFO = 30
const ERROR = 50

/** Nested arrays, `depth` levels deep. */
const nested = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)

t.test('a flood of slow-body sockets gets 408 and is closed, while other clients and long calls are served', async t => {
  const requestTimeoutMs = 1000
  const { app, base } = await listen(t, { servers: [...builtinEntries(), { name: 'gate', factory: createGateServer }] }, { limits: { requestTimeoutMs, headersTimeoutMs: requestTimeoutMs } })
  t.teardown(() => { toolEvents.emit('gate:open') })
  const port = portOf(app)

  // A tool call in flight for longer than the request timeout: its request is complete, so
  // no timeout may cut it.
  const waiting = once(toolEvents, 'gate:waiting')
  const gated = fetch(`${base}/gate/tools/gate`, { method: 'POST', headers: json, body: '{}' })
  await waiting

  const FLOOD = 1000
  const BODY = 60
  const slow = Array.from({ length: FLOOD }, async () => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', chunk => chunks.push(chunk))
    socket.on('error', () => {})
    await once(socket, 'connect')
    socket.write(`POST /greet/tools/echoHai HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${BODY}\r\n\r\n `)
    // One body byte every 250 ms: the whole body would take 15 s. The sender stops by
    // itself once the body is complete or the socket is closed.
    let sent = 1
    const drip = setInterval(() => {
      if (socket.destroyed || sent >= BODY) clearInterval(drip)
      else { socket.write(' '); sent++ }
    }, 250)
    await once(socket, 'close')
    clearInterval(drip)
    return parseAnswer(Buffer.concat(chunks).toString())
  })

  // Served meanwhile, on a connection of its own.
  const other = await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: JSON.stringify({ userName: 'Ada' }) })
  t.equal(other.status, 200, 'another client is served during the flood')
  t.same(await other.json(), { content: [{ type: 'text', text: 'Hello, Ada!' }] })

  const answers = await Promise.all(slow)
  t.same([...new Set(answers.map(answer => answer.status))], [408], 'every slow socket got 408')
  t.same([...new Set(answers.map(answer => JSON.parse(answer.body).code))], ['GW_ERR_REQUEST_TIMEOUT'])
  t.same([...new Set(answers.map(answer => answer.headers.connection))], ['close'])
  t.match(JSON.parse(answers[0].body), { statusCode: 408, error: 'Request Timeout', message: `The request was not received within ${requestTimeoutMs} ms` })

  toolEvents.emit('gate:open')
  const long = await gated
  t.equal(long.status, 200, 'a call longer than the request timeout still answers')
  t.same(await long.json(), { content: [{ type: 'text', text: 'through' }] })
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, 'the gateway still serves')
})

t.test('malformed HTTP is answered with the catalogue\'s JSON and Connection: close', async t => {
  const { app } = await listen(t, {}, { limits: { maxHeaderSize: 4096 } })
  const port = portOf(app)
  const cases: Array<[string, string, number, string]> = [
    ['headers over the limit', `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`, 431, 'GW_ERR_HEADERS_TOO_LARGE'],
    ['duplicate Content-Length', 'POST /greet/tools/echoHai HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}', 400, 'GW_ERR_BAD_REQUEST'],
    ['a request line that is not HTTP', 'GARBAGE\r\n\r\n', 400, 'GW_ERR_BAD_REQUEST'],
    ['an unknown HTTP version', 'GET /health HTTP/9.9\r\n\r\n', 400, 'GW_ERR_BAD_REQUEST'],
    ['a bad chunk size', 'POST /greet/tools/echoHai HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n', 400, 'GW_ERR_BAD_REQUEST'],
    ['a control character in a header', 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\u0001b\r\n\r\n', 400, 'GW_ERR_BAD_REQUEST']
  ]
  for (const [what, request, status, code] of cases) {
    const answer = await raw(port, request)
    t.equal(answer.status, status, `${what}: status`)
    t.equal(answer.headers.connection, 'close', `${what}: Connection: close`)
    t.match(JSON.parse(answer.body), { statusCode: status, code, error: String, message: String }, `${what}: the catalogue's body`)
  }
  t.equal((await raw(port, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')).status, 200, 'still serving')
})

t.test('malformed URLs are 404 GW_ERR_NOT_FOUND, never a 5xx', async t => {
  const { app } = await listen(t)
  const port = portOf(app)
  for (const path of ['//[', '/%zz', '/greet/%zz', '/greet/tools/%E0%A4%A', '/greet/mcp/%', 'http://x/y', '*', '//[/tools']) {
    const answer = await raw(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
    t.equal(answer.status, 404, `GET ${path}`)
    t.equal(JSON.parse(answer.body).code, 'GW_ERR_NOT_FOUND', `GET ${path}: code`)
  }
})

t.test('JSON nested deeper than the limit is a 400 on REST and MCP routes alike', async t => {
  const app = await build(t)
  const deep = nested(10_000)
  const rest = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: deep })
  t.equal(rest.statusCode, 400)
  t.match(rest.json(), { code: 'GW_ERR_JSON_TOO_DEEP', message: 'Request body nests JSON deeper than 64 levels' })

  for (const url of ['/greet/mcp', '/mcp']) {
    const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echoHai","arguments":{"userName":"Ada","x":${deep}}}}`
    const mcp = await app.inject({ method: 'POST', url, headers: mcpHeaders, payload: body })
    t.equal(mcp.statusCode, 400, `${url}: status`)
    t.match(mcp.json(), { jsonrpc: '2.0', error: { code: -32600, data: { code: 'GW_ERR_JSON_TOO_DEEP' } } }, `${url}: a JSON-RPC error with the code`)
  }

  // At the limit a body is parsed (and then judged by the schema); one more level is not.
  const at = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: `{"a":1,"b":${nested(63)}}` })
  t.equal(at.json().code, 'GW_ERR_INVALID_ARGUMENTS', '64 levels are parsed')
  const over = await app.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: `{"a":1,"b":${nested(64)}}` })
  t.equal(over.json().code, 'GW_ERR_JSON_TOO_DEEP', '65 levels are refused')

  // Brackets inside strings (escaped quotes included) are text, not nesting.
  const text = `[[[${'['.repeat(100)}\\"${'{'.repeat(100)}`
  const inString = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: JSON.stringify({ userName: text }) })
  t.equal(inString.statusCode, 200)
  t.same(inString.json(), { content: [{ type: 'text', text: `Hello, ${text}!` }] })
})

t.test('a body that is not UTF-8 is a 400, not read with U+FFFD', async t => {
  const app = await build(t)
  const body = Buffer.concat([Buffer.from('{"userName":"A'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])
  const rest = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: body })
  t.equal(rest.statusCode, 400)
  t.match(rest.json(), { statusCode: 400, code: 'GW_ERR_INVALID_UTF8', error: 'Bad Request' })
  const mcpBody = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echoHai","arguments":{"userName":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}}')])
  const mcp = await app.inject({ method: 'POST', url: '/greet/mcp', headers: mcpHeaders, payload: mcpBody })
  t.equal(mcp.statusCode, 400)
  t.match(mcp.json(), { jsonrpc: '2.0', error: { data: { code: 'GW_ERR_INVALID_UTF8' } }, id: null })
  const valid = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: JSON.stringify({ userName: 'Zoë 🙂' }) })
  t.same(valid.json(), { content: [{ type: 'text', text: 'Hello, Zoë 🙂!' }] }, 'multi-byte UTF-8 still reads')
  const empty = await app.inject({ method: 'DELETE', url: '/greet/mcp', headers: mcpHeaders, payload: '' })
  t.not(empty.statusCode, 500, 'an empty MCP body is still accepted by the parser')
  t.not(empty.json().error?.data?.code, 'GW_ERR_INVALID_JSON')
})

t.test('logs: 4xx at info without a stack, 503 for a down server at debug, real 5xx at error', async t => {
  const logs = captureLogs()
  const app = await build(t, { servers: [...builtinEntries(), { name: 'db', factory: createFailingServer }, { name: 'crashing', factory: createCrashingServer }] }, { logger: { level: 'debug', stream: logs.stream } })

  const bad = await app.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: { ...json, 'x-request-id': 'bad-json' }, payload: '{' })
  t.equal(bad.statusCode, 400)
  const rejected = logs.lines.filter(line => line.reqId === 'bad-json' && line.msg === 'request rejected')
  t.equal(rejected.length, 1)
  t.match(rejected[0], { level: INFO, code: 'GW_ERR_INVALID_JSON', message: String })
  t.notOk(JSON.stringify(rejected[0]).includes('"stack"'), 'no stack for a 4xx')

  for (let i = 0; i < 20; i++) {
    const down = await app.inject({ method: 'POST', url: '/db/tools/anything', headers: { ...json, 'x-request-id': `down-${i}` }, payload: {} })
    t.equal(down.statusCode, 503)
  }
  const downLines = logs.lines.filter(line => String(line.reqId).startsWith('down-') && line.level !== INFO)
  t.ok(downLines.length >= 20, 'each 503 is logged')
  t.same([...new Set(downLines.map(line => line.level))], [DEBUG], 'at debug')
  t.notOk(downLines.some(line => JSON.stringify(line).includes('"stack"')), 'without a stack')

  const crash = await app.inject({ method: 'POST', url: '/crashing/tools/crash', headers: { ...json, 'x-request-id': 'crash' }, payload: {} })
  t.equal(crash.statusCode, 502)
  const failed = logs.lines.find(line => line.reqId === 'crash' && line.msg === 'request failed')
  t.match(failed, { level: ERROR, err: { stack: String } }, 'a real 5xx is an error with err')

  t.same(logs.lines.filter(line => line.reqId !== undefined && (line.level as number) >= ERROR && line.reqId !== 'crash').map(line => line.msg), [], 'no other request is logged at error')
})

t.test('a REST call the client cancels is logged at debug as cancelled, never as a 502', async t => {
  const logs = captureLogs()
  const { base } = await listen(t, { servers: [{ name: 'gate', factory: createGateServer }] }, { logger: { level: 'debug', stream: logs.stream } })
  t.teardown(() => { toolEvents.emit('gate:open') })
  const controller = new AbortController()
  const waiting = once(toolEvents, 'gate:waiting')
  const call = fetch(`${base}/gate/tools/gate`, { method: 'POST', headers: { ...json, 'x-request-id': 'gone' }, body: '{}', signal: controller.signal })
  await waiting
  controller.abort()
  await t.rejects(call)
  // The call ends one way or the other: cancelled (debug) or failed (error).
  const outcome = await logs.waitFor(line => line.reqId === 'gone' && (line.msg === 'tool call cancelled: the client went away' || (line.level as number) >= 40))
  t.match(outcome, { level: DEBUG, msg: 'tool call cancelled: the client went away' })
  t.same(logs.lines.filter(line => line.reqId === 'gone' && (line.level as number) >= 40), [], 'no warning or error for it')
  t.notOk(logs.lines.some(line => JSON.stringify(line).includes('GW_ERR_UPSTREAM')), 'not a 502')
})

t.test('fuzz: hostile bodies on every kind of route get a 4xx with a code, and the gateway keeps serving', async t => {
  const { app, base } = await listen(t)
  const urls = ['/greet/tools/echoHai', '/math/tools/add', '/greet/tools/unknown', '/greet/mcp', '/mcp']
  const bodies: Array<string | Buffer> = [
    nested(10_000),
    '{"a":' + nested(5000) + '}',
    '{'.repeat(20_000),
    '"' + '\\'.repeat(9999) + '"',
    Buffer.from([0xff, 0xff, 0xff]),
    Buffer.from([0xed, 0xa0, 0x80]), // a UTF-16 surrogate, invalid in UTF-8
    '{"__proto__":{"x":1}}',
    '{"constructor":{"prototype":{"x":1}}}',
    '',
    'null',
    '[]',
    '1e999999',
    '{"jsonrpc":"2.0","id":{},"method":' + nested(100) + '}',
    '\u0000'
  ]
  for (const url of urls) {
    for (const body of bodies) {
      const res = await fetch(`${base}${url}`, { method: 'POST', headers: mcpHeaders, body: typeof body === 'string' ? body : new Uint8Array(body) })
      const what = `POST ${url} ${JSON.stringify(String(body).slice(0, 20))}`
      t.ok(res.status < 500, `${what}: not a 5xx (${res.status})`)
      const answer = await res.json() as { code?: string, error?: { data?: { code?: string }, code?: number } }
      if (res.status >= 400) t.ok(typeof answer.code === 'string' || typeof answer.error?.code === 'number', `${what}: a code or a JSON-RPC error`)
    }
  }
  const port = portOf(app)
  for (const path of ['//[', '/%', '/%00', '/greet/tools/%ZZ', '/..%2F..%2Fetc%2Fpasswd', '/greet/tools/' + 'x'.repeat(500)]) {
    const answer = await raw(port, `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`)
    t.ok(answer.status >= 400 && answer.status < 500, `POST ${path.slice(0, 30)}: a 4xx (${answer.status})`)
    t.type(JSON.parse(answer.body).code, 'string')
  }
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, 'alive')
})
