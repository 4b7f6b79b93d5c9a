import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import SwaggerParser from '@apidevtools/swagger-parser'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { fromJsonSchema, McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'
import core from '../../plugins/core.js'
import mcpServer from '../../plugins/mcp-server.js'
import { builtinEntries } from '../../src/app.js'
import type { ServerFactory } from '../../src/connections/connection.js'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import * as errors from '../../src/errors.js'
import type { CallFilter } from '../../src/pipeline/pipeline.js'
import type { SecurityOptions } from '../../src/security.js'
import { builtinServers } from '../../servers/index.js'
import { build, json } from '../helper.js'
import { createFailingServer } from '../fixtures/servers.js'

// The OpenAPI document as a user reads it in Swagger UI or ReDoc: examples built from each
// tool, the error bodies each status really carries (checked against real answers), one
// operation per prompt with string arguments checked as strings, a 404 for an unknown
// resource (in process and from a stdio upstream), 405 with `Allow` on every REST URL, the
// probes described, disabled servers in `/ready`, and the favicon.

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020
const notesFixture = fileURLToPath(new URL('../fixtures/stdio-notes-server.mjs', import.meta.url))

type Doc = Record<string, any>

/** A book catalogue: a tool whose output schema has every kind of field, prompts, a resource. */
function createCatalogServer (options?: ServerOptions): McpServer {
  const server = new McpServer({ name: 'catalog', version: '1.0.0' }, options)
  server.registerTool('find', {
    description: 'Find books',
    inputSchema: z.object({ query: z.string().min(3), limit: z.number().int().min(1).max(50).optional() }),
    outputSchema: fromJsonSchema<Record<string, unknown>>({
      type: 'object',
      required: ['books', 'total'],
      properties: {
        books: { type: 'array', minItems: 1, items: { $ref: '#/$defs/Book' } },
        total: { type: 'integer', minimum: 0 },
        sort: { type: 'string', enum: ['title', 'year'] },
        next: { anyOf: [{ type: 'string', format: 'uri' }, { type: 'null' }] },
        tags: { type: 'object', additionalProperties: { type: 'string' } }
      },
      $defs: {
        Book: {
          type: 'object',
          required: ['title', 'year', 'isbn'],
          properties: {
            title: { type: 'string', examples: ['Middlemarch'] },
            year: { type: 'integer', minimum: 1450 },
            isbn: { type: 'string', minLength: 10, maxLength: 13 },
            published: { type: 'string', format: 'date' },
            inPrint: { type: 'boolean', default: false }
          }
        }
      }
    })
  }, async () => {
    const found = { books: [{ title: 'Dune', year: 1965, isbn: '0441013597' }], total: 1 }
    return { content: [{ type: 'text', text: JSON.stringify(found) }], structuredContent: found }
  })
  for (const name of ['review', 'review:short']) {
    server.registerPrompt(name, {
      description: 'Review a book',
      argsSchema: z.object({ title: z.string().describe('The book\'s title'), stars: z.string().optional() })
    }, async ({ title }) => ({ messages: [{ role: 'user', content: { type: 'text', text: `Review ${title}` } }] }))
  }
  server.registerResource('about', 'catalog://about', { description: 'What the catalogue holds', mimeType: 'text/plain' }, async uri => ({
    contents: [{ uri: uri.href, text: 'Books.' }]
  }))
  return server
}

const notesUpstream = (): UpstreamConnection => new UpstreamConnection('notes', {
  transport: { kind: 'stdio', command: process.execPath, args: [notesFixture], env: {} }
})

async function documentOf (t: Test, app: FastifyInstance): Promise<Doc> {
  const res = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(res.statusCode, 200)
  const document = res.json() as Doc
  await t.resolves(SwaggerParser.validate(structuredClone(document) as unknown as Parameters<typeof SwaggerParser.validate>[0]), 'swagger-parser accepts the document')
  return document
}

/** The named examples of one response, by name. */
function examplesOf (operation: Doc, status: number | string): Record<string, any> {
  const media = operation.responses[String(status)]?.content?.['application/json']
  return Object.fromEntries(Object.entries(media?.examples ?? {}).map(([name, example]) => [name, (example as { value: unknown }).value]))
}

/** Every `GW_ERR_*` code the catalogue defines, as the README's table test finds them. */
function catalogueCodes (): Set<string> {
  const codes = new Set<string>([errors.TOOL_ERROR_CODE])
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function') continue
    try {
      const code = (new (value as new (...args: unknown[]) => { code?: unknown })('x', 'y', 1)).code
      if (typeof code === 'string' && code.startsWith('GW_ERR_')) codes.add(code)
    } catch {}
  }
  return codes
}

