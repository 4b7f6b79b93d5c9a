import t from 'tap'
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { fileURLToPath } from 'node:url'
import { parseConfig } from '../src/config.js'
import { listen } from './helper.js'

// Hostile input, generated: a seeded, bounded stream of bad requests of every class the
// hardening issue names, sent to the REST routes, a server's own MCP endpoint (sessions and
// stateless) and /mcp, for an in-process and a stdio upstream server. Whatever comes in, the
// gateway answers with a 4xx (or a success), a JSON body with a `code` or a JSON-RPC error,
// stays up, and leaves Object.prototype alone. `FUZZ_SEED` and `FUZZ_COUNT` reproduce or
// lengthen a run.

const SEED = Number(process.env.FUZZ_SEED ?? 20261130)
const COUNT = Number(process.env.FUZZ_COUNT ?? 10_000)
const CONCURRENCY = 32
const fixture = fileURLToPath(new URL('fixtures/stdio-server.mjs', import.meta.url))

/** mulberry32: a small seeded generator, so a failing run can be replayed exactly. */
function generator (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let r = Math.imul(a ^ (a >>> 15), 1 | a)
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296
  }
}

interface Probe { method: string, path: string, headers: Record<string, string>, body?: Buffer, kind: string }

const MCP_PATHS = ['/greet/mcp', '/greet-stateless/mcp', '/mcp', '/fixture/mcp']
const REST_PATHS = ['/greet/tools/echoHai', '/math/tools/add', '/math/tools/nothing', '/fixture/tools/add', '/greet/prompts/none', '/fixture/tools/whoami']
const ODD_PATHS = ['//[', '/%ff', '/..%2f..%2fetc/passwd', '/greet/tools/%00', '/math/tools/a%2Fb', '/nowhere/mcp', '/greet/resources/read?uri=%', `/${'a'.repeat(3000)}`, '/mcp?x=' + '%'.repeat(50)]
const METHODS = ['initialize', 'tools/list', 'tools/call', 'prompts/get', 'resources/read', 'ping', 'logging/setLevel', 'completion/complete', 'notifications/initialized', 'nope/nothing', '', '__proto__', 'constructor']
const VERSIONS = ['2025-03-26', '2025-06-18', '2025-11-25', '2026-07-28', '1999-01-01', '', 'garbage', '2026-07-28, 2025-06-18']
const POLLUTION = [
  '{"__proto__":{"polluted":"yes"}}',
  '{"constructor":{"prototype":{"polluted":"yes"}}}',
  '{"userName":"x","__proto__":{"polluted":"yes"}}',
  '{"a":1,"b":2,"__proto__":{"isAdmin":true}}'
]

