import t from 'tap'
import { readFileSync } from 'node:fs'
import { ProtocolError, SdkError, SdkErrorCode } from '@modelcontextprotocol/server'
import * as errors from '../../src/errors.js'

// The catalogue and the README's error table stay in step, as Fastify's "all errors are
// documented" test keeps its Errors.md.

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

/** The `GW_ERR_*` code of every error the catalogue defines. */
function catalogueCodes (): string[] {
  const codes = new Set<string>([errors.TOOL_ERROR_CODE])
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || value === errors.CallError) continue
    let instance: unknown
    try {
      instance = new (value as new (...args: unknown[]) => unknown)('x', 'y', 1)
    } catch {
      continue
    }
    const code = (instance as { code?: unknown }).code
    if (typeof code === 'string' && code.startsWith('GW_ERR_')) codes.add(code)
  }
  return [...codes].sort()
}

t.test('every GW_ERR_* code of src/errors.ts is in the README\'s error table', async t => {
  const codes = catalogueCodes()
  t.ok(codes.length >= 20, `found ${codes.length} codes`)
  const table = readme.slice(readme.indexOf('| status | when | `code` |'), readme.indexOf('Every error body is JSON'))
  t.same(codes.filter(code => !table.includes(`\`${code}\``)), [], 'codes missing from the table')
  const documented = [...table.matchAll(/`(GW_ERR_[A-Z_]+)`/g)].map(match => match[1])
  t.same(documented.filter(code => !codes.includes(code as string)), [], 'codes in the table the catalogue does not have')
})

t.test('a failed call becomes one HTTP error, whatever connection failed', async t => {
  const target = { server: 'files', state: 'up', failure: undefined, retryAfter: undefined }
  t.match(errors.toHttpError(new errors.CallError('REQUEST_TIMEOUT', 'late'), target, 'read', 5), { statusCode: 504, code: 'GW_ERR_TOOL_TIMEOUT', message: "Tool 'read' on server 'files' did not answer within 5 ms" })
  t.match(errors.toHttpError(errors.invalidParams('bad uri'), target, 'read', 5), { statusCode: 400, code: 'GW_ERR_UPSTREAM_REJECTED' })
  t.match(errors.toHttpError(new errors.CallError('CONNECTION_CLOSED', 'gone'), target, 'read', 5), { statusCode: 502, code: 'GW_ERR_UPSTREAM' })
  const down = errors.toHttpError(new errors.CallError('NOT_CONNECTED', 'down'), { ...target, state: 'down', failure: 'the process exited', retryAfter: 7 }, 'read', 5) as errors.GatewayError
  t.match(down, { statusCode: 503, code: 'GW_ERR_SERVER_UNAVAILABLE', headers: { 'retry-after': '7' } }, 'the 503 carries its own Retry-After')
  const own = new errors.ToolNotFoundError('x', 'files')
  t.equal(errors.toHttpError(own, target, 'x', 5), own, "the gateway's own errors pass as they are")
})

t.test('any error becomes one JSON-RPC error', async t => {
  t.match(errors.toJsonRpcError(new errors.ToolNotFoundError('secret', 'probe'), 'probe'), { code: -32602, message: 'Tool secret not found' })
  t.match(errors.toJsonRpcError(new errors.ResourceNotFoundError('a://b', 'probe'), 'probe'), { code: -32602, data: { uri: 'a://b' } })
  t.match(errors.toJsonRpcError(new errors.ServerUnavailableError('probe', 'down'), 'probe'), { code: -32000, data: { code: 'GW_ERR_SERVER_UNAVAILABLE' } })
  t.match(errors.toJsonRpcError(new errors.CallError('PROTOCOL_ERROR', 'nope', -32602, { why: 1 }), 'probe'), { code: -32602, message: 'nope', data: { why: 1 } }, "a server's own error passes as it was")
  t.match(errors.toJsonRpcError(new errors.CallError('CONNECTION_CLOSED', 'pipe broke'), 'probe'), { code: -32603, message: "Server 'probe': pipe broke" })
  const internal = errors.toJsonRpcError(new Error('/etc/secret path'), 'probe')
  t.ok(internal instanceof ProtocolError)
  t.notMatch(internal.message, /secret/, 'an unknown failure says nothing of its internals')
})

t.test("of the SDK client's own errors, only a connection gone is CONNECTION_CLOSED", async t => {
  const from = (code: SdkErrorCode): errors.CallError => errors.fromSdkError(new SdkError(code, 'x'))
  for (const code of [SdkErrorCode.ConnectionClosed, SdkErrorCode.NotConnected, SdkErrorCode.SendFailed, SdkErrorCode.ClientHttpNotImplemented]) t.match(from(code), { code: 'CONNECTION_CLOSED' }, code)
  t.match(from(SdkErrorCode.RequestTimeout), { code: 'REQUEST_TIMEOUT' })
  for (const code of [SdkErrorCode.InvalidResult, SdkErrorCode.UnsupportedResultType]) t.match(from(code), { code: 'PROTOCOL_ERROR', rpcCode: -32603 }, `${code}: a bad answer`)
  t.match(from(SdkErrorCode.MethodNotSupportedByProtocolVersion), { code: 'PROTOCOL_ERROR', rpcCode: -32601 }, 'a request the server cannot take')
  const target = { server: 'files', state: 'up', failure: undefined, retryAfter: undefined }
  t.match(errors.toHttpError(from(SdkErrorCode.InvalidResult), target, 'read', 5), { statusCode: 502, code: 'GW_ERR_UPSTREAM' })
})
