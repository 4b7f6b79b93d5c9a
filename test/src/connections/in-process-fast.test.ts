import { createHash } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import t, { type Test } from 'tap'
import { inputRequired, McpServer, Server, UrlElicitationRequiredError, type AuthInfo, type RegisteredTool, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { directTools } from '../../../src/connections/direct-call.js'
import { InProcessConnection } from '../../../src/connections/in-process.js'
import type { CallContext, Downstream, McpMessage } from '../../../src/connections/connection.js'
import { CallPipeline } from '../../../src/pipeline/pipeline.js'
import { build, json } from '../../helper.js'

// The fast path of REST tool calls (`callValidated`): the same answers as `callTool`, over the
// connection, for every kind of tool and failure, without the connection's round trip.

/** What the fixtures' tools report, so a test awaits them rather than sleeping. */
const events = new EventEmitter()

const ask = { mode: 'form' as const, message: 'Your name?', requestedSchema: { type: 'object' as const, properties: { name: { type: 'string' as const } } } }

/** Tools of every kind the SDK's `tools/call` treats differently. */
function createFastServer (options?: ServerOptions, logging = true): McpServer {
  const server = new McpServer({ name: 'fast', version: '1.0.0' }, { ...options, ...(logging && { capabilities: { logging: {} } }) })
  server.registerTool('echo', { inputSchema: z.object({ text: z.string() }) }, async ({ text }) => ({ content: [{ type: 'text', text }] }))
  server.registerTool('shaped', {
    inputSchema: z.object({ word: z.string().transform(word => word.toUpperCase()), times: z.number().default(2) })
  }, async ({ word, times }) => ({ content: [{ type: 'text', text: word.repeat(times) }] }))
  server.registerTool('even', {
    inputSchema: z.object({ n: z.number().refine(n => n % 2 === 0, 'must be even') })
  }, async ({ n }) => ({ content: [{ type: 'text', text: String(n) }] }))
  const sum = z.object({ sum: z.number() })
  server.registerTool('sum', { inputSchema: z.object({ a: z.number(), b: z.number() }), outputSchema: sum }, async ({ a, b }) => ({
    content: [{ type: 'text', text: String(a + b) }],
    structuredContent: { sum: a + b }
  }))
  server.registerTool('wrongOutput', { outputSchema: sum }, async () => ({ content: [], structuredContent: { sum: 'many' } }))
  server.registerTool('noOutput', { outputSchema: sum }, async () => ({ content: [{ type: 'text', text: 'forgot it' }] }))
  server.registerTool('listOutput', { outputSchema: z.array(z.number()) }, async () => ({ content: [], structuredContent: [1, 2] as unknown as Record<string, unknown> }))
  server.registerTool('noContent', {}, async () => ({ structuredContent: { only: true } }) as never)
  server.registerTool('extraKeys', {}, async () => ({ content: [{ type: 'text', text: 'x', extra: 1 } as never], extra: 'kept' }))
  server.registerTool('badResult', {}, async () => ({ content: 'not a list' }) as never)
  server.registerTool('throws', {}, async () => { throw new Error('boom') })
  server.registerTool('urlElicit', {}, async () => {
    throw new UrlElicitationRequiredError([{ mode: 'url', message: 'Sign in', url: 'https://example.com/login', elicitationId: 'e1' }])
  })
  server.registerTool('whoami', {}, async ctx => ({
    content: [{ type: 'text', text: 'me' }],
    structuredContent: { authInfo: ctx.http?.authInfo ?? null, meta: ctx.mcpReq._meta ?? null, direct: Number(ctx.mcpReq.id) < 0 }
  }))
  server.registerTool('asks', {}, async ctx => {
    const refusals: string[] = []
    for (const question of [
      async () => await ctx.mcpReq.elicitInput(ask),
      async () => await ctx.mcpReq.requestSampling({ messages: [], maxTokens: 1 }),
      async () => await ctx.mcpReq.send({ method: 'roots/list' })
    ]) {
      await question().then(() => { refusals.push('answered') }, (err: { name: string, code: number, message: string }) => { refusals.push(`${err.name} ${err.code} ${err.message}`) })
    }
    return { content: refusals.map(text => ({ type: 'text' as const, text })) }
  })
  server.registerTool('asksUncaught', {}, async ctx => {
    await ctx.mcpReq.elicitInput(ask)
    return { content: [] }
  })
  server.registerTool('multiRound', {}, async () => inputRequired({ inputRequests: { name: inputRequired.elicit({ message: 'Your name?', requestedSchema: z.object({ name: z.string() }) }) } }))
  // Come back later: the SDK's shim on a 2025-era connection waits, then calls it again with a copy of its context.
  server.registerTool('poll', {}, async ctx => {
    if (ctx.mcpReq.requestState() === undefined) return inputRequired({ requestState: 'later' })
    return { content: [{ type: 'text', text: `again, with ${ctx.mcpReq.signal instanceof AbortSignal ? 'its' : 'no'} signal` }] }
  })
  server.registerTool('logs', {}, async ctx => {
    const outcomes: string[] = []
    for (const send of [
      async () => { await ctx.mcpReq.log('info', 'a log line') },
      async () => { await ctx.mcpReq.notify({ method: 'notifications/message', params: { level: 'info', data: 'a message' } }) },
      async () => { await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: 'nobody asked', progress: 1 } }) }
    ]) {
      await send().then(() => { outcomes.push('sent') }, (err: Error) => { outcomes.push(err.message) })
    }
    return { content: outcomes.map(text => ({ type: 'text' as const, text })) }
  })
  server.registerTool('count', { inputSchema: z.object({ label: z.string() }) }, async ({ label }, ctx) => {
    const progressToken = ctx.mcpReq._meta?.progressToken
    for (let progress = 1; progress <= 3 && progressToken !== undefined; progress++) {
      await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, progress, total: 3, message: `step ${progress}` } })
    }
    return { content: [{ type: 'text', text: `counted ${label}` }] }
  })
  server.registerTool('hold', {}, async ctx => {
    events.emit('hold:started')
    const reason = await new Promise(resolve => { ctx.mcpReq.signal.addEventListener('abort', () => { resolve(ctx.mcpReq.signal.reason) }, { once: true }) })
    events.emit('hold:aborted', reason)
    return { content: [{ type: 'text', text: 'stopped' }] }
  })
  server.registerTool('late', {}, async ctx => {
    await once(events, 'late:go')
    // Asked for only after the call ended: it says so all the same.
    events.emit('late:signal', ctx.mcpReq.signal.aborted, ctx.mcpReq.signal.reason)
    return { content: [] }
  })
  // What the tool got, after its schema: extra keys stripped, defaults applied.
  server.registerTool('args', { inputSchema: z.object({ a: z.string(), n: z.number().default(7) }) }, async args => ({ content: [{ type: 'text', text: JSON.stringify(args) }] }))
  server.registerTool('asyncCheck', {
    inputSchema: z.object({ word: z.string().refine(async word => word !== 'no', 'not that word') })
  }, async ({ word }) => ({ content: [{ type: 'text', text: word }] }))
  server.registerTool('throwsSync', {}, (() => { throw new TypeError('sync boom') }) as never)
  server.registerTool('throwsString', {}, async () => { throw 'a string' as unknown as Error })
  server.registerTool('textAndList', { outputSchema: z.array(z.number()) }, async () => ({ content: [{ type: 'text', text: 'listed' }], structuredContent: [3] as unknown as Record<string, unknown> }))
  server.registerTool('errorWithoutOutput', { outputSchema: sum }, async () => ({ content: [{ type: 'text', text: 'failed' }], isError: true }))
  server.registerTool('switchable', {}, async () => ({ content: [{ type: 'text', text: 'on' }] }))
  server.registerTool('crash', {}, async () => {
    await server.close()
    return { content: [{ type: 'text', text: 'unreachable' }] }
  })
  return server
}

