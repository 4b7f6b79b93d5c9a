import t, { type Test } from 'tap'
import { CLIENT_CAPABILITIES_META_KEY, ProtocolError, type AuthInfo, type Progress, type ServerContext } from '@modelcontextprotocol/server'
import type { McpMessage, RelayOptions } from '../../../src/connections/connection.js'
import { askingRound, InputRounds } from '../../../src/mcp/input-rounds.js'
import { RoundForwarder, roundsChannel } from '../../../src/mcp/round-forwarding.js'
import { memoryCluster, memoryClusterParts, type Cluster } from '../../../src/stores/cluster.js'

// Two gateway instances of one cluster, as two forwarders over one memory broker (each with
// its own instance id), driving `askingRound` as the relay server does: a 2026-07-28 client's
// call to a 2025-era upstream that asks for a name mid-call, answered on either instance.

const ada: AuthInfo = { token: 't1', clientId: 'ada', scopes: [] }
const eve: AuthInfo = { token: 't2', clientId: 'eve', scopes: [] }
const elicits = { elicitation: { form: {} } }

/** A request's handler context, as the SDK hands it to the relay: the caller, its capabilities, and a retry's answers and state. */
function ctxFor (authInfo: AuthInfo | undefined, retry: { requestState?: string, inputResponses?: Record<string, unknown> } = {}): ServerContext {
  return {
    mcpReq: {
      method: 'tools/call',
      signal: new AbortController().signal,
      envelope: { [CLIENT_CAPABILITIES_META_KEY]: elicits },
      requestState: () => retry.requestState,
      ...(retry.inputResponses !== undefined && { inputResponses: retry.inputResponses })
    },
    ...(authInfo !== undefined && { http: { authInfo } })
  } as unknown as ServerContext
}

/** The relay's options for one round: where its progress goes, a timeout, the caller. */
function optionsFor (authInfo: AuthInfo | undefined, progress: Progress[] = [], timeoutMs = 5000): RelayOptions {
  return {
    timeoutMs,
    ...(authInfo !== undefined && { authInfo }),
    onProgress: p => { progress.push(p) },
    downstream: { send: async () => { throw new Error('a 2026-07-28 client is never asked directly') }, notify: async () => {} }
  }
}

/** The upstream call: reports progress, asks for a name (a 2025-era server→client request), greets it. */
function greeting (started: { count: number } = { count: 0 }): (options: RelayOptions) => Promise<Record<string, unknown>> {
  return async call => {
    started.count++
    const answer = await call.downstream?.send({ method: 'elicitation/create', params: { message: 'Your name?', requestedSchema: { type: 'object', properties: { name: { type: 'string' } } } } }) as { content: { name: string } }
    call.onProgress?.({ progress: 1, total: 1 })
    return { content: [{ type: 'text', text: `Hello, ${answer.content.name}!` }] }
  }
}

interface Asked { resultType: string, inputRequests: Record<string, McpMessage>, requestState: string }

/** Two instances over one shared memory cluster, their responders started; closed when the test ends. */
async function twoInstances (t: Test): Promise<{ a: RoundForwarder, b: RoundForwarder, clusters: Cluster[], shared: ReturnType<typeof memoryClusterParts> }> {
  const shared = memoryClusterParts()
  const clusters = [memoryCluster({ shared }), memoryCluster({ shared })]
  const [a, b] = clusters.map(cluster => new RoundForwarder(cluster)) as [RoundForwarder, RoundForwarder]
  await Promise.all([a.start(), b.start()])
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()])
    await Promise.all(clusters.map(async cluster => { await cluster.close() }))
  })
  return { a, b, clusters, shared }
}

/** Round 1 on `a`: the question, and the state that continues the call. */
async function firstRound (a: RoundForwarder, authInfo: AuthInfo | undefined = ada): Promise<{ asked: Asked, id: string }> {
  const asked = await askingRound(ctxFor(authInfo), optionsFor(authInfo), greeting(), a.rounds) as unknown as Asked
  const [id] = Object.keys(asked.inputRequests)
  return { asked, id: id as string }
}

function answersFor (id: string, name: string): Record<string, unknown> {
  return { [id]: { action: 'accept', content: { name } } }
}

const INVALID = { code: -32602, message: /^Invalid or expired requestState: the call it continues has ended; make the call again$/, data: { reason: 'invalid_request_state' } }

