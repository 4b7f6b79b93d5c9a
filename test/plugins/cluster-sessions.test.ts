import t, { type Test } from 'tap'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import type { GatewayOptions } from '../../src/app.js'
import { makeCluster, memoryCluster, memoryClusterParts, type Cluster } from '../../src/stores/cluster.js'
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