/** The same tool on a low-level `Server`, which answers `tools/call` itself. */
function createLowLevelServer (options?: ServerOptions): Server {
  const server = new Server({ name: 'low', version: '1.0.0' }, { ...options, capabilities: { tools: {} } })
  server.setRequestHandler('tools/list', () => ({ tools: [{ name: 'echo', inputSchema: { type: 'object' } }] }))
  server.setRequestHandler('tools/call', request => ({ content: [{ type: 'text', text: `low ${String(request.params.arguments?.text)}` }] }))
  return server
}

async function connect (t: Test, name = 'fast', factory: (options: ServerOptions) => McpServer | Server = createFastServer): Promise<InProcessConnection> {
  const connection = new InProcessConnection(name, factory)
  await connection.start()
  t.teardown(() => connection.close())
  return connection
}

/** A call's outcome as a caller sees it: the result, or the error's kind and words. */
async function outcome (call: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    return { result: await call }
  } catch (err) {
    const { name, code, rpcCode, message, data } = err as Record<string, unknown>
    return { error: { name, code, rpcCode, message, data } }
  }
}

t.test('the SDK internals the fast path relies on are where it expects them', async t => {
  // `Protocol._getRequestHandler`, protected: the stored handler chain `callValidated` runs.
  // If an SDK upgrade moves it, calls quietly take the connection again; this test says so.
  const server = createFastServer()
  const accessor = (server.server as unknown as { _getRequestHandler?: (method: string) => unknown })._getRequestHandler
  t.type(accessor, 'function', 'Protocol._getRequestHandler exists')
  t.type(accessor?.call(server.server, 'tools/call'), 'function', "it answers McpServer's tools/call handler")

  const fast = await connect(t)
  t.equal(fast.directToolCalls, true, 'a connection over an McpServer runs tools directly')
  const who = await fast.callValidated('whoami', {})
  t.equal((who.structuredContent as { direct: boolean }).direct, true, 'the tool ran without the connection round trip')
  const over = await fast.callTool('whoami', {})
  t.equal((over.structuredContent as { direct: boolean }).direct, false, 'callTool still takes the connection')
})