t.test('a call asked on one instance is answered on another, which forwards the round to the instance that holds it', async t => {
  const { a, b, shared } = await twoInstances(t)
  const started = { count: 0 }
  const asked = await askingRound(ctxFor(ada), optionsFor(ada), greeting(started), a.rounds) as unknown as Asked
  t.equal(asked.resultType, 'input_required')
  t.match(Object.values(asked.inputRequests), [{ method: 'elicitation/create', params: { message: 'Your name?' } }])
  t.match(asked.requestState, /^fastify-mcp-gateway\/ask\/v1\./, "the gateway's own state, sealed with the SDK codec")
  t.notMatch(asked.requestState, /ada/, 'the caller is bound, not written, into the state')
  t.equal(a.rounds.size, 1, 'the call waits on the instance that started it')

  const [id] = Object.keys(asked.inputRequests) as [string]
  const progress: Progress[] = []
  const done = await askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada, progress), greeting(started), b.rounds)
  t.same(done, { content: [{ type: 'text', text: 'Hello, Ada!' }] }, 'the retry on the other instance completes the call')
  t.equal(started.count, 1, 'the retry continued the call; it did not make a new one')
  t.same(progress, [{ progress: 1, total: 1 }], "the round's progress came back with it")
  t.equal(a.rounds.size, 0, 'the finished call no longer waits')
  t.equal(shared.broker.channelCount, 2, "only the two instances' round channels stay subscribed")

  const again = askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(started), b.rounds)
  await t.rejects(again, INVALID, 'a finished call cannot be continued, from either instance')
})

t.test('a round the instance that holds the call forwards back to it is answered there too', async t => {
  const { a, b } = await twoInstances(t)
  // Started on b, retried on a then on b: each retry goes to b.
  const { asked, id } = await firstRound(b)
  const unanswered = await askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: {} }), optionsFor(ada), greeting(), a.rounds) as unknown as Asked
  t.equal(unanswered.resultType, 'input_required', 'a retry without the answer is asked again')
  t.same(Object.keys(unanswered.inputRequests), [id])
  const done = await askingRound(ctxFor(ada, { requestState: unanswered.requestState, inputResponses: answersFor(id, 'Grace') }), optionsFor(ada), greeting(), b.rounds)
  t.same(done, { content: [{ type: 'text', text: 'Hello, Grace!' }] })
})

t.test('a tampered requestState answers as an unknown one and leaves the call waiting', async t => {
  const { a, b } = await twoInstances(t)
  const { asked, id } = await firstRound(a)
  const [prefix, body, mac] = asked.requestState.split('.') as [string, string, string]
  // Another instance's id in the payload, its MAC kept: the seal no longer holds.
  const payload = JSON.parse(Buffer.from(body, 'base64url').toString()) as { p: { i: string, k: string } }
  payload.p.i = b.rounds.instanceId
  const forged = [prefix, Buffer.from(JSON.stringify(payload)).toString('base64url'), mac].join('.')
  for (const state of [forged, `${asked.requestState}x`, 'fastify-mcp-gateway/ask/not-a-state']) {
    await t.rejects(askingRound(ctxFor(ada, { requestState: state, inputResponses: answersFor(id, 'Mallory') }), optionsFor(ada), greeting(), b.rounds), INVALID, state)
  }
  const done = await askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), b.rounds)
  t.same(done, { content: [{ type: 'text', text: 'Hello, Ada!' }] }, 'the genuine state still continues the call')
})

t.test("another caller's requestState answers as an unknown one, on either instance", async t => {
  const { a, b } = await twoInstances(t)
  const { asked, id } = await firstRound(a)
  for (const [instance, rounds] of [['a', a.rounds], ['b', b.rounds]] as const) {
    for (const [who, authInfo] of [['eve', eve], ['nobody', undefined]] as const) {
      await t.rejects(askingRound(ctxFor(authInfo, { requestState: asked.requestState, inputResponses: answersFor(id, 'Eve') }), optionsFor(authInfo), greeting(), rounds), INVALID, `${who} on ${instance}`)
    }
  }
  t.equal(a.rounds.size, 1, "the call still waits for its own caller's answer")
})

t.test("a state sealed with another cluster's key is not this cluster's", async t => {
  const { a } = await twoInstances(t)
  const stranger = new RoundForwarder(memoryCluster())
  t.teardown(async () => { await stranger.close() })
  const { asked, id } = await firstRound(stranger)
  await t.rejects(askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), a.rounds), INVALID)
})

t.test('an expired requestState answers as an unknown one', async t => {
  const rounds = new InputRounds({ ttlSeconds: -1 })
  const asked = await askingRound(ctxFor(ada), optionsFor(ada), greeting(), rounds) as unknown as Asked
  const [id] = Object.keys(asked.inputRequests) as [string]
  await t.rejects(askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), rounds), INVALID)
})

t.test('a gateway without a cluster tells a retry of a call held elsewhere to make the call again', async t => {
  const { a, shared } = await twoInstances(t)
  const { asked, id } = await firstRound(a)
  // Same key, so the state opens; no relay, so the call cannot be reached.
  const alone = new InputRounds({ key: shared.requestStateKey })
  await t.rejects(askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), alone), INVALID)
})

