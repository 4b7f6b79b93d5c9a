import t, { type Test } from 'tap'
import { McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import type { GatewayOptions } from '../../src/app.js'
import type { CallContext } from '../../src/connections/connection.js'
import type { CallFilter } from '../../src/pipeline/pipeline.js'
import { makeCluster, memoryCluster, memoryClusterParts, type Cluster } from '../../src/stores/cluster.js'
import { MAX_STORED_REQUEST_BYTES } from '../../src/http/shared-sessions.js'
import { listen, listenAs, mcpHeaders } from '../helper.js'
import { createAskingServer, createProgressServer } from '../fixtures/servers.js'
import { createConformanceServer } from '../fixtures/conformance/server.js'

// 2025-era sessions served by two gateway instances sharing one cluster (two gateways in one
// process, sharing a memory cluster's parts, stand in for two processes sharing Redis).

type Servers = NonNullable<GatewayOptions['servers']>

/** Two gateways sharing one memory cluster; the clusters are closed after the gateways. */
async function twoInstances (t: Test, servers: Servers): Promise<{ shared: ReturnType<typeof memoryClusterParts>, bases: [string, string], clusters: Cluster[], apps: Array<Awaited<ReturnType<typeof listen>>['app']> }> {
  const shared = memoryClusterParts()
  const clusters = [memoryCluster({ shared }), memoryCluster({ shared })]
  // Registered first, so it runs after the gateways' own teardowns (tap runs them last in, first out).
  t.teardown(async () => { for (const cluster of clusters) await cluster.close() })
  const a = await listen(t, { servers, cluster: clusters[0] })
  const b = await listen(t, { servers, cluster: clusters[1] })
  return { shared, bases: [a.base, b.base], clusters, apps: [a.app, b.app] }
}

interface Hit { base: string, method: string, kind: 'request' | 'response' | 'notification' | 'get' | 'delete' }

/**
 * A `fetch` that sends each request to the gateway `pick` chooses (by default the other one
 * than last time, so every request of a session lands on another instance than the one
 * before), and logs where each went.
 */
function routed (bases: string[], pick?: (hit: Omit<Hit, 'base'>) => string): { fetch: typeof fetch, hits: Hit[] } {
  const hits: Hit[] = []
  let next = 0
  const route = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const method = init?.method ?? 'GET'
    let hit: Omit<Hit, 'base'> = { method: '', kind: method === 'DELETE' ? 'delete' : 'get' }
    if (method === 'POST') {
      const message = JSON.parse(String(init?.body)) as { id?: unknown, method?: string }
      hit = { method: message.method ?? '', kind: message.method === undefined ? 'response' : message.id === undefined ? 'notification' : 'request' }
    }
    const base = pick?.(hit) ?? bases[next++ % bases.length]
    hits.push({ ...hit, base })
    return await fetch(`${base}${url.pathname}${url.search}`, init)
  }
  return { fetch: route as typeof fetch, hits }
}

async function client (t: Test, url: string, fetchVia: typeof fetch, setup?: (client: LegacyClient) => void): Promise<{ client: LegacyClient, transport: LegacyTransport }> {
  const client = new LegacyClient({ name: 'cluster-test', version: '1.0.0' }, { capabilities: { elicitation: {} } })
  setup?.(client)
  const transport = new LegacyTransport(new URL(url), { fetch: fetchVia })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport }
}

async function initialize (base: string, path: string, protocolVersion = '2025-11-25', headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { ...mcpHeaders, ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
  })
}

const listTools = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })

t.test('a session is served by both instances in turn: list, call, progress, DELETE', async t => {
  const { shared, bases } = await twoInstances(t, [{ name: 'progress', factory: createProgressServer }])
  const { fetch: via, hits } = routed(bases)
  const { client: mcp, transport } = await client(t, `${bases[0]}/progress/mcp`, via)
  const sessionId = transport.sessionId as string
  t.match(await shared.sessions.get(sessionId), { server: 'progress', pinned: false, initialize: { clientInfo: { name: 'cluster-test' } } }, 'the session is recorded at initialize')

  t.same((await mcp.listTools()).tools.map(tool => tool.name).sort(), ['count', 'hold'])
  const seen: number[] = []
  const result = await mcp.callTool({ name: 'count', arguments: { label: 'stars' } }, undefined, { onprogress: progress => { seen.push(progress.progress) } })
  t.same(seen, [1, 2, 3], 'progress streams on the POST of the instance running the call')
  t.same(result.content, [{ type: 'text', text: 'counted stars' }])
  t.same((await mcp.callTool({ name: 'count', arguments: { label: 'moons' } })).content, [{ type: 'text', text: 'counted moons' }])
  const requests = hits.filter(hit => hit.kind === 'request')
  t.ok(bases.every(base => requests.some(hit => hit.base === base && hit.method !== 'initialize')), 'both instances answered requests of the session')

  await transport.terminateSession()
  t.equal(await shared.sessions.get(sessionId), undefined, 'DELETE removes the record')
  for (const base of bases) {
    const res = await fetch(`${base}/progress/mcp`, { method: 'POST', headers: { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }, body: listTools })
    t.equal(res.status, 404, 'no instance keeps a replica of a deleted session')
  }
})

