import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { IncomingHttpHeaders } from 'node:http'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { exportSPKI, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose'
import { OAuth2Server } from 'oauth2-mock-server'
import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import gateway from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { builtinServers } from '../../servers/index.js'
import { json, listen, text } from '../helper.js'

// Authentication as a user meets it: a real authorization server (oauth2-mock-server) issues
// tokens bound to the resource the client asks for (RFC 8707), the gateway verifies them
// against its JWKS, and clients find the authorization server from the gateway's own 401.

const require = createRequire(import.meta.url)
const everything = require.resolve('@modelcontextprotocol/server-everything/dist/index.js')
const CI_KEY = 'ci-key-0123456789abcdef'
const ADMIN_KEY = 'admin-key-0123456789abcdef'
const mcpHeaders = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }

// --- The authorization server -------------------------------------------------------------
const oauth = new OAuth2Server()
const signingKey = await oauth.issuer.keys.generate('RS256') as JWK & { kid: string }
await oauth.start(0, '127.0.0.1')
const issuer = `http://127.0.0.1:${oauth.address().port}`
oauth.issuer.url = issuer
// As a real authorization server does: the token's audience is the resource it was asked
// for (RFC 8707), and it names the client (RFC 9068 `client_id`) and a subject.
oauth.service.on('beforeTokenSigning', (token: { payload: Record<string, unknown> }, req: { body: Record<string, unknown>, headers: IncomingHttpHeaders }) => {
  if (typeof req.body.resource === 'string') token.payload.aud = req.body.resource
  const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1]
  // The client authenticates as the metadata allows (client_secret_basic, or client_id in the body).
  const clientId = basic === undefined ? req.body.client_id : decodeURIComponent(Buffer.from(basic, 'base64').toString().split(':')[0] as string)
  if (typeof clientId === 'string') Object.assign(token.payload, { client_id: clientId, sub: `service-account-${clientId}`, tenant: 'acme' })
})
t.teardown(async () => { await oauth.stop() })

// --- An HTTP upstream that reports the headers it received: a second gateway --------------
const received: IncomingHttpHeaders[] = []
const upstream = Fastify({ logger: false })
upstream.addHook('onRequest', async request => { received.push(request.headers) })
await upstream.register(gateway, { servers: [{ name: 'greet', factory: builtinServers.greet }] })
await upstream.listen({ port: 0, host: '127.0.0.1' })
t.teardown(async () => { await upstream.close() })
const upstreamUrl = `http://127.0.0.1:${(upstream.server.address() as { port: number }).port}/greet/mcp`

// --- The gateway -----------------------------------------------------------------------------
const config = parseConfig(JSON.stringify({
  mcpServers: {
    greet: { builtin: 'greet' },
    math: { builtin: 'math' },
    bye: { builtin: 'bye', scopes: ['bye:call', 'bye:admin'] },
    up: { url: upstreamUrl, headers: { 'x-configured': 'yes' } },
    everything: { command: process.execPath, args: [everything, 'stdio'] }
  },
  gateway: {
    auth: {
      apiKeys: [
        { id: 'ci', key: '${CI_KEY}' },
        { id: 'admin', key: '${ADMIN_KEY}', scopes: ['bye:call', 'bye:admin'] }
      ],
      jwt: { issuer, jwksUri: `${issuer}/jwks` },
      forwardIdentity: { 'x-caller': 'id', 'x-caller-sub': 'sub', 'x-caller-tenant': 'tenant' }
    }
  }
}), 'gateway.json', { CI_KEY, ADMIN_KEY })
const { base } = await listen(t, { config })
const metadataUrl = (path: string): string => `${base}/.well-known/oauth-protected-resource${path}`

/** A token signed with the authorization server's key, for `aud`, with these claims and header over the defaults. */
async function token (aud: string | string[], claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ iss: issuer, aud, client_id: 'tester', sub: 'tester-sub', scope: '', iat: now, nbf: now - 10, exp: now + 600, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid, ...header })
    .sign(await importJWK(signingKey, 'RS256'))
}