function build (random: () => number): Probe {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
  const base = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
  const rpc = (params: unknown = {}): Record<string, unknown> => ({ jsonrpc: '2.0', id: Math.floor(random() * 1000), method: pick(METHODS), params })
  const kinds: Array<() => Probe> = [
    () => { // truncated or corrupted JSON
      const text = JSON.stringify(rpc({ name: 'echoHai', arguments: { userName: 'Ada' } }))
      const cut = text.slice(0, Math.floor(random() * text.length))
      return { kind: 'malformed json', method: 'POST', path: pick([...MCP_PATHS, ...REST_PATHS]), headers: base, body: Buffer.from(random() < 0.5 ? cut : cut.replace(/[{":,]/, pick(['', '}', '[', '\\']))) }
    },
    () => { // wrong types everywhere
      const value = pick([null, 1, 'x', [], [1, 2], true, { a: { b: [] } }, -1e308])
      const body = pick([
        { jsonrpc: '2.0', id: value, method: 'tools/call', params: { name: 'echoHai', arguments: { userName: value } } },
        { jsonrpc: value, id: 1, method: value, params: value },
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: value, arguments: value } },
        value
      ])
      return { kind: 'wrong types', method: 'POST', path: pick([...MCP_PATHS, ...REST_PATHS]), headers: base, body: Buffer.from(JSON.stringify(body) ?? 'null') }
    },
    () => { // deep nesting
      const depth = pick([100, 1000, 10_000])
      const open = random() < 0.5 ? '['.repeat(depth) : '{"a":'.repeat(depth)
      const close = open.startsWith('[') ? ']'.repeat(depth) : '}'.repeat(depth)
      const inner = random() < 0.5 ? `${open}1${close}` : `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echoHai","arguments":{"userName":${open}1${close}}}}`
      return { kind: 'deep', method: 'POST', path: pick([...MCP_PATHS, ...REST_PATHS]), headers: base, body: Buffer.from(inner) }
    },
    () => { // invalid UTF-8
      const text = Buffer.from(JSON.stringify(rpc({ name: 'echoHai', arguments: { userName: 'Ada' } })))
      const at = Math.floor(random() * text.length)
      return { kind: 'invalid utf-8', method: 'POST', path: pick([...MCP_PATHS, ...REST_PATHS]), headers: base, body: Buffer.concat([text.subarray(0, at), Buffer.from([pick([0xff, 0xc3, 0xe2, 0x80, 0xf8])]), text.subarray(at)]) }
    },
    () => { // bad JSON-RPC envelopes and batches
      const body = pick<unknown>([
        [], [rpc(), rpc()], [1, 2, 3], Array.from({ length: 200 }, () => rpc()),
        { id: 1, method: 'tools/list' }, { jsonrpc: '1.0', id: 1, method: 'tools/list' },
        { jsonrpc: '2.0', result: {}, id: 9 }, { jsonrpc: '2.0', error: { code: 1, message: 'x' }, id: 9 }, {}
      ])
      return { kind: 'bad json-rpc', method: 'POST', path: pick(MCP_PATHS), headers: { ...base, 'mcp-protocol-version': pick(VERSIONS) }, body: Buffer.from(JSON.stringify(body)) }
    },
    () => { // forged sessions and protocol versions
      const headers: Record<string, string> = { ...base, 'mcp-session-id': pick(['00000000-0000-0000-0000-000000000000', 'x', '../../etc', '\u00e9'.normalize('NFD').replace(/[^\x20-\x7e]/g, '')]), 'mcp-protocol-version': pick(VERSIONS) }
      const method = pick(['POST', 'GET', 'DELETE'])
      return { kind: 'forged session', method, path: pick(MCP_PATHS), headers, ...(method === 'POST' && { body: Buffer.from(JSON.stringify(rpc())) }) }
    },
    () => { // 2026-07-28 requests with lying headers and envelopes
      const method = pick(METHODS)
      const meta = pick<unknown>([{}, { 'io.modelcontextprotocol/protocolVersion': pick(VERSIONS) }, { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': pick([null, 1, {}]), 'io.modelcontextprotocol/clientInfo': pick([null, 'x', { name: 1 }]) }])
      return {
        kind: 'modern headers',
        method: 'POST',
        path: pick(MCP_PATHS),
        headers: { ...base, 'mcp-protocol-version': pick(VERSIONS), 'mcp-method': pick(METHODS), 'mcp-name': pick(['echoHai', 'add', 'x', '']) },
        body: Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { name: pick(['echoHai', 'add', 'greet_echoHai']), arguments: { userName: 'x', a: 1, b: 2 }, _meta: meta } }))
      }
    },
    () => ({ // foreign Host and Origin
      kind: 'foreign host',
      method: 'POST',
      path: pick([...MCP_PATHS, ...REST_PATHS]),
      headers: { ...base, host: pick(['evil.example', 'localhost.evil.example:80', '127.0.0.1.nip.io', '[::2]']), ...(random() < 0.5 && { origin: pick(['https://evil.example', 'null', 'file://']) }) },
      body: Buffer.from('{"userName":"Ada","a":1,"b":2}')
    }),
    () => ({ // prototype pollution keys
      kind: 'pollution',
      method: 'POST',
      path: pick([...MCP_PATHS, ...REST_PATHS]),
      headers: base,
      body: Buffer.from(random() < 0.5 ? pick(POLLUTION) : JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: JSON.parse(pick(POLLUTION)) }).replace('"params":{', '"params":{"__proto__":{"polluted":"yes"},'))
    }),
    () => ({ // header abuse
      kind: 'headers',
      method: pick(['POST', 'PUT', 'PATCH', 'OPTIONS', 'GET', 'HEAD']),
      path: pick([...MCP_PATHS, ...REST_PATHS, ...ODD_PATHS]),
      headers: {
        accept: pick(['', '*/*', 'text/html', 'application/json', 'text/event-stream']),
        'content-type': pick(['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'multipart/form-data; boundary=x', 'application/json']),
        'x-junk': 'v'.repeat(Math.floor(random() * 4000)),
        'mcp-protocol-version': pick(VERSIONS)
      },
      body: Buffer.from(pick(['', 'a=b', '{"userName":"Ada"}', 'null', '"string"', '12']))
    }),
    () => { // bodies over the limit (few: they are large)
      const size = (1 << 20) + Math.floor(random() * 1000)
      return { kind: 'huge', method: 'POST', path: pick([...MCP_PATHS, ...REST_PATHS]), headers: base, body: Buffer.from(`{"userName":"${'x'.repeat(size)}"}`) }
    }
  ]
  // Huge bodies are 1 in 200, the other classes evenly.
  const index = random() < 0.005 ? kinds.length - 1 : Math.floor(random() * (kinds.length - 1))
  return (kinds[index] as () => Probe)()
}

interface Answer { status: number, headers: IncomingHttpHeaders, body: string }

function send (port: number, agent: Agent, probe: Probe): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, agent, method: probe.method, path: probe.path, headers: { ...(probe.body !== undefined && { 'content-length': String(probe.body.length) }), ...probe.headers } }, res => {
      const chunks: Buffer[] = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }) })
      res.on('error', reject)
    })
    // An answer that never comes is a finding too, not a hung test.
    req.setTimeout(15_000, () => { req.destroy(new Error('no answer within 15 s')) })
    req.on('error', reject)
    req.end(probe.body)
  })
}