t.test('a retry whose call is held by an instance that is gone is told to make the call again', async t => {
  const { a, b, clusters, shared } = await twoInstances(t)
  const { asked, id } = await firstRound(a)
  await a.close()
  await clusters[0]?.close()
  // Its heartbeat lapsed, as after a crash once the TTL passes.
  await shared.sessions.beat(a.rounds.instanceId, -1)
  await t.rejects(
    askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), b.rounds),
    { code: -32602, message: 'Invalid or expired requestState: the gateway instance that held the call is gone; make the call again', data: { reason: 'invalid_request_state' } }
  )
  t.equal(shared.broker.channelCount, 1, "only b's round channel is left")
})

t.test('a retry whose instance does not answer within the call timeout is told to make the call again', async t => {
  const { a, b, shared } = await twoInstances(t)
  const { asked, id } = await firstRound(a)
  // Alive, but no longer taking rounds (a stuck or partitioned instance).
  await a.close()
  // The forwarder's timer is unref()ed, as the gateway's timers are (its HTTP server keeps
  // the process alive); this handle stands in for that server while the test waits.
  const server = setInterval(() => {}, 1000)
  t.teardown(() => { clearInterval(server) })
  await t.rejects(
    askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada, [], 50), greeting(), b.rounds),
    { code: -32602, message: 'Invalid or expired requestState: the gateway instance that holds the call did not answer in time; make the call again' }
  )
  t.equal(shared.broker.channelCount, 1, "the reply channel is gone; only b's round channel is left")
})

t.test("an upstream's failure during a forwarded round reaches the client as it would from the instance that holds the call", async t => {
  const { a, b } = await twoInstances(t)
  const failing = async (call: RelayOptions): Promise<Record<string, unknown>> => {
    await call.downstream?.send({ method: 'elicitation/create', params: { message: 'Your name?', requestedSchema: { type: 'object' } } })
    throw new ProtocolError(-32000, 'the upstream gave up', { why: 'test' })
  }
  const asked = await askingRound(ctxFor(ada), optionsFor(ada), failing, a.rounds) as unknown as Asked
  const [id] = Object.keys(asked.inputRequests) as [string]
  await t.rejects(askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), failing, b.rounds), { code: -32000, message: 'the upstream gave up', data: { why: 'test' } })
})

t.test('a cancelled retry cancels the call it forwarded to', async t => {
  const { a, b } = await twoInstances(t)
  let answered!: () => void
  const upstreamAnswered = new Promise<void>(resolve => { answered = resolve })
  let cancelled!: () => void
  const upstreamCancelled = new Promise<void>(resolve => { cancelled = resolve })
  const stuck = async (call: RelayOptions): Promise<Record<string, unknown>> => {
    await call.downstream?.send({ method: 'elicitation/create', params: { message: 'Your name?', requestedSchema: { type: 'object' } } })
    answered()
    // Answered, then the upstream works until it is cancelled.
    return await new Promise((_resolve, reject) => { call.signal?.addEventListener('abort', () => { cancelled(); reject(new Error('aborted')) }) })
  }
  const asked = await askingRound(ctxFor(ada), optionsFor(ada), stuck, a.rounds) as unknown as Asked
  const [id] = Object.keys(asked.inputRequests) as [string]
  const controller = new AbortController()
  const retry = askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), { ...optionsFor(ada), signal: controller.signal }, stuck, b.rounds)
  // The round runs on a (the answer reached the upstream); the client then cancels on b.
  await upstreamAnswered
  controller.abort()
  await t.rejects(retry, { code: 'ABORTED' })
  await upstreamCancelled
  t.equal(a.rounds.size, 0, 'the upstream call held on the other instance was cancelled, and no longer waits')
})

t.test('closing the instances leaves no subscription behind', async t => {
  const shared = memoryClusterParts()
  const clusters = [memoryCluster({ shared }), memoryCluster({ shared })]
  const [a, b] = clusters.map(cluster => new RoundForwarder(cluster)) as [RoundForwarder, RoundForwarder]
  await Promise.all([a.start(), b.start(), a.start()])
  t.equal(shared.broker.channelCount, 2, 'one round channel per instance, however often started')
  t.not(roundsChannel(a.rounds.instanceId), roundsChannel(b.rounds.instanceId), 'each instance keeps its own id')
  const { asked, id } = await firstRound(a)
  await askingRound(ctxFor(ada, { requestState: asked.requestState, inputResponses: answersFor(id, 'Ada') }), optionsFor(ada), greeting(), b.rounds)
  await Promise.all([a.close(), b.close()])
  await Promise.all(clusters.map(async cluster => { await cluster.close() }))
  t.equal(shared.broker.channelCount, 0)
})