t.test('answers exactly as callTool does, for every kind of tool', async t => {
  const connection = await connect(t)
  const cases: Array<[string, Record<string, unknown>]> = [
    ['echo', { text: 'hi' }],
    ['shaped', { word: 'ab' }], // zod's output reaches the tool: transformed, defaults applied
    ['even', { n: 3 }], // a refinement the JSON Schema cannot carry: the SDK still refuses
    ['sum', { a: 2, b: 3 }],
    ['wrongOutput', {}],
    ['noOutput', {}],
    ['listOutput', {}],
    ['noContent', {}],
    ['extraKeys', {}],
    ['badResult', {}],
    ['throws', {}],
    ['urlElicit', {}],
    ['asksUncaught', {}],
    ['multiRound', {}],
    ['poll', {}],
    ['logs', {}],
    ['nope', {}],
    ['args', { a: 'x', extra: true }],
    ['asyncCheck', { word: 'yes' }],
    ['asyncCheck', { word: 'no' }],
    ['throwsSync', {}],
    ['throwsString', {}],
    ['textAndList', {}],
    ['errorWithoutOutput', {}]
  ]
  for (const [tool, args] of cases) {
    t.same(await outcome(connection.callValidated(tool, args)), await outcome(connection.callTool(tool, args)), tool)
  }
  t.same(await connection.callValidated('shaped', { word: 'ab' }), { content: [{ type: 'text', text: 'ABAB' }] })
  t.same(await connection.callValidated('poll', {}), { content: [{ type: 'text', text: 'again, with its signal' }] })
  t.match(await connection.callValidated('wrongOutput', {}), { isError: true, content: [{ text: /Output validation error: Invalid structured content for tool wrongOutput/ }] })
  t.match(await outcome(connection.callValidated('badResult', {})), { error: { name: 'CallError', code: 'PROTOCOL_ERROR', rpcCode: -32602, message: /Invalid tools\/call result/ } })
  t.match(await outcome(connection.callValidated('urlElicit', {})), { error: { code: 'PROTOCOL_ERROR', rpcCode: -32042, data: { elicitations: [{ elicitationId: 'e1' }] } } })
  t.same(await connection.callValidated('args', { a: 'x', extra: true }), { content: [{ type: 'text', text: '{"a":"x","n":7}' }] }, "the tool gets its schema's output, not the raw body")
  t.match(await connection.callValidated('asyncCheck', { word: 'no' }), { isError: true, content: [{ text: 'Input validation error: Invalid arguments for tool asyncCheck: word: not that word' }] })
  t.same(await connection.callValidated('throwsSync', {}), { content: [{ type: 'text', text: 'sync boom' }], isError: true })
  t.same(await connection.callValidated('throwsString', {}), { content: [{ type: 'text', text: 'a string' }], isError: true })
})

