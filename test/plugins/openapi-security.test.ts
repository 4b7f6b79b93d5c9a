import t, { type Test } from 'tap'
import SwaggerParser from '@apidevtools/swagger-parser'
import { McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import { listen } from '../helper.js'
import { builtinEntries } from '../../src/app.js'
import type { SecurityOptions } from '../../src/security.js'

const ISSUER = 'https://issuer.example.com'
// Never fetched: nothing in these tests presents a token.
const JWKS_URI = 'http://127.0.0.1:9/jwks.json'

const jwtAuth = (apiKeys: NonNullable<SecurityOptions['auth']>['apiKeys'] = []): SecurityOptions['auth'] => ({
  mode: 'required',
  apiKeys,
  jwt: { issuer: ISSUER, jwksUri: JWKS_URI, audience: ['gateway'], algorithms: ['RS256'], clockToleranceSec: 30 },
  protectDocs: false,
  authorizationServers: [ISSUER],
  forwardIdentity: {}
})
const KEY = { id: 'ci', sha256: 'a'.repeat(64), scopes: [] }
const RATE_LIMIT = { max: 100, timeWindow: 60_000, servers: {} }

/** A server with a prompt and a resource, so their routes are in the document. */
function createNotesServer (options?: ServerOptions): McpServer {
  const server = new McpServer({ name: 'notes', version: '1.0.0' }, options)
  server.registerPrompt('hello', { description: 'A prompt' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }] }))
  server.registerResource('doc', 'probe://doc', { mimeType: 'text/plain' }, async uri => ({ contents: [{ uri: uri.href, text: 'doc' }] }))
  return server
}

/** The OpenAPI document as Swagger UI fetches it, over HTTP. */
async function documentOf (t: Test, security: SecurityOptions): Promise<Record<string, any>> {
  const { base } = await listen(t, { servers: [...builtinEntries(), { name: 'notes', factory: createNotesServer }], security })
  const res = await fetch(`${base}/docs/json`)
  t.equal(res.status, 200)
  const document = await res.json() as Record<string, any>
  await t.resolves(SwaggerParser.validate(structuredClone(document) as unknown as Parameters<typeof SwaggerParser.validate>[0]), 'swagger-parser accepts the document')
  return document
}

/** The tool, prompt and resource operations, which the security settings guard. */
const guarded = (document: Record<string, any>): Array<[string, Record<string, any>]> => [
  ['/greet/tools/echoHai', document.paths['/greet/tools/echoHai'].post],
  ['/greet/tools', document.paths['/greet/tools'].get],
  ...Object.entries(document.paths as Record<string, Record<string, any>>)
    .filter(([path]) => /^\/[^/]+\/(prompts|resources)/.test(path))
    .flatMap(([path, item]) => Object.values(item).map(operation => [path, operation] as [string, Record<string, any>]))
]

t.test('with JWTs and API keys: both schemes, a global requirement of either, public probes', async t => {
  const document = await documentOf(t, { auth: jwtAuth([KEY]) })
  t.same(document.components.securitySchemes, {
    bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: `A JWT access token from ${ISSUER}, or an API key` },
    apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'An API key' }
  })
  t.same(document.security, [{ bearerAuth: [] }, { apiKey: [] }], 'either credential will do')
  for (const path of ['/health', '/ready', '/ready/{server}']) {
    t.same(document.paths[path].get.security, [], `${path} needs no credentials`)
  }
  t.equal(document.paths['/greet/tools/echoHai'].post.security, undefined, 'a tool operation has the global requirement')
})

t.test('with API keys only: bearer without the JWT format, and X-API-Key', async t => {
  const document = await documentOf(t, { auth: { mode: 'required', apiKeys: [KEY], protectDocs: false, authorizationServers: [], forwardIdentity: {} } })
  t.same(Object.keys(document.components.securitySchemes).sort(), ['apiKey', 'bearerAuth'])
  t.equal(document.components.securitySchemes.bearerAuth.bearerFormat, undefined)
})

t.test('with authentication and rate limits, every tool, prompt and resource operation documents 401 and 403, and every call 429', async t => {
  const document = await documentOf(t, { auth: jwtAuth(), rateLimit: RATE_LIMIT })
  const operations = guarded(document)
  t.same(operations.map(([path]) => path).sort(), ['/greet/tools', '/greet/tools/echoHai', '/notes/prompts', '/notes/prompts/hello', '/notes/prompts/{prompt}', '/notes/resources', '/notes/resources/read'])
  // Lists pass no admission filter: only calls can be rate limited.
  const calls = new Set(['/greet/tools/echoHai', '/notes/prompts/hello', '/notes/prompts/{prompt}', '/notes/resources/read'])
  for (const [path, operation] of operations) {
    t.match(operation.responses['401'], { description: /GW_ERR_UNAUTHENTICATED/, headers: { 'WWW-Authenticate': { schema: { type: 'string' } } } }, `${path}: 401`)
    // These servers require no scopes, so no insufficient_scope: the Host and Origin check's 403 stays.
    t.match(operation.responses['403'], { description: /GW_ERR_FORBIDDEN_ORIGIN/ }, `${path}: 403`)
    if (calls.has(path)) t.match(operation.responses['429'], { description: /GW_ERR_RATE_LIMITED/, headers: { 'Retry-After': { schema: { type: 'integer' } } } }, `${path}: 429`)
    else t.notOk(operation.responses['429'], `${path}: no 429`)
    t.match(operation.responses['401'].content['application/json'].schema.allOf, [{ $ref: /^#\/components\/schemas\// }], `${path}: the catalogue's body`)
  }
  t.notOk(document.paths['/health'].get.responses['401'])
})

t.test('without authentication or rate limits: no schemes, no requirement, no 401, 403 or 429', async t => {
  const document = await documentOf(t, {})
  t.equal(document.components.securitySchemes, undefined)
  t.equal(document.security, undefined)
  for (const [path, operation] of guarded(document)) {
    t.notOk(operation.responses['401'], `${path}: no 401`)
    t.notOk(operation.responses['429'], `${path}: no 429`)
    t.notMatch(operation.responses['403'].description, /GW_ERR_INSUFFICIENT_SCOPE/, `${path}: a 403 only for the Host and Origin check`)
  }
  const open = await documentOf(t, { auth: { ...jwtAuth([KEY]), mode: 'none' } as SecurityOptions['auth'] })
  t.equal(open.components.securitySchemes, undefined, 'mode none is no authentication')
})