const { app, document } = await (async () => {
  const app = await build(t, {
    servers: [
      ...builtinEntries(),
      { name: 'catalog', factory: createCatalogServer },
      { name: 'notes', connection: notesUpstream() },
      { name: 'db', factory: createFailingServer }
    ]
  })
  return { app, document: await documentOf(t, app) }
})()
const paths = document.paths as Record<string, Record<string, Doc>>

t.test('each tool documents a 200 example built from the tool: its outputSchema, or a text result', async t => {
  const ajv = addFormats(new Ajv2020({ strict: false }))
  const listed = (await app.inject({ method: 'GET', url: '/catalog/tools' })).json().tools as Array<{ name: string, inputSchema: object, outputSchema: object }>
  const find = listed.find(tool => tool.name === 'find') as { inputSchema: object, outputSchema: object }
  const operation = paths['/catalog/tools/find'].post
  const { result } = examplesOf(operation, 200)
  t.equal(result.isError, false)
  t.ok(ajv.validate(find.outputSchema, result.structuredContent), `the example fits the outputSchema: ${ajv.errorsText()}`)
  t.match(result.structuredContent, {
    books: [{ title: 'Middlemarch', year: 1450, isbn: 'stringxxxx', published: '2025-06-18', inPrint: false }],
    total: 0,
    sort: 'title',
    next: 'https://example.com/',
    tags: {}
  }, "the schema's own examples, defaults, enums and bounds; an open map is {}")
  t.same(JSON.parse(result.content[0].text), result.structuredContent, 'the text block carries the same JSON, as the MCP spec asks')
  const body = operation.requestBody.content['application/json'].example
  t.ok(ajv.validate(find.inputSchema, body), 'the request example passes the route\'s own validation')
  t.equal((await app.inject({ method: 'POST', url: '/catalog/tools/find', headers: json, payload: body })).statusCode, 200, 'and the tool takes it')

  t.same(examplesOf(paths['/math/tools/add'].post, 200).result, { content: [{ type: 'text', text: '{"sum":0}' }], structuredContent: { sum: 0 }, isError: false })
  const hai = examplesOf(paths['/greet/tools/echoHai'].post, 200).result
  t.same(Object.keys(hai).sort(), ['content', 'isError'], 'no outputSchema: a text result, no structuredContent')
  t.match(hai, { content: [{ type: 'text', text: String }], isError: false })
  t.same(examplesOf(paths['/math/tools/add'].post, 422).toolError, { content: [{ type: 'text', text: 'What went wrong, in the tool\'s words' }], isError: true, code: 'GW_ERR_TOOL_ERROR' })
})

t.test('every documented error status lists the codes it can carry, each example a real body of that status', async t => {
  const catalogue = catalogueCodes()
  let statuses = 0
  for (const [path, item] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(item)) {
      for (const [status, response] of Object.entries(operation.responses as Record<string, Doc>)) {
        const code = Number(status)
        // A tool's own error (422) is its result; the probes' 503 is their readiness body.
        if (code < 400 || code === 422 || (path.startsWith('/ready') && code === 503)) continue
        statuses++
        const where = `${method.toUpperCase()} ${path} ${status}`
        t.not(response.description, 'Default Response', `${where}: described`)
        const schema = response.content['application/json'].schema
        t.same(schema.allOf[0], { $ref: '#/components/schemas/GatewayError' }, `${where}: the error body component`)
        t.same(schema.allOf[1].properties.statusCode.enum, [code], `${where}: statusCode is the status`)
        const codes = schema.allOf[1].properties.code.enum as string[]
        t.same(codes.filter(documented => !catalogue.has(documented)), [], `${where}: codes from the catalogue`)
        const examples = examplesOf(operation, status)
        t.same(Object.keys(examples).sort(), [...codes].sort(), `${where}: one example per code`)
        for (const [name, body] of Object.entries(examples)) {
          t.match(body, { statusCode: code, code: name, error: String, message: /\S/ }, `${where} ${name}`)
          t.notMatch(body.message, /%s|%d/, `${where} ${name}: a message with its values in`)
        }
      }
    }
  }
  t.ok(statuses > 40, `${statuses} error statuses checked`)
  t.match(paths['/math/tools/add'].post.responses['503'], { description: /GW_ERR_SERVER_UNAVAILABLE[\s\S]*GW_ERR_SHUTTING_DOWN/, headers: { 'Retry-After': { schema: { type: 'integer' } } } })
  t.same(Object.keys(paths['/math/tools/add'].post.responses).sort(), ['200', '400', '403', '404', '413', '415', '422', '502', '503', '504'],
    'no 401 or 429 without authentication or rate limits')
})