/** What is wrong with an answer, or undefined when it is one the gateway may give. */
function verdict (probe: Probe, answer: Answer): string | undefined {
  if (answer.status >= 500) return `status ${answer.status}`
  const type = String(answer.headers['content-type'] ?? '')
  if (answer.body === '' || probe.method === 'HEAD') {
    // No body: accepted notifications and responses (202), a session's DELETE, OPTIONS and HEAD.
    return answer.status < 300 || answer.status === 405 || probe.method === 'HEAD' || probe.method === 'OPTIONS' ? undefined : `status ${answer.status} with no body`
  }
  if (type.includes('text/event-stream')) {
    const messages = answer.body.split('\n').filter(line => line.startsWith('data: ') && line.length > 6).map(line => JSON.parse(line.slice(6)) as Record<string, unknown>)
    return messages.every(message => message.jsonrpc === '2.0') ? undefined : 'an SSE event that is not JSON-RPC'
  }
  if (!type.includes('application/json') && !type.includes('text/html')) return `content-type ${type}`
  if (type.includes('text/html')) return answer.status < 300 ? undefined : `an HTML error page (${answer.status})`
  let body: unknown
  try {
    body = JSON.parse(answer.body)
  } catch {
    return 'a body that is not JSON'
  }
  if (answer.status < 300) return undefined
  const item = Array.isArray(body) ? body[0] : body
  const shaped = typeof (item as { code?: unknown })?.code === 'string' || typeof (item as { error?: { code?: unknown } })?.error?.code === 'number'
  return shaped ? undefined : `an error body without a code: ${answer.body.slice(0, 120)}`
}

t.test(`${COUNT} generated hostile requests (seed ${SEED}): no 5xx, every error has a code, the process stays up, Object.prototype untouched`, async t => {
  const config = parseConfig(JSON.stringify({
    mcpServers: {
      greet: { builtin: 'greet' },
      'greet-stateless': { builtin: 'greet', stateless: true },
      math: { builtin: 'math' },
      fixture: { command: process.execPath, args: [fixture] }
    }
  }), 'gateway.json')
  const { base } = await listen(t, { config })
  const port = Number(new URL(base).port)
  const crashes: unknown[] = []
  const onCrash = (err: unknown): void => { crashes.push(err) }
  process.on('uncaughtException', onCrash)
  process.on('unhandledRejection', onCrash)
  t.teardown(() => {
    process.off('uncaughtException', onCrash)
    process.off('unhandledRejection', onCrash)
  })
  const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort()
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  t.teardown(() => { agent.destroy() })

  const random = generator(SEED)
  const probes = Array.from({ length: COUNT }, () => build(random))
  const findings = new Map<string, { count: number, example: string }>()
  let next = 0
  let answered = 0
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < probes.length) {
      const probe = probes[next++] as Probe
      let problem: string | undefined
      try {
        problem = verdict(probe, await send(port, agent, probe))
        answered++
      } catch (err) {
        // A connection the gateway closed on a request Node itself refuses is an answer, not a crash.
        const code = (err as NodeJS.ErrnoException).code
        problem = code === 'ECONNRESET' || code === 'EPIPE' ? undefined : `no answer: ${(err as Error).message}`
      }
      if (problem !== undefined) {
        const key = `${probe.kind}: ${problem.split(':')[0] as string}`
        const entry = findings.get(key) ?? { count: 0, example: `${probe.method} ${probe.path.slice(0, 80)} ${problem}` }
        entry.count++
        findings.set(key, entry)
      }
    }
  }))

  t.same(Object.fromEntries(findings), {}, 'every answer is one the gateway may give')
  t.ok(answered > COUNT * 0.95, `${answered} of ${COUNT} requests answered`)
  t.same(crashes, [], 'no uncaught exception or unhandled rejection')
  t.same(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys, 'Object.prototype has no new keys')
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  t.equal(({} as Record<string, unknown>).isAdmin, undefined)
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, 'still serving')
  const call = await fetch(`${base}/math/tools/add`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":2,"b":3}' })
  t.same((await call.json()).structuredContent, { sum: 5 }, 'and calling tools')
})