async function callAdd (headers: Record<string, string>, query = ''): Promise<Response> {
  return await fetch(`${base}/math/tools/add${query}`, { method: 'POST', headers: { ...json, ...headers }, body: '{"a":2,"b":3}' })
}

/** The attributes of a `WWW-Authenticate: Bearer` challenge. */
function challenge (res: Response): Record<string, string> {
  const header = res.headers.get('www-authenticate') ?? ''
  return Object.fromEntries([...header.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(match => [match[1], match[2]]))
}

t.test('an SDK client with client credentials finds the authorization server from the 401, gets a token and calls a tool', async t => {
  const provider = new ClientCredentialsProvider({ clientId: 'agent', clientSecret: 'agent-secret', expectedIssuer: issuer })
  const client = new Client({ name: 'agent', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/math/mcp`), { authProvider: provider }))
  t.teardown(() => client.close())
  t.same((await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } })).structuredContent, { sum: 5 })

  const minted = provider.tokens()?.access_token as string
  t.ok(minted, 'the client holds a token it got by itself')
  const rest = await callAdd({ authorization: `Bearer ${minted}` })
  t.equal(rest.status, 200, 'the token of /math/mcp is good on the math server\'s REST routes too')
  const elsewhere = await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: { ...json, authorization: `Bearer ${minted}` }, body: '{"userName":"Ada"}' })
  t.equal(elsewhere.status, 401, 'a token minted for /math/mcp is refused on /greet')
  t.match(challenge(elsewhere), { error: 'invalid_token', error_description: /not meant for this resource/ })
})

t.test('each endpoint publishes its protected resource metadata (RFC 9728)', async t => {
  const math = await (await fetch(metadataUrl('/math/mcp'))).json()
  t.same(math, { resource: `${base}/math/mcp`, authorization_servers: [issuer], bearer_methods_supported: ['header'] })
  const bye = await (await fetch(metadataUrl('/bye/mcp'))).json()
  t.same(bye, { resource: `${base}/bye/mcp`, authorization_servers: [issuer], scopes_supported: ['bye:call', 'bye:admin'], bearer_methods_supported: ['header'] })
  t.match(await (await fetch(metadataUrl('/mcp'))).json(), { resource: `${base}/mcp`, authorization_servers: [issuer] })
  t.match(await (await fetch(metadataUrl(''))).json(), { resource: base, authorization_servers: [issuer] }, 'the root form')
  t.equal((await fetch(metadataUrl('/nothing/mcp'))).status, 404)
})

t.test('a request without credentials gets 401 and a challenge naming the metadata', async t => {
  const rest = await callAdd({})
  t.equal(rest.status, 401)
  t.match(await rest.json(), { statusCode: 401, code: 'GW_ERR_UNAUTHENTICATED', error: 'Unauthorized' })
  t.equal(rest.headers.get('www-authenticate'), `Bearer resource_metadata="${metadataUrl('/math/mcp')}"`, 'no error code when no credentials came (RFC 6750 §3.1)')

  const mcp = await fetch(`${base}/bye/mcp`, { method: 'POST', headers: mcpHeaders, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
  t.equal(mcp.status, 401)
  t.match(await mcp.json(), { jsonrpc: '2.0', error: { data: { code: 'GW_ERR_UNAUTHENTICATED' } } }, 'a JSON-RPC error on MCP routes')
  t.same(challenge(mcp), { resource_metadata: metadataUrl('/bye/mcp'), scope: 'bye:call bye:admin' })

  const aggregate = await fetch(`${base}/mcp`, { method: 'POST', headers: mcpHeaders, body: '{}' })
  t.equal(aggregate.status, 401)
  t.same(challenge(aggregate), { resource_metadata: metadataUrl('/mcp') })
})

t.test('bad tokens are refused, each with invalid_token', async t => {
  const resource = `${base}/math/mcp`
  const now = Math.floor(Date.now() / 1000)
  const good = await token(resource)
  t.equal((await callAdd({ authorization: `Bearer ${good}` })).status, 200, 'the control: a good token passes')

  const { privateKey: strangerKey } = await generateKeyPair('RS256')
  const [head, body, signature] = good.split('.') as [string, string, string]
  const publicPem = await exportSPKI(await importJWK({ ...signingKey, d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined }, 'RS256') as CryptoKey)
  const unsigned = (claims: Record<string, unknown>): string => `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`
  const cases: Array<[string, string, RegExp]> = [
    ['expired', await token(resource, { exp: now - 3600, nbf: now - 7200 }), /expired/],
    ['not yet valid', await token(resource, { nbf: now + 3600 }), /not valid yet/],
    ['for another audience', await token('https://elsewhere.example/mcp'), /not meant for this resource/],
    ['minted for another endpoint', await token(`${base}/greet/mcp`), /not meant for this resource/],
    ['from another issuer', await token(resource, { iss: 'https://evil.example' }), /trusted issuer/],
    ['with no expiry', await token(resource, { exp: undefined }), /exp/],
    ['signed with a key the issuer does not publish', await new SignJWT({ iss: issuer, aud: resource, exp: now + 600 }).setProtectedHeader({ alg: 'RS256', kid: 'unknown-kid' }).sign(strangerKey), /key the issuer does not publish/],
    ['with a tampered signature', `${head}.${body}.${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`, /signature/],
    ['with a tampered payload', `${head}.${Buffer.from(JSON.stringify({ iss: issuer, aud: resource, exp: now + 600, scope: 'bye:admin' })).toString('base64url')}.${signature}`, /signature/],
    ['unsigned (alg none)', unsigned({ iss: issuer, aud: resource, exp: now + 600 }), /accepted algorithm/],
    ['HS256 with the public key as the secret', await new SignJWT({ iss: issuer, aud: resource, exp: now + 600 }).setProtectedHeader({ alg: 'HS256', kid: signingKey.kid }).sign(new TextEncoder().encode(publicPem)), /accepted algorithm/],
    ['not a JWT at all', 'garbage', /not valid/],
    // Refused before any verification: a compact JWS has exactly three parts.
    ['a good token with a fourth part', `${good}.extra`, /^The token is not valid$/]
  ]
  for (const [what, bad, reason] of cases) {
    const res = await callAdd({ authorization: `Bearer ${bad}` })
    t.equal(res.status, 401, what)
    t.match(await res.json(), { code: 'GW_ERR_UNAUTHENTICATED' }, what)
    t.match(challenge(res), { error: 'invalid_token', error_description: reason, resource_metadata: metadataUrl('/math/mcp') }, what)
  }
})

t.test('a token in the query string is refused, even a good one', async t => {
  const res = await callAdd({}, `?access_token=${await token(`${base}/math/mcp`)}`)
  t.equal(res.status, 400)
  t.match(await res.json(), { code: 'GW_ERR_INVALID_AUTH_REQUEST' })
  t.match(challenge(res), { error: 'invalid_request' })
})

t.test('API keys work as Bearer and as X-API-Key; a wrong one is refused', async t => {
  t.equal((await callAdd({ authorization: `Bearer ${CI_KEY}` })).status, 200)
  t.equal((await callAdd({ 'x-api-key': CI_KEY })).status, 200)
  for (const headers of [{ authorization: `Bearer ${CI_KEY}x` }, { 'x-api-key': 'ci-key-0123456789abcdeg' }, { 'x-api-key': '' }] as Array<Record<string, string>>) {
    const res = await callAdd(headers)
    t.equal(res.status, 401, JSON.stringify(headers))
    t.match(challenge(res), { error: 'invalid_token' })
  }
  const both = await callAdd({ authorization: `Bearer ${CI_KEY}`, 'x-api-key': CI_KEY })
  t.equal(both.status, 400, 'two credentials at once')
})

t.test("a caller without the server's scopes gets 403 naming every scope it needs", async t => {
  const echoBye = async (headers: Record<string, string>): Promise<Response> =>
    await fetch(`${base}/bye/tools/echoBye`, { method: 'POST', headers: { ...json, ...headers }, body: '{"userName":"Ada"}' })
  const refused = await echoBye({ 'x-api-key': CI_KEY })
  t.equal(refused.status, 403)
  t.match(await refused.json(), { statusCode: 403, code: 'GW_ERR_INSUFFICIENT_SCOPE' })
  t.same(challenge(refused), { resource_metadata: metadataUrl('/bye/mcp'), scope: 'bye:call bye:admin', error: 'insufficient_scope', error_description: 'This server needs the scopes bye:call bye:admin' })
  const partial = await echoBye({ authorization: `Bearer ${await token(`${base}/bye/mcp`, { scope: 'bye:call' })}` })
  t.equal(partial.status, 403, 'one scope of two is not enough')
  t.equal((await echoBye({ authorization: `Bearer ${await token(`${base}/bye/mcp`, { scope: undefined, scp: ['bye:admin', 'bye:call'] })}` })).status, 200, 'scp works as scope does')
  t.equal((await echoBye({ 'x-api-key': ADMIN_KEY })).status, 200)

  // On /mcp the servers whose scopes the caller lacks are hidden, and answer as unknown.
  const tools = async (key: string): Promise<string[]> => {
    const client = new LegacyClient({ name: 'agg', version: '1.0.0' })
    await client.connect(new LegacyTransport(new URL(`${base}/mcp`), { requestInit: { headers: { 'x-api-key': key } } }))
    t.teardown(() => client.close())
    return (await client.listTools()).tools.map(tool => tool.name)
  }
  t.notOk((await tools(CI_KEY)).includes('bye_echoBye'))
  t.ok((await tools(ADMIN_KEY)).includes('bye_echoBye'))
})

t.test('a 2025 session belongs to the identity that opened it', async t => {
  const client = new LegacyClient({ name: 'owner', version: '1.0.0' })
  const transport = new LegacyTransport(new URL(`${base}/greet/mcp`), { requestInit: { headers: { 'x-api-key': CI_KEY } } })
  await client.connect(transport)
  t.teardown(() => client.close())
  const session = { ...mcpHeaders, 'mcp-session-id': transport.sessionId as string, 'mcp-protocol-version': '2025-11-25' }
  const ping = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'ping' })
  const other = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...session, 'x-api-key': ADMIN_KEY }, body: ping })
  t.equal(other.status, 404, "another identity's credentials do not reach the session")
  t.match(await other.json(), { error: { code: -32001, message: 'Session not found' } })
  const jwt = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...session, authorization: `Bearer ${await token(`${base}/greet/mcp`, { client_id: 'ci' })}` }, body: ping })
  t.equal(jwt.status, 404, 'a token whose client_id equals the key id is still another caller')
  const owner = await fetch(`${base}/greet/mcp`, { method: 'POST', headers: { ...session, 'x-api-key': CI_KEY }, body: ping })
  t.equal(owner.status, 200, 'its owner still does')
  t.equal(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })), 'Hello, Ada!')
})

t.test("a 2026-07-28 requestState continues only its own caller's call", async t => {
  const url = `${base}/everything/mcp`
  const call = async (key: string, extra: Record<string, unknown> = {}): Promise<Record<string, any>> => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...mcpHeaders, 'x-api-key': key, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'trigger-elicitation-request' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'trigger-elicitation-request', arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'modern', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} } } }, ...extra } })
    })
    const body = await res.text()
    const messages = res.headers.get('content-type')?.includes('text/event-stream') === true
      ? body.split('\n').filter(line => line.startsWith('data: ')).map(line => JSON.parse(line.slice(6)))
      : [JSON.parse(body)]
    return messages.at(-1)
  }
  const asked = (await call(CI_KEY)).result as { inputRequests: Record<string, unknown>, requestState: string }
  const [id] = Object.keys(asked.inputRequests) as [string]
  const answer = { inputResponses: { [id]: { action: 'accept', content: { name: 'Grace', check: true, firstLine: 'x', integer: 1, number: 1, enum: 'option1' } } }, requestState: asked.requestState }
  t.match(await call(ADMIN_KEY, answer), { error: { code: -32602, message: /expired requestState/ } }, "another caller's retry is refused")
  t.match(text((await call(CI_KEY, answer)).result), /Name: Grace/, 'the caller that asked continues its call')
})

t.test('no credential of the caller reaches an HTTP upstream; its identity does', async t => {
  received.length = 0
  const echo = await fetch(`${base}/up/tools/echoHai`, { method: 'POST', headers: { ...json, 'x-api-key': CI_KEY, cookie: 'session=secret', 'x-caller': 'forged' }, body: '{"userName":"Ada"}' })
  t.equal(echo.status, 200)
  const provider = new ClientCredentialsProvider({ clientId: 'agent', clientSecret: 'agent-secret', expectedIssuer: issuer })
  const client = new Client({ name: 'agent', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/up/mcp`), { authProvider: provider }))
  t.teardown(() => client.close())
  t.equal(text(await client.callTool({ name: 'echoHai', arguments: { userName: 'Grace' } })), 'Hello, Grace!')

  const calls = received.filter(headers => headers['x-caller'] !== undefined)
  t.match(calls.map(headers => [headers['x-caller'], headers['x-caller-sub'], headers['x-caller-tenant']]), [['ci', undefined, undefined], ['agent', 'service-account-agent', 'acme']])
  t.ok(received.length > 0)
  for (const headers of received) {
    t.equal(headers.authorization, undefined, 'no Authorization')
    t.equal(headers['x-api-key'], undefined, 'no X-API-Key')
    t.equal(headers.cookie, undefined, 'no cookie')
    t.equal(headers['x-configured'], 'yes', "the entry's own headers only")
  }
})

t.test('liveness, readiness, metadata and docs need no credentials', async t => {
  for (const path of ['/health', '/ready', '/ready/math', '/docs/json', '/.well-known/oauth-protected-resource/math/mcp']) {
    t.equal((await fetch(`${base}${path}`)).status, 200, path)
  }
})

t.test('protectDocs puts the documentation behind the same credentials; mode none changes nothing', async t => {
  const apiKeys = [{ id: 'ci', sha256: createHash('sha256').update(CI_KEY).digest('hex'), scopes: [] }]
  const auth = { mode: 'required' as const, apiKeys, protectDocs: true, authorizationServers: [], forwardIdentity: {} }
  const { base: protectedBase } = await listen(t, { security: { auth } })
  t.equal((await fetch(`${protectedBase}/docs/json`)).status, 401)
  t.equal((await fetch(`${protectedBase}/docs/json`, { headers: { 'x-api-key': CI_KEY } })).status, 200)
  t.equal((await fetch(`${protectedBase}/health`)).status, 200)

  const { base: openBase } = await listen(t, { security: { auth: { ...auth, mode: 'none' } } })
  const open = await fetch(`${openBase}/math/tools/add`, { method: 'POST', headers: json, body: '{"a":2,"b":3}' })
  t.equal(open.status, 200)
  t.equal(open.headers.get('www-authenticate'), null)
  t.equal((await fetch(`${openBase}/.well-known/oauth-protected-resource/math/mcp`)).status, 404, 'no metadata: nothing is protected')
})

t.test('the command refuses to listen beyond loopback without authentication', async t => {
  const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', entry, '--host', '0.0.0.0', '--port', '0'], { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  const [code] = await once(child, 'exit')
  t.equal(code, 2)
  t.equal(output.trim().split('\n').length, 1, 'one line')
  t.match(output, /^fastify-mcp-gateway: refusing to listen on 0\.0\.0\.0 without authentication: add "gateway": \{ "auth": .*"mode": "none".*--no-auth/)
})