t.test('the documented error examples are what the gateway answers', async t => {
  const real = async (method: 'GET' | 'POST', url: string, payload?: unknown, headers: Record<string, string> = json): Promise<{ statusCode: number, body: unknown }> => {
    const res = await app.inject({ method, url, headers, ...(payload !== undefined && { payload: payload as string }) })
    return { statusCode: res.statusCode, body: res.json() }
  }
  const add = paths['/math/tools/add'].post
  t.same(await real('POST', '/math/tools/add', {}), { statusCode: 400, body: examplesOf(add, 400).GW_ERR_INVALID_ARGUMENTS }, 'the first missing argument')
  t.same(await real('POST', '/math/tools/add', '{"a":'), { statusCode: 400, body: examplesOf(add, 400).GW_ERR_INVALID_JSON })
  t.same(await real('POST', '/math/tools/add', 'a=1', { 'content-type': 'text/plain' }), { statusCode: 415, body: examplesOf(add, 415).GW_ERR_UNSUPPORTED_MEDIA_TYPE })
  t.same(await real('POST', '/math/tools/add', { a: 1, b: 2 }, { ...json, host: 'evil.example' }), { statusCode: 403, body: examplesOf(add, 403).GW_ERR_FORBIDDEN_ORIGIN })
  const review = paths['/catalog/prompts/review'].post
  t.same(await real('POST', '/catalog/prompts/review', { title: 5 }), { statusCode: 400, body: examplesOf(review, 400).GW_ERR_INVALID_ARGUMENTS }, 'a number where a prompt takes a string')
  const read = paths['/catalog/resources/read'].get
  t.same(await real('GET', '/catalog/resources/read?uri=catalog%3A%2F%2Fnowhere'), { statusCode: 404, body: examplesOf(read, 404).GW_ERR_RESOURCE_NOT_FOUND })
  const down = paths['/db/prompts'].get
  t.same(await real('GET', '/db/prompts'), { statusCode: 503, body: examplesOf(down, 503).GW_ERR_SERVER_UNAVAILABLE }, 'a server down at start')
  t.match(down.responses['404'].description, /GW_ERR_NOT_SUPPORTED/, 'down at start: it may come back without prompts')

  // A tool the caller may not see answers as an unknown one: the documented 404.
  const deny: CallFilter = { name: 'deny', allows: call => call.name !== 'add' }
  const denied = await build(t, { servers: builtinEntries(), filters: [deny] })
  const res = await denied.inject({ method: 'POST', url: '/math/tools/add', headers: json, payload: { a: 1, b: 2 } })
  t.same({ statusCode: res.statusCode, body: res.json() }, { statusCode: 404, body: examplesOf(add, 404).GW_ERR_TOOL_NOT_FOUND })
  const small = await build(t, { servers: builtinEntries(), defaults: { bodyLimit: 64 } })
  const smallDoc = (await small.inject({ method: 'GET', url: '/docs/json' })).json() as Doc
  const big = await small.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'x'.repeat(100) } })
  t.same(big.json(), examplesOf(smallDoc.paths['/greet/tools/echoHai'].post, 413).GW_ERR_BODY_TOO_LARGE, 'the configured limit in the message')
})

