import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import { EventEmitter, once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { startCluster, type Cluster } from './cluster.js'
import { startRedis } from './redis.js'
import { alive, json, legacyRequest, mcpHeaders, modernMeta, modernRequest, text } from './helper.js'

// Several gateway instances behind one round-robin nginx, sharing Redis: what a client sees
// when each of its requests may land on another instance, when an instance dies mid-call,
// and when Redis goes away for a while. One client's consecutive requests alternate between
// the instances (plain round-robin, one nginx worker, no other traffic through nginx).

const SERVERS = fileURLToPath(new URL('./fixtures/servers.ts', import.meta.url))
const SLOW = fileURLToPath(new URL('./fixtures/cluster-slow-progress.mjs', import.meta.url))

const CONFIG = {
  mcpServers: {
    math: { builtin: 'math' },
    progress: { module: SERVERS, export: 'createProgressServer' },
    asker: { module: SERVERS, export: 'createAskingServer' },
    slow: { module: SLOW, export: 'createServer' }
  }
}

/** Deadline for what the tests wait on (a stream, a recovery): generous, never a timing assertion. */
const DEADLINE_MS = 10_000

async function legacyClient (t: Test, url: string, handlers: { elicit?: string } = {}): Promise<{ client: LegacyClient, transport: LegacyTransport }> {
  const client = new LegacyClient({ name: 'cluster-v1', version: '1.0.0' }, { capabilities: { elicitation: {} } })
  if (handlers.elicit !== undefined) {
    const name = handlers.elicit
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name } }))
  }
  // Resumption retried quickly and a few times: the first GET with Last-Event-ID may go to the
  // instance that just died (nginx then moves it to the next one).
  const transport = new LegacyTransport(new URL(url), { reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 5 } })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport }
}

async function modernClient (t: Test, url: string, handlers: { elicit?: string } = {}): Promise<{ client: Client, transport: StreamableHTTPClientTransport }> {
  // The v2 SDK's default negotiation is the 2025 `initialize` handshake: a session.
  const client = new Client({ name: 'cluster-v2', version: '1.0.0' }, { capabilities: { elicitation: { form: {} } } })
  if (handlers.elicit !== undefined) {
    const name = handlers.elicit
    client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name } }))
  }
  const transport = new StreamableHTTPClientTransport(new URL(url))
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport }
}

/** The number of `mcp call` audit lines each instance has logged for this tool. */
function callsPerInstance (cluster: Cluster, name: string): number[] {
  return cluster.instances.map(instance => instance.lines().filter(line => line.msg === 'mcp call' && (line.audit as { name?: string } | undefined)?.name === name).length)
}

async function post (url: string, init: RequestInit): Promise<{ status: number, headers: Headers, body: any }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(DEADLINE_MS) })
  const raw = await res.text()
  let body: unknown = raw
  // An SSE answer carries its one message in a data line.
  const data = /^data: (.+)$/m.exec(raw)?.[1]
  try { body = JSON.parse(data ?? raw) } catch {}
  return { status: res.status, headers: res.headers, body }
}

/** A 2025 session opened by hand (initialize, then initialized); the headers each request of it carries. */
async function openSession (url: string): Promise<Record<string, string>> {
  const init = await post(url, legacyRequest('initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } }))
  const sessionId = init.headers.get('mcp-session-id')
  if (init.status !== 200 || sessionId === null) throw new Error(`initialize answered ${init.status}: ${JSON.stringify(init.body)}`)
  const headers = { ...mcpHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  const ack = await post(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  if (ack.status !== 202) throw new Error(`notifications/initialized answered ${ack.status}`)
  return headers
}

let nextId = 100
const sessionCall = (headers: Record<string, string>, name: string, args: Record<string, unknown>): RequestInit =>
  ({ method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name, arguments: args } }) })

/** A `subscriptions/listen` stream (2026-07-28) for tool list changes; `next` resolves with its next message. */
async function listenStream (t: Test, url: string): Promise<{ next: () => Promise<{ method?: string }> }> {
  const controller = new AbortController()
  t.teardown(() => { controller.abort() })
  const res = await fetch(url, {
    method: 'POST',
    signal: controller.signal,
    headers: { ...mcpHeaders, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 'listen', method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true }, _meta: modernMeta } })
  })
  if (res.status !== 200) throw new Error(`subscriptions/listen answered ${res.status}: ${await res.text()}`)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  const next = async (): Promise<{ method?: string }> => {
    for (;;) {
      const end = buffered.indexOf('\n\n')
      if (end !== -1) {
        const frame = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        const data = frame.split('\n').find(line => line.startsWith('data: '))
        if (data !== undefined) return JSON.parse(data.slice(6)) as { method?: string }
        continue
      }
      const { value, done } = await reader.read()
      if (done) throw new Error('the listen stream ended')
      buffered += decoder.decode(value, { stream: true })
    }
  }
  return { next }
}

