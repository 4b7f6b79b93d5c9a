import t from 'tap'
import { createHash } from 'node:crypto'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { listen } from '../helper.js'
import { CORS_ALLOWED_HEADERS } from '../../plugins/cors.js'

const APP = 'https://app.example.com'
const OTHER = 'https://evil.example.com'
const MCP_ACCEPT = 'application/json, text/event-stream'
const INITIALIZE = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '1' } } })

interface Answer { status: number, headers: IncomingHttpHeaders, body: string }

/**
 * One request as a browser's would arrive, over real HTTP. With `headersOnly` the answer's
 * body is not awaited (an SSE stream stays open): the socket is closed once the headers are in.
 */
async function send (base: string, method: string, path: string, headers: Record<string, string>, body?: string, headersOnly = false): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method, headers }, res => {
      if (headersOnly) {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' })
        req.destroy()
        return
      }
      let text = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { text += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

const preflight = async (base: string, path: string, origin: string, method = 'POST', requestHeaders = 'authorization, content-type, mcp-session-id'): Promise<Answer> =>
  await send(base, 'OPTIONS', path, { origin, 'access-control-request-method': method, 'access-control-request-headers': requestHeaders })

const corsHeaders = (headers: IncomingHttpHeaders): string[] => Object.keys(headers).filter(name => name.startsWith('access-control-'))
const list = (value: string | string[] | undefined): string[] => String(value ?? '').split(',').map(item => item.trim().toLowerCase()).filter(Boolean)

t.test('a preflight from an allowed origin is answered on /<server>/mcp, /mcp and the REST routes', async t => {
  const { base } = await listen(t, { security: { cors: { origins: [APP] } } })
  for (const path of ['/greet/mcp', '/mcp', '/greet/tools/echoHai', '/greet/tools']) {
    const res = await preflight(base, path, APP, 'POST', ['authorization', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'mcp-method', 'mcp-name', 'last-event-id', 'x-api-key'].join(', '))
    t.equal(res.status, 204, `${path}: answered, not 404`)
    t.equal(res.headers['access-control-allow-origin'], APP, `${path}: the origin itself`)
    t.same(list(res.headers['access-control-allow-methods']).sort(), ['delete', 'get', 'options', 'post'], `${path}: methods`)
    t.same(list(res.headers['access-control-allow-headers']).sort(), CORS_ALLOWED_HEADERS.map(name => name.toLowerCase()).sort(), `${path}: every header an MCP or REST client sends`)
    t.equal(res.headers['access-control-max-age'], '600')
    t.match(String(res.headers.vary), /origin/i, `${path}: caches keep answers for different origins apart`)
  }
})

t.test('a preflight may ask for Mcp-Param-* headers, one by one; other headers are not allowed', async t => {
  const { base } = await listen(t, { security: { cors: { origins: [APP] } } })
  const res = await preflight(base, '/greet/mcp', APP, 'POST', 'content-type, Mcp-Param-UserName, mcp-param-region, x-something-else')
  t.equal(res.status, 204)
  const allowed = list(res.headers['access-control-allow-headers'])
  t.ok(allowed.includes('mcp-param-username'))
  t.ok(allowed.includes('mcp-param-region'))
  t.notOk(allowed.includes('x-something-else'))
})

t.test('answers to an allowed origin carry the CORS headers and expose Mcp-Session-Id and WWW-Authenticate', async t => {
  const { base } = await listen(t, { security: { cors: { origins: [APP] } } })

  const rest = await send(base, 'POST', '/greet/tools/echoHai', { origin: APP, 'content-type': 'application/json' }, '{"userName":"Ada"}')
  t.equal(rest.status, 200, 'the Origin check allows a CORS origin (which is no localhost name)')
  t.same(JSON.parse(rest.body), { content: [{ type: 'text', text: 'Hello, Ada!' }] })
  t.equal(rest.headers['access-control-allow-origin'], APP)
  const exposed = list(rest.headers['access-control-expose-headers'])
  t.ok(exposed.includes('mcp-session-id'))
  t.ok(exposed.includes('www-authenticate'))
  t.ok(exposed.includes('retry-after'))

  for (const path of ['/greet/mcp', '/mcp']) {
    const init = await send(base, 'POST', path, { origin: APP, accept: MCP_ACCEPT, 'content-type': 'application/json' }, INITIALIZE)
    t.equal(init.status, 200, `${path}: initialize`)
    t.type(init.headers['mcp-session-id'], 'string', `${path}: a session`)
    t.equal(init.headers['access-control-allow-origin'], APP, `${path}: allowed`)
    t.ok(list(init.headers['access-control-expose-headers']).includes('mcp-session-id'), `${path}: the browser may read the session id`)
  }

  const missing = await send(base, 'POST', '/greet/tools/nope', { origin: APP, 'content-type': 'application/json' }, '{}')
  t.equal(missing.status, 404)
  t.equal(missing.headers['access-control-allow-origin'], APP, 'an error answer is readable by the page too')
})

t.test('an SSE answer (a session\'s GET stream, a hijacked reply) carries the CORS headers', async t => {
  const { base } = await listen(t, { security: { cors: { origins: [APP] } } })
  const init = await send(base, 'POST', '/greet/mcp', { origin: APP, accept: MCP_ACCEPT, 'content-type': 'application/json' }, INITIALIZE)
  const session = init.headers['mcp-session-id'] as string
  const ack = await send(base, 'POST', '/greet/mcp', { origin: APP, accept: MCP_ACCEPT, 'content-type': 'application/json', 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' }, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }))
  t.equal(ack.status, 202)
  const stream = await send(base, 'GET', '/greet/mcp', { origin: APP, accept: 'text/event-stream', 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' }, undefined, true)
  t.equal(stream.status, 200)
  t.match(String(stream.headers['content-type']), /^text\/event-stream/)
  t.equal(stream.headers['access-control-allow-origin'], APP)
  t.ok(list(stream.headers['access-control-expose-headers']).includes('mcp-session-id'))
})

t.test('a disallowed origin gets no CORS header: its preflight is a 404, its request the Origin check\'s 403', async t => {
  const { base } = await listen(t, { security: { cors: { origins: [APP] } } })
  for (const path of ['/greet/mcp', '/mcp', '/greet/tools/echoHai']) {
    const res = await preflight(base, path, OTHER)
    t.equal(res.status, 404, path)
    t.equal(JSON.parse(res.body).code, 'GW_ERR_NOT_FOUND')
    t.same(corsHeaders(res.headers), [], `${path}: no CORS header`)
  }
  const rest = await send(base, 'POST', '/greet/tools/echoHai', { origin: OTHER, 'content-type': 'application/json' }, '{"userName":"Ada"}')
  t.equal(rest.status, 403)
  t.equal(JSON.parse(rest.body).code, 'GW_ERR_FORBIDDEN_ORIGIN')
  t.same(corsHeaders(rest.headers), [])
  const mcp = await send(base, 'POST', '/greet/mcp', { origin: OTHER, accept: MCP_ACCEPT, 'content-type': 'application/json' }, INITIALIZE)
  t.equal(mcp.status, 403)
  t.same(corsHeaders(mcp.headers), [])
})

t.test('origins: ["*"] allows every origin, in CORS and in the Origin check alike', async t => {
  const { base } = await listen(t, { security: { cors: { origins: ['*'] } } })
  const pre = await preflight(base, '/greet/mcp', OTHER)
  t.equal(pre.status, 204)
  t.equal(pre.headers['access-control-allow-origin'], '*')
  const rest = await send(base, 'POST', '/greet/tools/echoHai', { origin: OTHER, 'content-type': 'application/json' }, '{"userName":"Ada"}')
  t.equal(rest.status, 200)
  t.equal(rest.headers['access-control-allow-origin'], '*')
})

t.test('without gateway.cors there is no CORS: a preflight is a 404 and answers carry no CORS header', async t => {
  const { base } = await listen(t)
  const pre = await preflight(base, '/greet/mcp', 'http://localhost:5173')
  t.equal(pre.status, 404)
  t.same(corsHeaders(pre.headers), [])
  const rest = await send(base, 'POST', '/greet/tools/echoHai', { origin: 'http://localhost:5173', 'content-type': 'application/json' }, '{"userName":"Ada"}')
  t.equal(rest.status, 200, 'a localhost origin still passes the Origin check')
  t.same(corsHeaders(rest.headers), [])
})

t.test('with authentication on, a preflight needs no credentials and a 401 is readable, its WWW-Authenticate exposed', async t => {
  const key = 'bench-key-0123456789'
  const { base } = await listen(t, {
    security: {
      cors: { origins: [APP] },
      auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} }
    }
  })
  const pre = await preflight(base, '/greet/tools/echoHai', APP, 'POST', 'authorization, content-type')
  t.equal(pre.status, 204, 'answered before authentication')
  t.equal(pre.headers['access-control-allow-origin'], APP)

  const refused = await send(base, 'POST', '/greet/tools/echoHai', { origin: APP, 'content-type': 'application/json' }, '{"userName":"Ada"}')
  t.equal(refused.status, 401)
  t.type(refused.headers['www-authenticate'], 'string')
  t.equal(refused.headers['access-control-allow-origin'], APP)
  t.ok(list(refused.headers['access-control-expose-headers']).includes('www-authenticate'))

  const allowed = await send(base, 'POST', '/greet/tools/echoHai', { origin: APP, 'content-type': 'application/json', authorization: `Bearer ${key}` }, '{"userName":"Ada"}')
  t.equal(allowed.status, 200)
  t.equal(allowed.headers['access-control-allow-origin'], APP)
})