t.test('an elicitation answered on the other instance reaches the call that asked', async t => {
  const { bases } = await twoInstances(t, [{ name: 'asker', factory: createAskingServer }])
  const { fetch: via, hits } = routed(bases)
  const { client: mcp } = await client(t, `${bases[0]}/asker/mcp`, via, c => {
    c.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }))
  })
  const result = await mcp.callTool({ name: 'askName', arguments: {} })
  t.same(result.content, [{ type: 'text', text: 'Hello, Ada!' }])
  const call = hits.find(hit => hit.method === 'tools/call')
  const answer = hits.find(hit => hit.kind === 'response')
  t.ok(call !== undefined && answer !== undefined && call.base !== answer.base, 'the answer was POSTed to the instance not running the call')
})

t.test('a server notification reaches the GET stream held by the other instance', async t => {
  const { bases } = await twoInstances(t, [{ name: 'conformance', factory: createConformanceServer }])
  // The GET stream on the first instance, every POST on the second.
  const { fetch: via, hits } = routed(bases, hit => hit.kind === 'get' ? bases[0] : bases[1])
  let changed!: () => void
  const listChanged = new Promise<void>(resolve => { changed = resolve })
  const { client: mcp } = await client(t, `${bases[1]}/conformance/mcp`, via, c => {
    c.setNotificationHandler(ToolListChangedNotificationSchema, async () => { changed() })
  })
  // The client opens its GET stream after `initialized`; a request answered after it is open
  // cannot race it, and a ping costs the server nothing.
  while (!hits.some(hit => hit.kind === 'get')) await mcp.ping()
  await mcp.ping()
  await mcp.callTool({ name: 'test_trigger_tool_change', arguments: {} })
  await listChanged
  t.pass('tools/list_changed raised on the second instance arrived on the first one\'s GET stream')
})