/** Rejects after `ms` with `what`: a deadline, so a missing feature fails the test instead of hanging it. */
async function within<T> (promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  // Left behind when the deadline wins; its later rejection (a stream aborted at teardown) is nobody's.
  promise.catch(() => {})
  const deadline = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no ${what} within ${ms} ms`)) }, ms) })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

t.test('the harness: stateless REST calls through nginx alternate between the instances (no Redis)', async t => {
  const cluster = await startCluster(t, { instances: 2, redis: false })
  for (let i = 0; i < 4; i++) {
    const res = await post(`${cluster.url}/math/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: i, b: 1 }) })
    t.equal(res.status, 200)
    t.same(res.body.structuredContent, { sum: i + 1 })
  }
  // The audit lines are written after the answers (asynchronously): wait for all four (bounded), then compare.
  const logged = (): boolean => callsPerInstance(cluster, 'add').reduce((a, b) => a + b, 0) >= 4
  if (!logged()) await within(Promise.race(cluster.instances.map(async instance => await instance.logged(logged))), 'audit lines of the four calls')
  t.same(callsPerInstance(cluster, 'add'), [2, 2], 'round-robin: two calls on each instance')
  const pids = cluster.instances.map(instance => instance.pid as number)
  await cluster.stop()
  t.notOk(pids.some(alive), 'every instance stopped by its PID')
  t.equal(cluster.nginxPid, undefined, 'and nginx')
})