/** A connection over `factory`, with the instance it serves, whose stored `tools/call` chain counts its calls. */
async function connectCounting (t: Test, factory: (options: ServerOptions) => McpServer = createFastServer): Promise<{ connection: InProcessConnection, instance: McpServer, chainCalls: () => number }> {
  const instances: McpServer[] = []
  const connection = await connect(t, 'counted', options => { const instance = factory(options); instances.push(instance); return instance })
  // The connection's own instance is the last one built (see `#connectionServer`).
  const instance = instances.at(-1) as McpServer
  const handlers = (instance.server as unknown as { _requestHandlers: Map<string, (...args: unknown[]) => unknown> })._requestHandlers
  const chain = handlers.get('tools/call')
  let calls = 0
  // Past the gateway's own wrapping of `set` (`interceptHandlers`): only counting is added.
  Map.prototype.set.call(handlers, 'tools/call', (...args: unknown[]) => { calls++; return chain?.(...args) })
  return { connection, instance, chainCalls: () => calls }
}

t.test("the SDK internals the direct tool call relies on are where it expects them", async t => {
  // Private or @hidden in SDK v2.4 (see direct-call.ts): should an upgrade move any, every
  // REST call takes the stored chain again, and this test fails.
  const server = createFastServer()
  const mcp = server as unknown as Record<string, unknown>
  const tools = mcp._registeredTools as Record<string, Record<string, unknown>>
  t.type(tools, 'object', 'McpServer._registeredTools')
  t.type(tools.echo?.executor, 'function', 'RegisteredTool.executor')
  t.equal(tools.echo?.enabled, true, 'RegisteredTool.enabled')
  t.equal(mcp._toolHandlersInitialized, true, 'McpServer._toolHandlersInitialized')
  t.ok('_maxToolInputElements' in mcp, 'McpServer._maxToolInputElements')
  const inner = server.server as unknown as Record<string, unknown>
  t.type(inner._invokeInputRequiredCapableHandler, 'function', 'Server._invokeInputRequiredCapableHandler')
  t.type(inner._wireCodec, 'function', 'Server._wireCodec')
  t.not(directTools(server), undefined, 'directTools accepts an McpServer')

  const { connection, instance, chainCalls } = await connectCounting(t)
  const codec = (instance.server as unknown as { _wireCodec: () => { era: unknown, validateResult: unknown } })._wireCodec()
  t.match(codec.era, /^2025-/, "the connection's wire codec, of the 2025 era")
  t.type(codec.validateResult, 'function', 'WireCodec.validateResult')
  t.same(await connection.callValidated('sum', { a: 1, b: 2 }), { content: [{ type: 'text', text: '3' }], structuredContent: { sum: 3 } })
  t.equal(chainCalls(), 0, "the tool ran without the SDK's stored chain")
  await connection.callTool('sum', { a: 1, b: 2 })
  t.equal(chainCalls(), 1, 'over the connection, the chain ran')
})