t.test('with authentication, scopes and rate limits: 400, 401, 403 and 429 with their codes; 429 only where calls count', async t => {
  const security: SecurityOptions = {
    auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: 'a'.repeat(64), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} },
    rateLimit: { max: 100, timeWindow: 60_000, servers: {} }
  }
  const secured = await build(t, { servers: [...builtinEntries(), { name: 'catalog', factory: createCatalogServer, scopes: ['books:read'] }], security })
  const doc = await documentOf(t, secured)
  const find = doc.paths['/catalog/tools/find'].post
  t.same(find.responses['401'].content['application/json'].schema.allOf[1].properties.code.enum, ['GW_ERR_UNAUTHENTICATED'])
  t.match(find.responses['401'].headers, { 'WWW-Authenticate': { schema: { type: 'string' } } })
  t.same(find.responses['403'].content['application/json'].schema.allOf[1].properties.code.enum, ['GW_ERR_FORBIDDEN_ORIGIN', 'GW_ERR_INSUFFICIENT_SCOPE'])
  t.match(examplesOf(find, 403).GW_ERR_INSUFFICIENT_SCOPE, { statusCode: 403, message: 'Insufficient scope: this server needs the scopes books:read' })
  t.ok(find.responses['403'].headers['WWW-Authenticate'])
  t.match(examplesOf(find, 400), { GW_ERR_INVALID_AUTH_REQUEST: { statusCode: 400 } })
  t.same(examplesOf(find, 429).GW_ERR_RATE_LIMITED, { statusCode: 429, code: 'GW_ERR_RATE_LIMITED', error: 'Too Many Requests', message: 'Rate limit of 100 calls per 60000 ms on the gateway exceeded: retry in 60 s' })
  t.match(find.responses['429'].headers, { 'Retry-After': { schema: { type: 'integer' } }, 'RateLimit-Remaining': { schema: { type: 'integer' } } })
  t.match(examplesOf(find, 500), { GW_ERR_INTERNAL: { statusCode: 500, message: 'Internal server error' } }, 'the rate-limit store can fail')
  t.notOk(doc.paths['/catalog/prompts'].get.responses['429'], 'lists are not rate limited')
  t.notOk(doc.paths['/catalog/tools'].get.responses['429'])
  t.ok(doc.paths['/catalog/prompts/review'].post.responses['429'])
  const echo = doc.paths['/greet/tools/echoHai'].post
  t.same(echo.responses['403'].content['application/json'].schema.allOf[1].properties.code.enum, ['GW_ERR_FORBIDDEN_ORIGIN'], 'a server without scopes has no insufficient_scope')
  t.notOk(echo.responses['403'].headers)
  const refused = await secured.inject({ method: 'POST', url: '/greet/tools/echoHai', headers: json, payload: { userName: 'Ada' } })
  t.same({ statusCode: refused.statusCode, body: refused.json() }, { statusCode: 401, body: examplesOf(echo, 401).GW_ERR_UNAUTHENTICATED }, 'the documented 401 is the real one')
})

t.test('each prompt is an operation of its own, its arguments strings, checked as strings', async t => {
  const review = paths['/catalog/prompts/review'].post
  t.equal(review.operationId, 'catalog__prompt__review')
  t.equal(review.summary, 'Review a book')
  t.match(review.requestBody.content['application/json'].schema, {
    type: 'object',
    required: ['title'],
    properties: { title: { type: 'string', description: 'The book\'s title' }, stars: { type: 'string' } }
  })
  t.same(review.requestBody.content['application/json'].example, { title: 'string', stars: 'string' }, 'no additionalProp1')
  t.ok(paths['/catalog/prompts/{prompt}'].post, 'the generic operation, for prompts added later or with names that are not path segments')
  t.notOk(paths['/catalog/prompts/review:short'], 'a name that is not a path segment has no route of its own')
  t.ok(paths['/notes/prompts/summarize'].post, 'a stdio upstream\'s prompt too')

  const post = async (url: string, payload: unknown): Promise<{ statusCode: number, body: any }> => {
    const res = await app.inject({ method: 'POST', url, headers: json, payload: payload as Record<string, unknown> })
    return { statusCode: res.statusCode, body: res.json() }
  }
  t.match(await post('/catalog/prompts/review', { title: 'Dune' }), { statusCode: 200, body: { messages: [{ role: 'user', content: { text: 'Review Dune' } }] } })
  for (const url of ['/catalog/prompts/review', '/catalog/prompts/review%3Ashort', '/notes/prompts/summarize']) {
    const field = url.startsWith('/notes') ? 'id' : 'title'
    t.match(await post(url, { [field]: 5 }), { statusCode: 400, body: { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field, message: 'must be string' }] } }, `${url}: a number is refused`)
    t.match(await post(url, { [field]: 'x', extra: true }), { statusCode: 400, body: { details: [{ field: 'extra', message: 'must be string' }] } }, `${url}: an undeclared argument is a string too`)
    t.match(await post(url, {}), { statusCode: 400, body: { code: 'GW_ERR_INVALID_ARGUMENTS', details: [{ field }] } }, `${url}: a required argument missing`)
  }
  t.match(await post('/notes/prompts/summarize', { id: '7' }), { statusCode: 200, body: { messages: [{ content: { text: 'Summarize note 7' } }] } })
  t.match(await post('/catalog/prompts/nope', {}), { statusCode: 404, body: { code: 'GW_ERR_PROMPT_NOT_FOUND' } })
})