t.test('a POST stream is resumed with Last-Event-ID on the other instance, every event once', async t => {
  const { bases } = await twoInstances(t, [{ name: 'conformance', factory: createConformanceServer }])
  const init = await initialize(bases[0], '/conformance/mcp')
  const sessionId = init.headers.get('mcp-session-id') as string
  await init.body?.cancel()
  const headers = { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  await fetch(`${bases[0]}/conformance/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  const post = await fetch(`${bases[0]}/conformance/mcp`, {
    method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'test_reconnection', arguments: {} } })
  })
  // The tool closes the stream before answering: all the client gets is the priming event.
  const primed = await post.text()
  const lastEventId = /^id: (\S+)$/m.exec(primed)?.[1] as string
  t.notMatch(primed, /"result"/)

  const resumed = await fetch(`${bases[1]}/conformance/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  t.equal(resumed.status, 200)
  const rest = await resumed.text()
  const answers = [...rest.matchAll(/^data: (.+)$/mg)].map(match => JSON.parse(match[1]))
  t.equal(answers.length, 1, 'each event once')
  t.match(answers[0], { id: 7, result: { content: [{ type: 'text', text: 'Reconnection test completed' }] } }, 'the answer arrives on the stream resumed elsewhere')
  t.match(rest, new RegExp(`^id: ${lastEventId.split(':')[0]}:1$`, 'm'), 'with the event id the first instance gave it')
})

t.test('a session whose instance closed goes on on the other', async t => {
  const { bases, apps } = await twoInstances(t, [{ name: 'progress', factory: createProgressServer }])
  let target = bases[0]
  const { fetch: via } = routed(bases, () => target)
  const { client: mcp } = await client(t, `${bases[0]}/progress/mcp`, via)
  t.same((await mcp.callTool({ name: 'count', arguments: { label: 'before' } })).content, [{ type: 'text', text: 'counted before' }])
  target = bases[1]
  await apps[0].close()
  t.same((await mcp.callTool({ name: 'count', arguments: { label: 'after' } })).content, [{ type: 'text', text: 'counted after' }])
})

t.test('another caller presenting the id finds no session on the other instance', async t => {
  const shared = memoryClusterParts()
  const clusters = [memoryCluster({ shared }), memoryCluster({ shared })]
  t.teardown(async () => { for (const cluster of clusters) await cluster.close() })
  const servers = [{ name: 'progress', factory: createProgressServer }]
  const a = await listenAs(t, { servers, cluster: clusters[0] })
  const b = await listenAs(t, { servers, cluster: clusters[1] })
  const ada = { 'x-test-identity': JSON.stringify({ token: 't', clientId: 'ada', scopes: [] }) }
  const eve = { 'x-test-identity': JSON.stringify({ token: 't', clientId: 'eve', scopes: [] }) }
  const init = await initialize(a.base, '/progress/mcp', '2025-11-25', ada)
  const sessionId = init.headers.get('mcp-session-id') as string
  await init.body?.cancel()
  const headers = { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  const stolen = await fetch(`${b.base}/progress/mcp`, { method: 'POST', headers: { ...headers, ...eve }, body: listTools })
  t.equal(stolen.status, 404)
  t.match(await stolen.json(), { error: { message: 'Session not found' } })
  const own = await fetch(`${b.base}/progress/mcp`, { method: 'POST', headers: { ...headers, ...ada }, body: listTools })
  t.equal(own.status, 200, 'its own caller is served there')
  await own.body?.cancel()
})

t.test('without the shared store a request that needs it answers 503 with Retry-After; a held session goes on', async t => {
  const shared = memoryClusterParts()
  let up = true
  const clusters = [makeCluster({ ...shared, available: () => up }), makeCluster({ ...shared, available: () => up })]
  t.teardown(async () => { for (const cluster of clusters) await cluster.close() })
  const servers = [{ name: 'progress', factory: createProgressServer }]
  const a = await listen(t, { servers, cluster: clusters[0] })
  const b = await listen(t, { servers, cluster: clusters[1] })
  const init = await initialize(a.base, '/progress/mcp')
  const sessionId = init.headers.get('mcp-session-id') as string
  await init.body?.cancel()
  const headers = { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  up = false

  const refused = await initialize(a.base, '/progress/mcp')
  t.equal(refused.status, 503)
  t.ok(Number(refused.headers.get('retry-after')) > 0, 'Retry-After says when to try again')
  t.match(await refused.json(), { jsonrpc: '2.0', id: null, error: { code: -32000, message: /shared store is unreachable/, data: { code: 'GW_ERR_STORE_UNAVAILABLE' } } })

  const elsewhere = await fetch(`${b.base}/progress/mcp`, { method: 'POST', headers, body: listTools })
  t.equal(elsewhere.status, 503, 'an instance without the session cannot look it up')
  t.ok(elsewhere.headers.has('retry-after'))
  await elsewhere.body?.cancel()

  const held = await fetch(`${a.base}/progress/mcp`, { method: 'POST', headers, body: listTools })
  t.equal(held.status, 200, 'the instance holding the session serves it without the store')
  await held.body?.cancel()
})

t.test('closing the gateways leaves no broker subscription behind', async t => {
  const { shared, bases, apps } = await twoInstances(t, [{ name: 'progress', factory: createProgressServer }])
  const { fetch: via } = routed(bases)
  const { client: mcp } = await client(t, `${bases[0]}/progress/mcp`, via)
  await mcp.listTools()
  await mcp.listTools()
  t.ok(shared.broker.channelCount > 0, 'the replicas listen on their session\'s channel')
  await mcp.close()
  for (const app of apps) await app.close()
  t.equal(shared.broker.channelCount, 0)
})

/**
 * `steps` (annotated idempotent) and `once` (not): progress 1..3, then the answer naming the
 * instance. On the instance that `stalls`, a call stops after progress 2 and waits to be
 * cancelled: the call its instance's death cut short.
 */
function stepsServer (instance: string, stalls: boolean): (options: ServerOptions) => McpServer {
  return options => {
    const server = new McpServer({ name: 'steps', version: '1.0.0' }, options)
    const run = async (ctx: { mcpReq: { _meta?: { progressToken?: string | number }, signal: AbortSignal, notify: McpServer['server']['notification'] } }): Promise<{ content: Array<{ type: 'text', text: string }> }> => {
      const progressToken = ctx.mcpReq._meta?.progressToken
      for (let progress = 1; progress <= 3 && progressToken !== undefined; progress++) {
        if (stalls && progress === 3) await new Promise(resolve => ctx.mcpReq.signal.addEventListener('abort', resolve, { once: true }))
        if (ctx.mcpReq.signal.aborted) break
        await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, progress, total: 3 } })
      }
      return { content: [{ type: 'text', text: `done on ${instance}` }] }
    }
    server.registerTool('steps', { description: 'Idempotent steps', inputSchema: z.object({ pad: z.string().optional() }), annotations: { idempotentHint: true } }, async (_args, ctx) => await run(ctx))
    server.registerTool('once', { description: 'Steps that must not run twice', annotations: { idempotentHint: false } }, async ctx => await run(ctx))
    return server
  }
}

/** An SSE response's frames as they come: `next()` resolves with the next one's id and message, or undefined at its end. */
function sseFrames (res: Response): { next: () => Promise<{ id?: string, message?: any } | undefined> } {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  const next = async (): Promise<{ id?: string, message?: any } | undefined> => {
    for (;;) {
      const end = buffered.indexOf('\n\n')
      if (end !== -1) {
        const frame = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        const id = /^id: (.+)$/m.exec(frame)?.[1]
        const data = /^data: (.+)$/m.exec(frame)?.[1]
        // A keep-alive comment carries neither.
        if (id !== undefined || data !== undefined) return { ...(id !== undefined && { id }), ...(data !== undefined && { message: JSON.parse(data) }) }
        continue
      }
      const { value, done } = await reader.read()
      if (done) return undefined
      buffered += decoder.decode(value, { stream: true })
    }
  }
  return { next }
}

/** Every frame left on an SSE response, to its end. */
async function rest (frames: ReturnType<typeof sseFrames>): Promise<Array<{ id?: string, message?: any }>> {
  const all: Array<{ id?: string, message?: any }> = []
  for (let frame = await frames.next(); frame !== undefined; frame = await frames.next()) all.push(frame)
  return all
}

/**
 * Instance A and instance B on one memory cluster, A able to die as a SIGKILLed process does:
 * once `kill()`ed, nothing it does reaches the shared state (no event, no description, no
 * heartbeat, no broker message) and its heartbeat has lapsed. Its process (here, its
 * gateway) still runs its calls, as a dead instance's would be gone: nobody sees them.
 * B records each call its pipeline passes.
 */
async function dyingOwner (t: Test): Promise<{ a: string, b: string, kill: () => Promise<void>, calls: CallContext[] }> {
  const shared = memoryClusterParts()
  let dead = false
  const mute = <T extends object>(part: T, writes: string[]): T => new Proxy(part, {
    get (target, key) {
      const value = Reflect.get(target, key, target) as unknown
      if (typeof value !== 'function') return value
      if (!writes.includes(String(key))) return value.bind(target)
      return (...args: unknown[]) => dead ? (key === 'publish' ? undefined : Promise.resolve(undefined)) : value.apply(target, args)
    }
  })
  const owner = makeCluster({
    sessions: mute(shared.sessions, ['create', 'update', 'touch', 'delete', 'beat']),
    events: mute(shared.events, ['storeEvent', 'describe']),
    broker: mute(shared.broker, ['publish']),
    requestStateKey: shared.requestStateKey,
    available: () => true
  })
  const other = memoryCluster({ shared })
  t.teardown(async () => { await owner.close(); await other.close() })
  const calls: CallContext[] = []
  const recorder: CallFilter = { name: 'recorder', observe: call => { if (call.method === 'tools/call') calls.push(call) } }
  // A's stalled call is cancelled at once when the test ends.
  const a = await listenAs(t, { servers: [{ name: 'steps', factory: stepsServer('a', true) }], cluster: owner, drainTimeoutMs: 0 })
  const b = await listenAs(t, { servers: [{ name: 'steps', factory: stepsServer('b', false) }], cluster: other, filters: [recorder] })
  return {
    a: a.base,
    b: b.base,
    calls,
    kill: async () => {
      dead = true
      await shared.sessions.beat(owner.instanceId, 0)
    }
  }
}

const ada = { 'x-test-identity': JSON.stringify({ token: 't', clientId: 'ada', scopes: [] }) }

/** A session opened on `base` by ada; the headers each of its requests carries. */
async function adaSession (base: string): Promise<Record<string, string>> {
  const init = await initialize(base, '/steps/mcp', '2025-11-25', ada)
  const headers = { ...mcpHeaders, ...ada, 'mcp-session-id': init.headers.get('mcp-session-id') as string, 'mcp-protocol-version': '2025-11-25' }
  await init.body?.cancel()
  const ack = await fetch(`${base}/steps/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  await ack.body?.cancel()
  return headers
}

/** Calls `name` on `base` with a progress token, reads its stream up to progress 2, then breaks it; resolves with that event's id. */
async function callUntilProgress2 (base: string, headers: Record<string, string>, id: number, name: string, args: Record<string, unknown> = {}): Promise<string> {
  const controller = new AbortController()
  const res = await fetch(`${base}/steps/mcp`, {
    method: 'POST', headers, signal: controller.signal, body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args, _meta: { progressToken: `p${id}` } } })
  })
  const frames = sseFrames(res)
  for (let frame = await frames.next(); frame !== undefined; frame = await frames.next()) {
    if (frame.message?.params?.progress === 2) {
      controller.abort()
      return frame.id as string
    }
  }
  throw new Error('the stream ended before progress 2')
}

t.test('the instance running an idempotent tool call dies: the resume on the other runs it again, each progress once, then the result', async t => {
  const { a, b, kill, calls } = await dyingOwner(t)
  const headers = await adaSession(a)
  const lastEventId = await callUntilProgress2(a, headers, 5, 'steps')
  await kill()

  const resumed = await fetch(`${b}/steps/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  t.equal(resumed.status, 200)
  const frames = await rest(sseFrames(resumed))
  const stream = lastEventId.split(':')[0]
  t.same(frames.map(frame => frame.message?.params?.progress ?? frame.message?.result?.content?.[0]?.text), [3, 'done on b'], 'progress 3 and the result: 1 and 2, which the client had, are not sent again')
  t.same(frames.map(frame => frame.id), [`${stream}:3`, `${stream}:4`], 'numbered on from the client\'s last event')
  t.match(frames[1]?.message, { jsonrpc: '2.0', id: 5, result: {} })
  t.match(calls, [{ name: 'steps', identity: { clientId: 'ada' } }], 'the run passed B\'s call pipeline once, as the session\'s caller')

  // Broken again before the result: the stored events resume it, on the instance that re-ran it.
  const again = await fetch(`${b}/steps/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': `${stream}:3` } })
  t.same((await rest(sseFrames(again))).map(frame => [frame.id, frame.message?.result?.content?.[0]?.text]), [[`${stream}:4`, 'done on b']], 'a second resume gets the stored result')
  t.equal(calls.length, 1, 'without running it a third time')

  const next = await fetch(`${b}/steps/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'steps', arguments: {} } }) })
  t.match(await next.json(), { id: 6, result: { content: [{ text: 'done on b' }] } }, 'and the session goes on')
})

t.test('the instance running a call of a tool not marked idempotent dies: the resume answers it with an error, and does not run it', async t => {
  const { a, b, kill, calls } = await dyingOwner(t)
  const headers = await adaSession(a)
  const lastEventId = await callUntilProgress2(a, headers, 5, 'once')
  await kill()
  const resumed = await fetch(`${b}/steps/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  const frames = await rest(sseFrames(resumed))
  t.match(frames, [{ message: { id: 5, error: { message: 'The gateway instance running this request stopped before answering' } } }])
  t.equal(frames.length, 1)
  t.same(calls, [], 'not run again')
})

t.test('a request too big to keep with its stream is not run again, idempotent or not', async t => {
  const { a, b, kill, calls } = await dyingOwner(t)
  const headers = await adaSession(a)
  const lastEventId = await callUntilProgress2(a, headers, 5, 'steps', { pad: 'x'.repeat(MAX_STORED_REQUEST_BYTES) })
  await kill()
  const resumed = await fetch(`${b}/steps/mcp`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': lastEventId } })
  t.match(await rest(sseFrames(resumed)), [{ message: { id: 5, error: { message: /stopped before answering/ } } }])
  t.same(calls, [])
})
