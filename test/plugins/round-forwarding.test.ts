import t, { type Test } from 'tap'
import { createRequire } from 'node:module'
import type { FastifyInstance } from 'fastify'
import { parseConfig } from '../../src/config.js'
import { memoryCluster, memoryClusterParts } from '../../src/stores/cluster.js'
import { listenAs, mcpHeaders, modernMeta, text } from '../helper.js'

// Two gateway instances of one cluster (two gateways in one process over shared memory parts),
// each with its own child of a 2025-only upstream that asks for input mid-call: a 2026-07-28
// client's `input_required` round made on one instance is answered on the other.

const require = createRequire(import.meta.url)
const everything = require.resolve('@modelcontextprotocol/server-everything/dist/index.js')
const config = parseConfig(JSON.stringify({ mcpServers: { everything: { command: process.execPath, args: [everything, 'stdio'] } } }), 'gateway.json')
const elicit = { 'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} } } }
const ada = JSON.stringify({ token: 'a', clientId: 'ada', scopes: [] })
const eve = JSON.stringify({ token: 'e', clientId: 'eve', scopes: [] })
const answer = { action: 'accept', content: { name: 'Grace', check: true, firstLine: 'x', integer: 1, number: 1, enum: 'option1' } }

async function twoGateways (t: Test): Promise<{ a: { app: FastifyInstance, base: string }, b: { app: FastifyInstance, base: string }, shared: ReturnType<typeof memoryClusterParts> }> {
  const shared = memoryClusterParts()
  const a = await listenAs(t, { config, cluster: memoryCluster({ shared }) })
  const b = await listenAs(t, { config, cluster: memoryCluster({ shared }) })
  return { a, b, shared }
}

/** One raw 2026-07-28 `trigger-elicitation-request` as `identity`; the last JSON-RPC message of its answer. */
async function call (base: string, identity: string, extra: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const name = 'trigger-elicitation-request'
  const res = await fetch(`${base}/everything/mcp`, {
    method: 'POST',
    headers: { ...mcpHeaders, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name, 'x-test-identity': identity },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: {}, _meta: { ...modernMeta, ...elicit }, ...extra } })
  })
  const body = await res.text()
  const messages = res.headers.get('content-type')?.includes('text/event-stream') === true
    ? body.split('\n').filter(line => line.startsWith('data: ')).map(line => JSON.parse(line.slice(6)))
    : [JSON.parse(body)]
  return messages.at(-1) as Record<string, any>
}

async function asked (base: string): Promise<{ id: string, requestState: string }> {
  const first = await call(base, ada)
  const [id] = Object.keys(first.result.inputRequests as Record<string, unknown>)
  return { id: id as string, requestState: first.result.requestState }
}

t.test('a round asked on one gateway instance is answered on another', async t => {
  const { a, b } = await twoGateways(t)
  const { id, requestState } = await asked(a.base)
  const done = await call(b.base, ada, { inputResponses: { [id]: answer }, requestState })
  t.match(text(done.result), /Name: Grace/, "the call held by the first instance finished with the answer given to the second")
  const again = await call(a.base, ada, { inputResponses: { [id]: answer }, requestState })
  t.match(again, { error: { code: -32602, message: /expired requestState/ } }, 'a finished call cannot be continued')
})

t.test("a tampered or another caller's requestState answers as an unknown one, and the call still waits for its caller", async t => {
  const { a, b } = await twoGateways(t)
  const { id, requestState } = await asked(a.base)
  const invalid = { error: { code: -32602, message: 'Invalid or expired requestState: the call it continues has ended; make the call again' } }
  t.match(await call(b.base, ada, { inputResponses: { [id]: answer }, requestState: `${requestState}x` }), invalid, 'tampered')
  t.match(await call(b.base, eve, { inputResponses: { [id]: answer }, requestState }), invalid, "another caller's, on the other instance")
  t.match(await call(a.base, eve, { inputResponses: { [id]: answer }, requestState }), invalid, "another caller's, on the instance that holds it")
  t.match(text((await call(b.base, ada, { inputResponses: { [id]: answer }, requestState })).result), /Name: Grace/)
})

t.test('a retry whose call was held by a gateway instance that is gone is told to make the call again', async t => {
  const { a, b, shared } = await twoGateways(t)
  const { id, requestState } = await asked(a.base)
  await a.app.close()
  const instanceId = a.app.gatewayCluster?.instanceId as string
  // Its heartbeat lapsed, as after a crash once the TTL passes.
  await shared.sessions.beat(instanceId, -1)
  t.match(await call(b.base, ada, { inputResponses: { [id]: answer }, requestState }), {
    error: { code: -32602, message: 'Invalid or expired requestState: the gateway instance that held the call is gone; make the call again' }
  })
})

t.test('closing the gateways leaves no round channel behind', async t => {
  const shared = memoryClusterParts()
  const before = shared.broker.channelCount
  const a = await listenAs(t, { config, cluster: memoryCluster({ shared }) })
  const b = await listenAs(t, { config, cluster: memoryCluster({ shared }) })
  t.equal(shared.broker.channelCount, before + 2, "one round channel per instance")
  const { id, requestState } = await asked(a.base)
  await call(b.base, ada, { inputResponses: { [id]: answer }, requestState })
  await a.app.close()
  await b.app.close()
  t.equal(shared.broker.channelCount, before)
})