t.test('an unknown resource URI is a 404 GW_ERR_RESOURCE_NOT_FOUND, in process and from a stdio upstream', async t => {
  const read = async (server: string, uri: string): Promise<{ statusCode: number, body: any }> => {
    const res = await app.inject({ method: 'GET', url: `/${server}/resources/read?uri=${encodeURIComponent(uri)}` })
    return { statusCode: res.statusCode, body: res.json() }
  }
  t.same(await read('catalog', 'catalog://missing'), { statusCode: 404, body: { statusCode: 404, code: 'GW_ERR_RESOURCE_NOT_FOUND', error: 'Not Found', message: "Resource 'catalog://missing' not found on server 'catalog'" } })
  t.match(await read('catalog', 'catalog://about'), { statusCode: 200, body: { contents: [{ uri: 'catalog://about', text: 'Books.' }] } })
  for (const uri of ['notes://missing', 'other://x', 'notes://gone']) {
    t.same(await read('notes', uri), { statusCode: 404, body: { statusCode: 404, code: 'GW_ERR_RESOURCE_NOT_FOUND', error: 'Not Found', message: `Resource '${uri}' not found on server 'notes'` } }, `stdio upstream: ${uri}`)
  }
  t.match(await read('notes', 'notes://first'), { statusCode: 200, body: { contents: [{ text: 'The first note.' }] } })
  t.match(await read('notes', 'notes://bad'), { statusCode: 400, body: { code: 'GW_ERR_UPSTREAM_REJECTED', message: /lower-case/ } }, 'a refusal that is not "not found" stays a 400')

  const operation = paths['/notes/resources/read'].get
  t.match(operation.parameters, [{ name: 'uri', in: 'query', required: true, example: 'notes://readme' }], 'the listed URIs are the examples of uri')
  t.match(operation.description, /`notes:\/\/readme`: readme \(text\/plain\)\. How notes work/)
  t.match(operation.description, /`notes:\/\/\{id\}` \(template\): note/)
})

t.test('any other method on a tool, prompt or resource URL is a 405 naming the one it takes', async t => {
  const cases: Array<[string, string, string]> = [
    ['GET', '/math/tools/add', 'POST'],
    ['DELETE', '/math/tools/add', 'POST'],
    ['GET', '/math/tools/anything', 'POST'],
    ['PUT', '/math/tools', 'GET'],
    ['GET', '/catalog/prompts/review', 'POST'],
    ['PATCH', '/catalog/prompts', 'GET'],
    ['POST', '/catalog/resources/read?uri=catalog%3A%2F%2Fabout', 'GET'],
    ['DELETE', '/catalog/resources', 'GET']
  ]
  for (const [method, url, allow] of cases) {
    const res = await app.inject({ method: method as 'GET', url, headers: json, payload: method === 'GET' ? undefined : '{"not json' })
    t.equal(res.statusCode, 405, `${method} ${url}`)
    t.equal(res.headers.allow, allow)
    t.same(res.json(), { statusCode: 405, code: 'GW_ERR_METHOD_NOT_ALLOWED', error: 'Method Not Allowed', message: `Method ${method} is not allowed on ${url.split('?')[0]}: use ${allow}` }, 'before the body is read')
  }
  const head = await app.inject({ method: 'HEAD', url: '/math/tools/add' })
  t.equal(head.statusCode, 405)
  t.equal(head.headers.allow, 'POST')
  t.equal((await app.inject({ method: 'GET', url: '/nope/tools/add' })).json().code, 'GW_ERR_SERVER_NOT_FOUND', 'an unknown server is still a 404')
})