// Scenarios 1–3: 2025 sessions over three instances sharing one Redis. One cluster for the
// three (starting instances is most of this file's time); the kill comes last.
t.test('2025 sessions over three instances sharing Redis', async t => {
  const redis = await startRedis(t)
  const cluster = await startCluster(t, { instances: 3, redis, config: CONFIG })

  t.test('a session whose every request lands on another instance: list, call, progress, DELETE', async t => {
    t.test('SDK v1', async t => {
      const { client, transport } = await legacyClient(t, `${cluster.url}/progress/mcp`)
      t.same((await client.listTools()).tools.map(tool => tool.name).sort(), ['count', 'hold'])
      const before = callsPerInstance(cluster, 'count')
      const seen: number[] = []
      const result = await client.callTool({ name: 'count', arguments: { label: 'sheep' } }, undefined, { onprogress: progress => { seen.push(progress.progress) } })
      t.equal(text(result), 'counted sheep')
      t.same(seen, [1, 2, 3], 'every progress notification, once, in order')
      t.equal(text(await client.callTool({ name: 'count', arguments: { label: 'goats' } })), 'counted goats')
      // The audit lines are written after the answers: wait for both (bounded), then compare.
      const total = (counts: number[]): number => counts.reduce((a, b) => a + b, 0)
      const logged = (): boolean => total(callsPerInstance(cluster, 'count')) >= total(before) + 2
      if (!logged()) await within(Promise.race(cluster.instances.map(async instance => await instance.logged(logged))), 'audit lines of the two calls')
      const ran = callsPerInstance(cluster, 'count').map((n, i) => n - (before[i] as number))
      t.same(ran.filter(n => n > 0), [1, 1], 'the two calls ran on two different instances')
      await transport.terminateSession()
      t.equal(transport.sessionId, undefined, 'DELETE ended the session')
    })

    t.test('SDK v2', async t => {
      const { client, transport } = await modernClient(t, `${cluster.url}/progress/mcp`)
      t.same((await client.listTools()).tools.map(tool => tool.name).sort(), ['count', 'hold'])
      const seen: number[] = []
      t.equal(text(await client.callTool({ name: 'count', arguments: { label: 'cows' } }, { onprogress: progress => { seen.push(progress.progress) } })), 'counted cows')
      t.same(seen, [1, 2, 3])
      t.equal(text(await client.callTool({ name: 'count', arguments: { label: 'pigs' } })), 'counted pigs')
      await transport.terminateSession()
      t.equal(transport.sessionId, undefined)
    })

    t.test('after a DELETE on one instance the session is unknown on every instance', async t => {
      const headers = await openSession(`${cluster.url}/math/mcp`)
      // A call on each instance first, so each has the session in hand when it is deleted.
      for (let i = 0; i < 3; i++) t.equal((await post(`${cluster.url}/math/mcp`, sessionCall(headers, 'add', { a: 1, b: 2 }))).status, 200)
      t.equal((await post(`${cluster.url}/math/mcp`, { method: 'DELETE', headers })).status, 200)
      const after: number[] = []
      for (let i = 0; i < 3; i++) after.push((await post(`${cluster.url}/math/mcp`, sessionCall(headers, 'add', { a: 1, b: 2 }))).status)
      t.same(after, [404, 404, 404], 'one call on each instance: 404')
    })
  })

  t.test('an elicitation whose answer lands on another instance', async t => {
    // The call's POST goes to one instance, the answer's POST to the next: one client, round-robin.
    t.test('SDK v1', async t => {
      const { client } = await legacyClient(t, `${cluster.url}/asker/mcp`, { elicit: 'Ada' })
      t.equal(text(await client.callTool({ name: 'askName', arguments: {} }, undefined, { timeout: DEADLINE_MS })), 'Hello, Ada!')
      t.equal(text(await client.callTool({ name: 'askName', arguments: {} }, undefined, { timeout: DEADLINE_MS })), 'Hello, Ada!', 'and again, on the next pair of instances')
    })
    t.test('SDK v2', async t => {
      const { client } = await modernClient(t, `${cluster.url}/asker/mcp`, { elicit: 'Grace' })
      t.equal(text(await client.callTool({ name: 'askName', arguments: {} }, { timeout: DEADLINE_MS })), 'Hello, Grace!')
      t.equal(text(await client.callTool({ name: 'askName', arguments: {} }, { timeout: DEADLINE_MS })), 'Hello, Grace!')
    })
  })

  /**
   * Calls `tool` with a progress token and SIGKILLs the instance running it after its second
   * progress event (the event names it); the client resumes on another instance. Resolves
   * with the killed PID, the progress the client saw, and how the call ended.
   */
  const killMidStream = async (client: LegacyClient, tool: string): Promise<{ pid: number | undefined, progress: number[], settled: { result: Awaited<ReturnType<LegacyClient['callTool']>> } | { err: Error & { code?: number } } }> => {
    const seen: Array<{ progress: number, message?: string }> = []
    let killed: Promise<number> | undefined
    const settled = await client.callTool({ name: tool, arguments: { steps: 12, intervalMs: 150 } }, undefined, {
      // The resume waits for the killed instance's heartbeat to lapse (HEARTBEAT_TTL_MS, then
      // a check every HEARTBEAT_MS), and a re-run takes as long as the call: a deadline, not a measure.
      timeout: 3 * DEADLINE_MS,
      onprogress: progress => {
        seen.push(progress)
        // After the second event: kill the instance that runs the call, named in the event.
        if (seen.length !== 2) return
        const pid = Number(/pid (\d+)/.exec(progress.message ?? '')?.[1])
        const running = cluster.instances.find(instance => instance.pid === pid)
        killed = running === undefined ? Promise.reject(new Error(`no instance has pid ${pid}`)) : running.kill('SIGKILL').then(() => pid)
      }
    }).then(result => ({ result }), (err: Error & { code?: number }) => ({ err }))
    return { pid: await killed, progress: seen.map(event => event.progress), settled }
  }

  t.test('the instance running a call is SIGKILLed mid-stream: the client resumes on another, each progress event once, and the session goes on', async t => {
    const { client } = await legacyClient(t, `${cluster.url}/slow/mcp`)

    await t.test('a tool annotated idempotent runs again on the instance the client resumed on: progress 1..N once each, then the result', async t => {
      const { pid, progress, settled } = await killMidStream(client, 'slow')
      t.ok(pid !== undefined && !alive(pid), 'the instance that ran the call was killed')
      t.same(progress, Array.from({ length: 12 }, (_value, i) => i + 1), 'every progress event exactly once, in order')
      t.ok('result' in settled, `the call ended with its result: ${'err' in settled ? settled.err.message : ''}`)
      if ('result' in settled) {
        const ranIn = Number(/^done in (\d+)$/.exec(text(settled.result))?.[1])
        t.ok(ranIn > 0 && ranIn !== pid, 'run again by a surviving instance')
      }
    })

    await t.test('a tool not annotated idempotent is not run again: the call ends with a JSON-RPC error', async t => {
      const { pid, progress, settled } = await killMidStream(client, 'slowOnce')
      t.ok(pid !== undefined && !alive(pid), 'the instance that ran the call was killed')
      t.ok(progress.length >= 2, 'the events before the kill arrived')
      t.same(progress, progress.map((_value, i) => i + 1), 'each progress event exactly once, in order, none lost before the last one seen')
      t.ok('err' in settled, 'no result')
      // A JSON-RPC error from the gateway, not the client's own timeout (-32001) for a call never answered.
      if ('err' in settled) t.match(settled.err, { code: -32000, message: /stopped before answering/ }, 'the gateway\'s error')
    })

    // The session outlives the instances: the next calls work, on the surviving one.
    const killed = cluster.instances.filter(instance => instance.pid === undefined).length
    t.equal(killed, 2, 'two instances were killed')
    for (let i = 0; i < 2; i++) {
      const answer = await client.callTool({ name: 'pid', arguments: {} }, undefined, { timeout: DEADLINE_MS })
      t.ok(alive(Number(text(answer))), 'the session answers on a surviving instance')
    }
  })
})