t.test('what the direct tool call cannot do exactly takes the stored chain, with the same answer', async t => {
  const { connection, instance, chainCalls } = await connectCounting(t)
  const tools = (instance as unknown as { _registeredTools: Record<string, RegisteredTool> })._registeredTools
  const both = async (name: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> => {
    const direct = await outcome(connection.callValidated(name, args))
    t.same(direct, await outcome(connection.callTool(name, args)), name)
    return direct
  }
  tools.switchable?.disable()
  t.match(await both('switchable'), { error: { code: 'PROTOCOL_ERROR', rpcCode: -32602, message: 'Tool switchable disabled' } })
  t.equal(chainCalls(), 2, 'a disabled tool: the chain answers')
  tools.switchable?.enable()
  tools.switchable?.update({ callback: async () => ({ content: [{ type: 'text', text: 'replaced' }] }) })
  t.same(await both('switchable'), { result: { content: [{ type: 'text', text: 'replaced' }] } })
  t.equal(chainCalls(), 3, 'enabled again, its new handler runs directly')
  t.match(await both('nope'), { error: { rpcCode: -32602, message: 'Tool nope not found' } })
  t.match(await both('constructor'), { error: { rpcCode: -32602 } })
  t.equal(chainCalls(), 7, 'unknown tools: the chain answers')

  // A server with an input size limit, and a subclass that may override the steps: the chain, always.
  const limited = await connectCounting(t, options => {
    const server = new McpServer({ name: 'limited', version: '1.0.0' }, { ...options, maxToolInputElements: 2 })
    server.registerTool('echo', { inputSchema: z.object({ text: z.string(), more: z.array(z.number()).optional() }) }, async ({ text }) => ({ content: [{ type: 'text', text }] }))
    return server
  })
  t.same(await limited.connection.callValidated('echo', { text: 'hi' }), { content: [{ type: 'text', text: 'hi' }] })
  t.match(await limited.connection.callValidated('echo', { text: 'hi', more: [1, 2, 3] }), { isError: true, content: [{ text: /more than the maximum of 2 elements/ }] })
  t.equal(limited.chainCalls(), 2)
  class Custom extends McpServer {}
  const custom = await connectCounting(t, options => {
    const server = new Custom({ name: 'custom', version: '1.0.0' }, options)
    server.registerTool('echo', {}, async () => ({ content: [{ type: 'text', text: 'custom' }] }))
    return server
  })
  t.same(await custom.connection.callValidated('echo', {}), { content: [{ type: 'text', text: 'custom' }] })
  t.equal(custom.chainCalls(), 1)
})

t.test('a server without logging refuses log notifications as over the connection', async t => {
  const connection = await connect(t, 'quiet', options => createFastServer(options, false))
  const logs = await connection.callValidated('logs', {})
  t.same(logs, await connection.callTool('logs', {}))
  t.match(logs.content, [{ text: 'sent' }, { text: /does not support logging/ }, { text: 'sent' }])
})

t.test("every question to a client is refused with the REST call's refusal", async t => {
  const connection = await connect(t)
  const refusal = (method: string): string => `ProtocolError -32603 '${method}' cannot be answered: the call came over the gateway's REST API, which has no client to ask`
  const asked = await connection.callValidated('asks', {})
  t.same(asked, { content: ['elicitation/create', 'sampling/createMessage', 'roots/list'].map(method => ({ type: 'text', text: refusal(method) })) })
  t.same(asked, await connection.callTool('asks', {}))
  t.same(await connection.callValidated('multiRound', {}), {
    content: [{ type: 'text', text: "Fulfilling input required by 'tools/call' failed: 'elicitation/create' cannot be answered: the call came over the gateway's REST API, which has no client to ask" }],
    isError: true
  })
})

t.test("a direct call's questions never reach the client of another call in flight", async t => {
  const connection = await connect(t)
  const questions: McpMessage[] = []
  let answer: (() => void) | undefined
  const downstream: Downstream = {
    async send (request) {
      questions.push(request)
      const answered = new Promise<void>(resolve => { answer = resolve })
      events.emit('other:asked')
      await answered
      return { action: 'decline' }
    },
    async notify () {}
  }
  // An `/mcp` client's call, waiting on its client's answer: the one exchange on the connection.
  const asked = once(events, 'other:asked')
  const other = connection.callTool('asksUncaught', {}, { downstream })
  await asked
  t.match(await connection.callValidated('multiRound', {}), { isError: true, content: [{ text: /REST API, which has no client to ask/ }] })
  t.match(await connection.callValidated('asksUncaught', {}), { isError: true, content: [{ text: /REST API, which has no client to ask/ }] })
  t.equal(questions.length, 1, 'only the other call asked its client')
  answer?.()
  t.same(await other, { content: [] })
})

t.test('progress goes to onProgress, and a call without it carries no progress token', async t => {
  const connection = await connect(t)
  const fast: unknown[] = []
  const slow: unknown[] = []
  t.same(await connection.callValidated('count', { label: 'x' }, { onProgress: progress => fast.push(progress) }), { content: [{ type: 'text', text: 'counted x' }] })
  await connection.callTool('count', { label: 'x' }, { onProgress: progress => slow.push(progress) })
  t.same(fast, [1, 2, 3].map(progress => ({ progress, total: 3, message: `step ${progress}` })))
  t.same(fast, slow)
  const plain = await connection.callValidated('whoami', {})
  t.same((plain.structuredContent as { meta: unknown }).meta, null)
})

t.test("the caller's identity is the tool's ctx.http.authInfo", async t => {
  const connection = await connect(t)
  const authInfo: AuthInfo = { clientId: 'ci', scopes: ['a'], token: '', extra: { kind: 'apiKey' } }
  t.same((await connection.callValidated('whoami', {}, { authInfo })).structuredContent, { authInfo, meta: null, direct: true })
  t.same((await connection.callValidated('whoami', {})).structuredContent, { authInfo: null, meta: null, direct: true })
})

t.test('a call that does not answer in time fails as REQUEST_TIMEOUT, and the tool is told why', async t => {
  const connection = await connect(t)
  const aborted = once(events, 'hold:aborted')
  t.match(await outcome(connection.callValidated('hold', {}, { timeoutMs: 20 })), { error: { name: 'CallError', code: 'REQUEST_TIMEOUT', message: 'No answer within 20 ms' } })
  t.same(await aborted, ['timed out after 20 ms'])
})

t.test('a cancelled call fails as ABORTED, and the tool is told; one cancelled before it starts never runs', async t => {
  const connection = await connect(t)
  const controller = new AbortController()
  const started = once(events, 'hold:started')
  const aborted = once(events, 'hold:aborted')
  const call = outcome(connection.callValidated('hold', {}, { signal: controller.signal, timeoutMs: 60_000 }))
  await started
  controller.abort()
  t.match(await call, { error: { code: 'ABORTED', message: 'The call was cancelled' } })
  t.same(await aborted, ['the caller went away'])

  let ran = false
  events.once('hold:started', () => { ran = true })
  t.match(await outcome(connection.callValidated('hold', {}, { signal: AbortSignal.abort() })), { error: { code: 'ABORTED' } })
  t.equal(ran, false)
  events.removeAllListeners('hold:started')
})

t.test('a signal first looked at after the call ended says it was aborted', async t => {
  const connection = await connect(t)
  const late = once(events, 'late:signal')
  t.match(await outcome(connection.callValidated('late', {}, { timeoutMs: 10 })), { error: { code: 'REQUEST_TIMEOUT' } })
  events.emit('late:go')
  t.same(await late, [true, 'timed out after 10 ms'])
})

t.test('the server closing mid-call fails the call as CONNECTION_CLOSED, and later calls as NOT_CONNECTED', async t => {
  const crashing = await connect(t, 'crashing')
  t.match(await outcome(crashing.callValidated('crash', {})), { error: { code: 'CONNECTION_CLOSED', message: "Server 'crashing' closed its connection" } })
  t.equal(crashing.state, 'down')
  t.match(await outcome(crashing.callValidated('echo', { text: 'hi' })), { error: { code: 'NOT_CONNECTED', message: "Server 'crashing' is down" } })

  const closing = await connect(t, 'closing')
  const started = once(events, 'hold:started')
  const aborted = once(events, 'hold:aborted')
  const call = outcome(closing.callValidated('hold', {}))
  await started
  await closing.close()
  t.match(await call, { error: { code: 'CONNECTION_CLOSED' } })
  t.match(await aborted, [{ name: 'SdkError', message: 'Connection closed' }])
})

t.test('many calls at once each get their own answer', async t => {
  const connection = await connect(t)
  const names = Array.from({ length: 50 }, (_, i) => `n${i}`)
  const answers = await Promise.all(names.map(async text => await connection.callValidated('echo', { text })))
  t.same(answers.map(answer => (answer.content[0] as { text: string }).text), names)
})

t.test('a low-level Server, and a call with a client to ask, take the connection', async t => {
  const low = await connect(t, 'low', createLowLevelServer)
  t.equal(low.directToolCalls, false)
  t.same(await low.callValidated('echo', { text: 'hi' }), { content: [{ type: 'text', text: 'low hi' }] })

  const connection = await connect(t)
  const asked: string[] = []
  const downstream: Downstream = { async send (request) { asked.push(request.method); return { action: 'decline' } }, async notify () {} }
  const options = { downstream } as Parameters<InProcessConnection['callValidated']>[2]
  t.same(await connection.callValidated('asksUncaught', {}, options), { content: [] })
  t.same(asked, ['elicitation/create'], 'the question went to the client')
})

t.test("the pipeline's filters wrap the direct call as they wrap callTool", async t => {
  const connection = await connect(t)
  const observed: string[] = []
  const pipeline = new CallPipeline()
  pipeline.add({ name: 'policy', allows: call => call.name !== 'throws' })
  pipeline.add({ name: 'outcomes', observe: (call, { outcome }) => { observed.push(`${call.name} ${outcome}`) } })
  let wrapped = 0
  pipeline.add({ name: 'span', around: async (_call, run) => { wrapped++; return await run() } })
  pipeline.freeze()
  const context = (name: string): CallContext => ({ server: 'fast', method: 'tools/call', name, way: 'rest' })
  let ran = false
  events.once('hold:started', () => { ran = true })
  t.match(await outcome(pipeline.call(context('throws'), async () => await connection.callValidated('throws', {}))), { error: { code: 'GW_ERR_TOOL_NOT_FOUND' } })
  await pipeline.call(context('echo'), async () => await connection.callValidated('echo', { text: 'hi' }))
  await pipeline.call(context('wrongOutput'), async () => await connection.callValidated('wrongOutput', {}))
  await outcome(pipeline.call(context('hold'), async () => await connection.callValidated('hold', {}, { timeoutMs: 10 })))
  t.ok(ran)
  t.same(observed, ['throws denied', 'echo ok', 'wrongOutput tool_error', 'hold timeout'])
  t.equal(wrapped, 4)
})

// Through the gateway's REST routes: these hold whichever way the routes call the tool.
t.test('over REST: answers, tool errors, timeouts, identity, policy and a crash', async t => {
  const key = 'fast-path-key'
  const app = await build(t, {
    servers: [
      { name: 'fast', factory: createFastServer, timeoutMs: 50 },
      { name: 'crashing', factory: createFastServer }
    ],
    security: {
      auth: { mode: 'required', apiKeys: [{ id: 'ci', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }], protectDocs: false, authorizationServers: [], forwardIdentity: {} },
      policy: [{ match: {}, allow: ['*'], deny: ['fast/throws'] }]
    }
  })
  const post = async (url: string, payload: Record<string, unknown> = {}): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await app.inject({ method: 'POST', url, headers: { ...json, 'x-api-key': key }, payload })
    return { status: res.statusCode, body: res.json() }
  }
  t.same(await post('/fast/tools/shaped', { word: 'ab' }), { status: 200, body: { content: [{ type: 'text', text: 'ABAB' }] } })
  t.same(await post('/fast/tools/sum', { a: 1, b: 2 }), { status: 200, body: { content: [{ type: 'text', text: '3' }], structuredContent: { sum: 3 } } })
  t.match(await post('/fast/tools/sum', { a: 'x', b: 2 }), { status: 400, body: { code: 'GW_ERR_INVALID_ARGUMENTS' } })
  t.match(await post('/fast/tools/wrongOutput'), { status: 422, body: { isError: true, code: 'GW_ERR_TOOL_ERROR' } })
  t.match(await post('/fast/tools/asksUncaught'), { status: 422, body: { content: [{ text: /REST API, which has no client to ask/ }] } })
  t.match(await post('/fast/tools/hold'), { status: 504, body: { code: 'GW_ERR_TOOL_TIMEOUT' } })
  t.match(await post('/fast/tools/throws'), { status: 404, body: { code: 'GW_ERR_TOOL_NOT_FOUND' } })
  t.match(await post('/fast/tools/whoami'), { status: 200, body: { structuredContent: { authInfo: { clientId: 'ci' } } } })
  t.match(await post('/crashing/tools/crash'), { status: 502, body: { code: 'GW_ERR_UPSTREAM' } })
  t.match(await post('/crashing/tools/echo', { text: 'hi' }), { status: 503, body: { code: 'GW_ERR_SERVER_UNAVAILABLE' } })
})

t.test('over REST, tool calls take the fast path', async t => {
  const app = await build(t, { servers: [{ name: 'fast', factory: createFastServer }] })
  const res = await app.inject({ method: 'POST', url: '/fast/tools/whoami', headers: json, payload: {} })
  t.equal(res.json().structuredContent.direct, true)
})