t.test('/health and /ready are described with their schemas and examples; the error body is one component', async t => {
  t.match(document.components.schemas.GatewayError, { type: 'object', description: /every error/, required: ['statusCode', 'code', 'error', 'message'] })
  t.match(document.components.schemas.ServerReadiness.properties.state.enum, ['starting', 'up', 'down', 'closed', 'disabled'])
  const health = paths['/health'].get
  t.equal(health.responses['200'].description, 'The process serves HTTP')
  t.same(examplesOf(health, 200), { ok: { status: 'ok' } })
  const ready = paths['/ready'].get
  t.same(Object.keys(examplesOf(ready, 200)), ['ready', 'degraded', 'redisDown'])
  t.same(Object.keys(examplesOf(ready, 503)), ['unavailable', 'draining'])
  t.same(ready.responses['200'].content['application/json'].schema.allOf, [{ $ref: '#/components/schemas/Readiness' }])
  const one = paths['/ready/{server}'].get
  t.same(Object.keys(one.responses).sort(), ['200', '404', '503'])
  t.same(Object.keys(examplesOf(one, 503)), ['down', 'disabled'])
  const unknown = await app.inject({ method: 'GET', url: '/ready/nobody' })
  t.same(unknown.json(), examplesOf(one, 404).GW_ERR_SERVER_NOT_FOUND)
  for (const [path, item] of Object.entries(paths)) {
    if (path === '/status.json') continue
    for (const [method, operation] of Object.entries(item)) {
      for (const [status, response] of Object.entries(operation.responses as Record<string, Doc>)) {
        t.not(response.description, 'Default Response', `${method.toUpperCase()} ${path} ${status}`)
      }
    }
  }
})

t.test('servers disabled in the config are listed in /ready as disabled and never make the gateway unready', async t => {
  const gatewayWith = async (servers: Array<{ name: string, factory: ServerFactory, required?: boolean }>): Promise<FastifyInstance> => {
    const own = Fastify({ logger: false })
    await own.register(core, { disabled: ['legacy', 'old'] })
    for (const server of servers) await own.register(mcpServer, { ...server, prefix: `/${server.name}` })
    t.teardown(() => own.close())
    await own.ready()
    return own
  }
  const healthy = await gatewayWith([{ name: 'math', factory: builtinServers.math }])
  const ready = await healthy.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', servers: [{ name: 'math', state: 'up', tools: 1 }, { name: 'legacy', state: 'disabled', tools: 0 }, { name: 'old', state: 'disabled', tools: 0 }] })
  const probe = await healthy.inject({ method: 'GET', url: '/ready/legacy' })
  t.equal(probe.statusCode, 503, 'a load balancer routing to its prefix finds nothing there')
  t.same(probe.json(), { name: 'legacy', state: 'disabled', tools: 0 })

  const degraded = await gatewayWith([{ name: 'math', factory: builtinServers.math, required: true }, { name: 'db', factory: createFailingServer }])
  t.match((await degraded.inject({ method: 'GET', url: '/ready' })).json(), { status: 'degraded', servers: [{ name: 'math' }, { name: 'db', state: 'down' }, { name: 'legacy', state: 'disabled' }, { name: 'old', state: 'disabled' }] })

  const bad = Fastify({ logger: false })
  t.teardown(() => bad.close())
  await t.rejects(async () => { await bad.register(core, { disabled: [5] as unknown as string[] }) }, { code: 'GW_ERR_INVALID_OPTIONS' })
})

t.test('a favicon at /favicon.ico (and SVG), used by Swagger UI and ReDoc, public when authentication is on', async t => {
  const ico = await app.inject({ method: 'GET', url: '/favicon.ico' })
  t.equal(ico.statusCode, 200)
  t.equal(ico.headers['content-type'], 'image/x-icon')
  t.same([...ico.rawPayload.subarray(0, 4)], [0, 0, 1, 0], 'an ICO file')
  const svg = await app.inject({ method: 'GET', url: '/favicon.svg' })
  t.equal(svg.statusCode, 200)
  t.equal(svg.headers['content-type'], 'image/svg+xml')
  t.match(svg.body, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)

  const redoc = await app.inject({ method: 'GET', url: '/redoc' })
  t.match(redoc.body, '<link rel="icon" href="/favicon.svg" type="image/svg+xml">')
  t.match(redoc.headers['content-security-policy'], /img-src 'self' data:/)
  const docs = (await app.inject({ method: 'GET', url: '/docs/' })).body
  const icon = /<link rel="icon" type="image\/svg\+xml" href="\.([^"]+)"/.exec(docs)?.[1]
  t.ok(icon, 'Swagger UI links the SVG icon')
  const served = await app.inject({ method: 'GET', url: `/docs${icon}` })
  t.equal(served.statusCode, 200)
  t.equal(served.body, svg.body)

  const secured = await build(t, { servers: builtinEntries(), security: { auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: 'a'.repeat(64), scopes: [] }], protectDocs: true, authorizationServers: [], forwardIdentity: {} } } })
  t.equal((await secured.inject({ method: 'GET', url: '/favicon.ico' })).statusCode, 200, 'no credentials needed for an icon')
  t.equal((await secured.inject({ method: 'GET', url: '/docs/json' })).statusCode, 401, 'while the docs stay protected')
})
