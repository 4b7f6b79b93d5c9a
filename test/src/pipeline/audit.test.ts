import t, { type Test } from 'tap'
import { McpServer, type AuthInfo } from '@modelcontextprotocol/server'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { GatewayOptions } from '../../../src/app.js'
import { json, listenAs, logCapture, modernRequest } from '../../helper.js'

// The audit log: one structured line per tool call, prompt get and resource read on any way
// in, at info under `audit`, naming the caller by its clientId and never by its credential;
// the arguments only at debug.

const TOKEN = 'tok-3f9a-very-secret'
const alice: AuthInfo = { clientId: 'alice', scopes: [], token: TOKEN, extra: { kind: 'apiKey' } }
const as = { 'x-test-identity': JSON.stringify(alice) }

function probeServer () {
  const server = new McpServer({ name: 'probe', version: '1.0.0' })
  server.registerTool('echo', { description: 'echo' }, async () => ({ content: [{ type: 'text', text: 'echo' }] }))
  server.registerTool('fails', { description: 'reports an error' }, async () => ({ content: [{ type: 'text', text: 'no' }], isError: true }))
  server.registerTool('hidden', { description: 'denied by the policy' }, async () => ({ content: [{ type: 'text', text: 'hidden' }] }))
  server.registerPrompt('hello', { description: 'a prompt' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }] }))
  server.registerResource('doc', 'probe://doc', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text: 'doc' }] }))
  return server
}

/** A listening gateway logging at `level` into the returned lines. */
async function start (t: Test, level: string, options: GatewayOptions): Promise<{ base: string, lines: string[], audit: () => Array<Record<string, any>> }> {
  const { stream, raw } = logCapture()
  const { base } = await listenAs(t, options, { level, stream })
  const audit = (): Array<Record<string, any>> => raw.flatMap(chunk => chunk.split('\n').filter(Boolean)).map(line => JSON.parse(line) as Record<string, any>).filter(entry => entry.audit !== undefined)
  return { base, lines: raw, audit }
}

t.test('one audit line per tool call, prompt get and resource read, on every way in, with no credential', async t => {
  const { base, lines, audit } = await start(t, 'info', {
    servers: [{ name: 'probe', factory: probeServer }],
    security: { policy: [{ match: {}, allow: ['*'], deny: ['probe/hidden'] }], rateLimit: { max: 6, timeWindow: 60_000, servers: {} } }
  })
  await (await fetch(`${base}/probe/tools/echo`, { method: 'POST', headers: { ...json, ...as, 'x-request-id': 'req-rest' }, body: '{"word":"swordfish"}' })).text()
  t.match(audit(), [{ level: 30, msg: 'mcp call', audit: { clientId: 'alice', server: 'probe', method: 'tools/call', name: 'echo', way: 'rest', outcome: 'ok', durationMs: Number, requestId: 'req-rest' } }], 'REST: one line at info')
  t.notOk('arguments' in audit()[0]?.audit, 'no arguments at info')

  const modern = async (method: string, params: Record<string, unknown>): Promise<void> => {
    await (await fetch(`${base}/probe/mcp`, modernRequest(method, params, as))).text()
  }
  await modern('tools/call', { name: 'fails', arguments: {} })
  await modern('prompts/get', { name: 'hello' })
  await modern('resources/read', { uri: 'probe://doc' })
  await modern('tools/call', { name: 'hidden', arguments: {} })
  await modern('tools/list', {})

  const client = new LegacyClient({ name: 'audit-test', version: '1.0.0' })
  await client.connect(new LegacyTransport(new URL(`${base}/probe/mcp`), { requestInit: { headers: as } }))
  t.teardown(() => client.close())
  await client.callTool({ name: 'echo', arguments: {} })
  const aggregate = new LegacyClient({ name: 'audit-test', version: '1.0.0' })
  await aggregate.connect(new LegacyTransport(new URL(`${base}/mcp`), { requestInit: { headers: as } }))
  t.teardown(() => aggregate.close())
  await aggregate.callTool({ name: 'probe_echo', arguments: {} })
  await (await fetch(`${base}/probe/tools/echo`, { method: 'POST', headers: { ...json, ...as }, body: '{}' })).text()

  t.match(audit().map(entry => entry.audit), [
    { way: 'rest', name: 'echo', outcome: 'ok' },
    { way: 'mcp-2026', method: 'tools/call', name: 'fails', outcome: 'tool_error', requestId: String },
    { way: 'mcp-2026', method: 'prompts/get', name: 'hello', outcome: 'ok' },
    { way: 'mcp-2026', method: 'resources/read', name: 'probe://doc', outcome: 'ok' },
    { way: 'mcp-2026', method: 'tools/call', name: 'hidden', outcome: 'denied', code: 'GW_ERR_TOOL_NOT_FOUND' },
    { way: 'mcp-2025-session', name: 'echo', outcome: 'ok', requestId: String },
    { way: 'aggregate', server: 'probe', name: 'echo', outcome: 'ok' },
    { way: 'rest', name: 'echo', outcome: 'rate_limited', code: 'GW_ERR_RATE_LIMITED' }
  ], 'a line per call, none for lists, refusals included')
  t.equal(audit().length, 8)
  t.ok(audit().every(entry => entry.audit.clientId === 'alice' && entry.level === 30))
  t.notOk(lines.some(line => line.includes(TOKEN)), 'the token appears in no log line')
  t.notOk(lines.some(line => line.includes('swordfish')), 'nor do the arguments, at info')
})

t.test('at debug the line carries the arguments; an anonymous caller is named by its address', async t => {
  const { base, lines, audit } = await start(t, 'debug', { servers: [{ name: 'probe', factory: probeServer }] })
  await (await fetch(`${base}/probe/tools/echo`, { method: 'POST', headers: json, body: '{"word":"swordfish"}' })).text()
  t.match(audit(), [{ level: 30, audit: { ip: '127.0.0.1', name: 'echo', outcome: 'ok', arguments: { word: 'swordfish' } } }])
  t.notOk('clientId' in (audit()[0]?.audit ?? {}))
  t.ok(lines.length > 1)
})

t.test('no audit filter while the logger does not write info, so calls pass the pipeline unwrapped', async t => {
  const { base, audit } = await start(t, 'warn', { servers: [{ name: 'probe', factory: probeServer }] })
  t.equal((await fetch(`${base}/probe/tools/echo`, { method: 'POST', headers: json, body: '{}' })).status, 200)
  t.same(audit(), [])
})