// Scenarios 4–6 on one cluster of two: the rate limit, then a reload of one instance, then
// Redis stopped and started (last, since Redis comes back empty).
const LIMITED = 4
const SHARED_CONFIG = {
  mcpServers: { math: { builtin: 'math' }, limited: { builtin: 'math' } },
  gateway: { rateLimit: { max: 100_000, timeWindow: '1 minute', servers: { limited: { max: LIMITED } } } }
}

t.test('shared state across two instances', async t => {
  const redis = await startRedis(t)
  const cluster = await startCluster(t, { instances: 2, redis, config: SHARED_CONFIG })

  t.test('a rate limit holds across instances', async t => {
    const statuses: number[] = []
    let last: Awaited<ReturnType<typeof post>> | undefined
    for (let i = 0; i <= LIMITED; i++) {
      last = await post(`${cluster.url}/limited/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: i, b: 1 }) })
      statuses.push(last.status)
    }
    t.same(statuses, [...Array(LIMITED).fill(200), 429], `${LIMITED} calls over both instances pass, the next is refused`)
    t.ok(last?.headers.get('retry-after'), 'with Retry-After')
    t.match(last?.body, { statusCode: 429, code: String })
  })

  t.test('list_changed after a reload of one instance reaches listeners on every instance', async t => {
    // Opened one after the other, so round-robin spreads them: the two listen streams land on
    // one instance each, and so do the two 2025 sessions' GET streams (initialize,
    // initialized, GET: three requests each).
    const listeners = [await listenStream(t, `${cluster.url}/mcp`), await listenStream(t, `${cluster.url}/mcp`)]
    for (const listener of listeners) t.match(await within(listener.next(), 'acknowledgement'), { method: 'notifications/subscriptions/acknowledged' })
    const sessions = [await legacyClient(t, `${cluster.url}/mcp`), await legacyClient(t, `${cluster.url}/mcp`)]
    const told = sessions.map(({ client }) => new Promise<void>(resolve => { client.setNotificationHandler(ToolListChangedNotificationSchema, () => { resolve() }) }))
    const heard = listeners.map(async listener => await listener.next())

    // Only instance 0 reloads: a stream on instance 1 can only hear of it through Redis.
    writeFileSync(cluster.configFile, JSON.stringify({ ...SHARED_CONFIG, mcpServers: { ...SHARED_CONFIG.mcpServers, greet: { builtin: 'greet' } } }))
    const [first] = cluster.instances
    first?.signal('SIGHUP')
    await within(first?.logged(line => line.msg === 'config reloaded') ?? Promise.reject(new Error('no instance')), 'reload of instance 0')
    const waits: Array<Promise<{ method?: string } | void>> = [...told, ...heard]
    const outcomes = await Promise.all(waits.map(async (waiting, i) => await within(waiting, `list_changed on listener ${i}`).then(message => message ?? { method: 'notifications/tools/list_changed' }, (err: Error) => err)))
    t.test('2025 sessions (GET streams)', async t => {
      for (const [i, outcome] of outcomes.slice(0, 2).entries()) t.notOk(outcome instanceof Error, `session ${i} told: ${String(outcome)}`)
    })
    t.test('2026-07-28 subscriptions/listen', async t => {
      for (const [i, outcome] of outcomes.slice(2).entries()) t.match(outcome, { method: 'notifications/tools/list_changed' }, `listen stream ${i} told`)
    })
  })

  t.test('Redis stopped and started under load: no instance dies, stateless calls go on, sessions answer 503 while it is down', async t => {
    const pids = cluster.instances.map(instance => instance.pid as number)
    const mcp = `${cluster.url}/math/mcp`
    const headers = await openSession(mcp)
    t.equal((await post(mcp, sessionCall(headers, 'add', { a: 1, b: 1 }))).status, 200, 'the session answers with Redis up')

    // The load: REST and 2026-07-28 calls, one after the other, until told to stop (bounded).
    const failures: string[] = []
    let done = 0
    let stop = false
    const rounds = new EventEmitter()
    const load = (async () => {
      for (let i = 0; i < 5000 && !stop; i++) {
        const rest = await post(`${cluster.url}/math/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: i, b: 1 }) }).catch((err: Error) => ({ status: 0, body: err.message }))
        if (rest.status !== 200) failures.push(`REST ${rest.status} ${JSON.stringify(rest.body)}`)
        const modern = await post(mcp, modernRequest('tools/call', { name: 'add', arguments: { a: i, b: 1 } })).catch((err: Error) => ({ status: 0, body: err.message }))
        if (modern.status !== 200 || (modern.body as { result?: unknown }).result === undefined) failures.push(`2026 ${modern.status} ${JSON.stringify(modern.body)}`)
        done++
        rounds.emit('round')
      }
    })()

    await redis.stop()
    // A new session needs Redis: while it is down, initialize answers 503 with Retry-After and
    // a JSON body with a code (polled: the instances notice the loss within a moment).
    let down: Awaited<ReturnType<typeof post>> | undefined
    for (const deadline = Date.now() + DEADLINE_MS; Date.now() < deadline;) {
      down = await post(mcp, legacyRequest('initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } }))
      if (down.status === 503) break
    }
    t.equal(down?.status, 503, `a new session answers 503 while Redis is down: ${JSON.stringify(down?.body)}`)
    t.ok(down?.headers.get('retry-after'), 'with Retry-After')
    // On an MCP endpoint the body is a JSON-RPC error whose data names the gateway's code; the
    // REST shape has it at the top level.
    t.match(down?.body?.code ?? down?.body?.error?.data?.code, /^GW_ERR_/, `and a JSON body with the gateway's error code: ${JSON.stringify(down?.body)}`)
    // The open session, on each instance: 503 likewise, or answered from what the instance
    // already holds of it; never another error.
    for (let i = 0; i < 2; i++) {
      const open = await post(mcp, sessionCall(headers, 'add', { a: 2, b: 2 }))
      if (open.status === 200) t.pass('the open session answered from the instance\'s own state')
      else t.match({ status: open.status, retryAfter: open.headers.get('retry-after'), body: open.body }, { status: 503, retryAfter: String, body: { error: { data: { code: /^GW_ERR_/ } } } }, 'the open session: 503 with Retry-After and a code')
    }
    // Both instances keep serving stateless calls while Redis is down: a few more rounds (each
    // round's two calls land on both instances).
    for (let i = 0; i < 4; i++) await within(once(rounds, 'round'), 'round of load while Redis is down')

    await redis.start()
    // Back: sessions work again (a new one; Redis came back empty, so the old one may be gone).
    let again: Awaited<ReturnType<typeof post>> | undefined
    for (const deadline = Date.now() + DEADLINE_MS; Date.now() < deadline;) {
      try {
        again = await post(mcp, sessionCall(await openSession(mcp), 'add', { a: 3, b: 3 }))
        if (again.status === 200) break
      } catch {}
    }
    t.equal(again?.status, 200, 'a session works again once Redis is back')
    const old = await post(mcp, sessionCall(headers, 'add', { a: 4, b: 4 }))
    t.ok(old.status === 200 || old.status === 404, `the old session answers or is unknown (Redis came back empty), not an error: ${old.status}`)

    stop = true
    await load
    t.same(failures.slice(0, 5), [], `every REST and 2026-07-28 call succeeded (${done} rounds)`)
    t.same(pids.map(alive), pids.map(() => true), 'no instance died')
    t.same(cluster.instances.map(instance => instance.pid), pids, 'none was restarted')
  })
})
