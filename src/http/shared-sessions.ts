// 2025-era sessions that several gateway instances serve (`GatewayOptions.cluster`): the
// session's record in the shared store, the broker channel its replicas talk on, and the
// resumption of a POST stream that another instance runs. `SessionTable` uses it only when
// a cluster is given; a gateway alone never loads any of it into its hot path.
//
// What is stored: one `SessionRecord` per session (the client's `initialize`, its caller,
// its owner, its log level), expiring after `sessionIdleMs` unused; the events of
// resumable POST streams, and what each stream answers (its requests too, when small, so
// that an idempotent tool call whose instance died can run again on the instance the client
// resumes on). What travels on the broker, on
// `session:<id>`: client messages whose request lives on another replica (answers to
// server→client requests, cancellations, roots list changes), server messages for the
// instance holding the GET stream, the log level, and DELETE's close.
import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JSONRPCMessage, JSONRPCRequest, RequestId, Tool } from '@modelcontextprotocol/server'
import { JsonRpcCode, StoreUnavailableError, toJsonRpcError } from '../errors.js'
import { HEARTBEAT_MS, type Cluster } from '../stores/cluster.js'
import { parseEventId, type StreamInfo } from '../stores/event-store.js'
import type { SessionRecord } from '../stores/session-store.js'
import { keepAlive, type SessionPeer } from './session-transport.js'
import { hijack, rejectJsonRpc, sseFrame, startSse } from './sse.js'

/** What one replica of a session tells the others, on the session's channel. */
export type SessionSignal =
  | { kind: 'client', message: JSONRPCMessage }
  | { kind: 'server', message: JSONRPCMessage }
  | { kind: 'level', level: string }
  | { kind: 'close' }

/** Why a session id presented here is not served here. */
export type Refusal = 'unknown' | 'unavailable' | 'pinned'

const channelOf = (id: string): string => `session:${id}`

/**
 * Largest request (the bytes of its JSON) kept with its stream for a re-run, 64 KiB: a tool
 * call's arguments are mostly small, and a stream's description is written for every
 * streamed POST, so a large upload kept with it would cost that on each. A bigger request
 * is never re-run; its client gets the error, as for any request that cannot run again.
 */
export const MAX_STORED_REQUEST_BYTES = 64 * 1024

/**
 * What a resume may ask of this instance's replica of the session, to go on with a stream
 * whose instance died: the tools it has, and running a request of the stream again.
 */
export interface Replica {
  /** The tools of the session's server here, with their annotations. */
  tools (): readonly Tool[]
  /** Whether the replica has this request in flight (an earlier resume here re-ran it). */
  running (id: RequestId): boolean
  /** Runs the request again, its messages to `send`, the answer last; false when it is in flight here already. */
  rerun (message: JSONRPCRequest, send: (message: JSONRPCMessage) => void): boolean
}

/**
 * Whether a request may run a second time: only a tool call of a tool that says so
 * (`annotations.idempotentHint`, MCP tool annotations). A hint is all the spec offers; the
 * gateway takes the server's word for it, as a client retrying the call would.
 */
function idempotent (message: JSONRPCRequest, tools: readonly Tool[]): boolean {
  if (message.method !== 'tools/call') return false
  const name = message.params?.name
  return tools.some(tool => tool.name === name && tool.annotations?.idempotentHint === true)
}

/** A progress notification's token and value, if the message is one. */
function progressOf (message: JSONRPCMessage): { token: string | number, progress: number } | undefined {
  if (!('method' in message) || message.method !== 'notifications/progress' || 'id' in message) return undefined
  const { progressToken, progress } = message.params ?? {}
  return (typeof progressToken === 'string' || typeof progressToken === 'number') && typeof progress === 'number' ? { token: progressToken, progress } : undefined
}

/** Replicas made by this process, for prefixes unique among every replica of every session. */
let replicas = 0

export class SharedSessions {
  readonly cluster: Cluster
  readonly #server: string
  readonly #pinned: boolean
  readonly #ttlMs: number
  readonly #touchEveryMs: number
  readonly #short: string
  readonly #onerror: (err: unknown, what: string) => void

  constructor (cluster: Cluster, options: { server: string, pinned: boolean, sessionIdleMs: number, onerror: (err: unknown, what: string) => void }) {
    this.cluster = cluster
    this.#server = options.server
    this.#pinned = options.pinned
    // Touches are throttled to one per quarter of the idle time per instance, so a session
    // used just before its instance's last touch would otherwise expire up to a quarter
    // early: the record lives that much longer than the idle time.
    this.#touchEveryMs = Math.max(1, Math.floor(options.sessionIdleMs / 4))
    this.#ttlMs = options.sessionIdleMs + this.#touchEveryMs
    this.#short = cluster.instanceId.replace(/-/g, '').slice(0, 8)
    this.#onerror = options.onerror
  }

  /** A new session's record, and this instance's ear on its channel; rejects when the store is unreachable. */
  async create (id: string, caller: string, initialize: Record<string, unknown>, listener: (signal: SessionSignal) => void): Promise<() => void> {
    this.#assertAvailable()
    const record: SessionRecord = { id, server: this.#server, owner: this.cluster.instanceId, caller, initialize, pinned: this.#pinned }
    const [created, subscribed] = await Promise.allSettled([this.cluster.sessions.create(record, this.#ttlMs), this.subscribe(id, listener)])
    if (created.status === 'fulfilled' && subscribed.status === 'fulfilled') return subscribed.value
    if (subscribed.status === 'fulfilled') subscribed.value()
    throw created.status === 'rejected' ? created.reason : (subscribed as PromiseRejectedResult).reason
  }

  /**
   * The record of a session another instance opened, if this caller may use it here. One
   * store round trip; a pinned session costs a second (is its owner alive?), and taking over
   * from a dead owner is done in the background.
   */
  async find (id: string, caller: string): Promise<SessionRecord | Refusal> {
    this.#assertAvailable()
    const record = await this.cluster.sessions.get(id)
    if (record === undefined || record.server !== this.#server || record.caller !== caller) return 'unknown'
    const self = this.cluster.instanceId
    if (record.pinned) {
      // Its state (an upstream connection of its own) lives only in its owner's process: a
      // dead owner took it along (the client initializes again, on 404, as the spec says);
      // a live one must get the request, which takes a load balancer routing on
      // Mcp-Session-Id. This instance cannot forward it.
      if (record.owner === self || !(await this.cluster.sessions.alive(record.owner))) return 'unknown'
      return 'pinned'
    }
    if (record.owner !== self) {
      this.cluster.sessions.alive(record.owner)
        .then(async alive => { if (!alive) await this.cluster.sessions.update(id, { owner: self }) })
        .catch(err => { this.#onerror(err, 'taking over a session') })
    }
    return record
  }

  async subscribe (id: string, listener: (signal: SessionSignal) => void): Promise<() => void> {
    const self = this.cluster.instanceId
    return await this.cluster.broker.subscribe(channelOf(id), message => {
      if (message.from !== self) listener(message.signal as SessionSignal)
    })
  }

  publish (id: string, signal: SessionSignal): void {
    this.cluster.broker.publish(channelOf(id), { from: this.cluster.instanceId, signal })
  }

  /** The session was used here: its record lives on, written at most once per quarter of the idle time per instance. */
  touch (id: string, state: { touchedAt: number }): void {
    const now = Date.now()
    if (now - state.touchedAt < this.#touchEveryMs) return
    state.touchedAt = now
    this.cluster.sessions.touch(id, this.#ttlMs).catch(err => { this.#onerror(err, 'touching a session') })
  }

  /** The client set a log level: every replica, now and later, applies it. */
  setLevel (id: string, level: string): void {
    this.cluster.sessions.update(id, { logLevel: level }).catch(err => { this.#onerror(err, 'storing a log level') })
    this.publish(id, { kind: 'level', level })
  }

  /** DELETE: the record goes, and every replica closes. */
  async delete (id: string): Promise<void> {
    this.#assertAvailable()
    await this.cluster.sessions.delete(id)
    this.publish(id, { kind: 'close' })
  }

  /** What a replica's transport needs of the other instances. */
  peer (id: string): SessionPeer {
    const prefix = `${this.#short}.${++replicas}-`
    const events = this.cluster.events
    const owner = this.cluster.instanceId
    return {
      prefix,
      forward: message => { this.publish(id, { kind: 'client', message }) },
      toStream: message => { this.publish(id, { kind: 'server', message }) },
      streamOpened: (streamId, requests) => {
        const messages = requests.filter(message => Buffer.byteLength(JSON.stringify(message)) <= MAX_STORED_REQUEST_BYTES)
        events.describe(streamId, { session: id, owner, requests: requests.map(message => message.id), messages }).catch(err => { this.#onerror(err, 'describing a stream') })
      },
      storeEvent: (streamId, message) => {
        events.storeEvent(streamId, message).catch(err => { this.#onerror(err, 'storing a stream event') })
      }
    }
  }

  /** Answers 503 with `Retry-After`: the request needs the shared store, which is unreachable. */
  unavailable (reply: FastifyReply, err?: unknown): void {
    if (err !== undefined && !(err instanceof StoreUnavailableError)) this.#onerror(err, 'the shared store failed')
    const refusal = new StoreUnavailableError('2025-era sessions')
    const rpc = toJsonRpcError(refusal, this.#server)
    reply.headers(refusal.headers)
    rejectJsonRpc(reply, refusal.statusCode ?? 503, rpc.code, rpc.message, null, rpc.data)
  }

  /**
   * Resumes, after `lastEventId`, a POST stream another instance runs (or ran): its stored
   * events, then the live ones as they are stored, each once, until every request the
   * stream carries is answered. When the instance running the requests stopped, what it
   * left unanswered is settled here: an idempotent tool call runs again on `replica`, this
   * instance's replica of the session, and its messages are stored as the stream's next
   * events (a second break resumes them too, anywhere); any other request is answered with
   * an error. False when the store knows no such stream of this session.
   */
  async resume (sessionId: string, lastEventId: string, request: FastifyRequest, reply: FastifyReply, replica?: Replica): Promise<boolean> {
    this.#assertAvailable()
    const parsed = parseEventId(lastEventId)
    if (parsed === undefined) return false
    const events = this.cluster.events
    const streamId = parsed.streamId
    const info = await events.info(streamId)
    if (info?.session !== sessionId) return false
    const pending = new Set<RequestId>(info.requests)
    // The highest progress the client got, per token: a re-run does not send it lower ones again.
    const progressSent = new Map<string | number, number>()
    const sent = (message: JSONRPCMessage): void => {
      const progress = progressOf(message)
      if (progress !== undefined && progress.progress > (progressSent.get(progress.token) ?? -Infinity)) progressSent.set(progress.token, progress.progress)
    }
    let last = parsed.seq
    let replaying = true
    const early: Array<{ seq: number, message: JSONRPCMessage }> = []
    let res: ServerResponse | undefined
    const write = (seq: number, message: JSONRPCMessage): void => {
      // Replay and follow may both bring an event: its number tells.
      if (res === undefined || seq <= last || res.writableEnded) return
      last = seq
      sent(message)
      res.write(`id: ${streamId}:${seq}\n${sseFrame(message)}`)
      if ('id' in message && ('result' in message || 'error' in message)) pending.delete(message.id as RequestId)
      if (pending.size === 0) res.end()
    }
    // Follow first, then replay: nothing stored in between is missed.
    const unfollow = await events.follow(streamId, (eventId, message) => {
      const seq = parseEventId(eventId)?.seq ?? 0
      if (replaying) early.push({ seq, message })
      else write(seq, message)
    })
    // Nothing can fail before the response is ours but the store: from here on, the stream answers.
    res = hijack(request, reply).res
    const done = new Promise<void>(resolve => { res?.once('close', resolve) })
    void done.then(unfollow)
    startSse(res, { 'mcp-session-id': sessionId })
    keepAlive(res)
    try {
      await events.replayEventsAfter(lastEventId, { send: async (eventId, message) => { write(parseEventId(eventId)?.seq ?? 0, message) } })
    } catch (err) {
      // The events after it are gone (expired, or past the stream's cap): nothing to resume.
      this.#onerror(err, 'replaying a stream')
      res.end()
      return true
    }
    replaying = false
    for (const event of early.sort((a, b) => a.seq - b.seq)) write(event.seq, event.message)

    const self = this.cluster.instanceId
    // Requests this resume re-ran or answered with an error: nobody else's to settle any more.
    const settled = new Set<RequestId>()
    // The requests whose answers will never come from the instance that ran them: it stopped,
    // or it is this one and no longer runs them (its replica was dropped).
    const orphans = async (): Promise<RequestId[]> => {
      const waiting = [...pending].filter(id => !settled.has(id))
      if (waiting.length === 0) return []
      if (info.owner === self) return waiting.filter(id => replica?.running(id) !== true)
      return (await this.#alive(info.owner)) ? [] : waiting
    }
    const settle = async (): Promise<void> => {
      const ids = await orphans()
      const out = res as ServerResponse
      if (ids.length === 0 || out.writableEnded || out.destroyed) return
      for (const id of ids) settled.add(id)
      const again = await this.#rerun(streamId, info, ids, replica, sent, progressSent)
      for (const id of ids) {
        if (again.has(id)) continue
        pending.delete(id)
        out.write(sseFrame({ jsonrpc: '2.0', id, error: { code: JsonRpcCode.ServerError, message: 'The gateway instance running this request stopped before answering' } }))
      }
      if (pending.size === 0) out.end()
    }
    if (pending.size > 0 && !res.writableEnded) await settle()
    // The owner may die while this follows its stream (SIGKILL, a crash): its heartbeat
    // lapses, and the requests still unanswered are settled here, as above.
    let watch: NodeJS.Timeout | undefined
    if (!res.writableEnded) {
      let checking = false
      watch = setInterval(() => {
        if (checking) return
        checking = true
        settle().catch(err => { this.#onerror(err, 'settling a stream') }).finally(() => { checking = false })
      }, HEARTBEAT_MS).unref()
    }
    await done
    clearInterval(watch)
    return true
  }

  /**
   * Runs again, on `replica`, the requests among `ids` that may run twice (idempotent tool
   * calls whose request the stream's description kept); resolves with their ids. The stream
   * is described first as this instance's, with those requests alone (the others are
   * answered with an error on this response), so a resume elsewhere follows the re-run
   * rather than starting its own. The re-run's messages are stored as the stream's next
   * events, but for progress the client was sent already (`progressSent`, per token, read
   * from the stream's events): progress only increases (MCP spec, progress), so the client
   * sees each value once.
   */
  async #rerun (streamId: string, info: StreamInfo, ids: RequestId[], replica: Replica | undefined, sent: (message: JSONRPCMessage) => void, progressSent: Map<string | number, number>): Promise<Set<RequestId>> {
    if (replica === undefined || info.messages === undefined) return new Set()
    const tools = replica.tools()
    const again = info.messages.filter(message => ids.includes(message.id) && idempotent(message, tools))
    if (again.length === 0) return new Set()
    const events = this.cluster.events
    try {
      await events.describe(streamId, { session: info.session, owner: this.cluster.instanceId, requests: again.map(message => message.id), messages: again })
    } catch (err) {
      this.#onerror(err, 'describing a stream')
      return new Set()
    }
    try {
      // From the stream's first event: the client got those before its Last-Event-ID too.
      await events.replayEventsAfter(`${streamId}:0`, { send: async (_eventId, message) => { sent(message) } })
    } catch (err) {
      // Its first events are no longer kept (past the stream's cap): those replayed on this response count.
      this.#onerror(err, 'reading a stream\'s progress')
    }
    for (const message of again) {
      // False: an earlier resume here re-runs it already, and its events come through the follow.
      replica.rerun(message, answer => {
        const progress = progressOf(answer)
        if (progress !== undefined) {
          if (progress.progress <= (progressSent.get(progress.token) ?? -Infinity)) return
          progressSent.set(progress.token, progress.progress)
        }
        events.storeEvent(streamId, answer).catch(err => { this.#onerror(err, 'storing a stream event') })
      })
    }
    return new Set(again.map(message => message.id))
  }

  /** Whether an instance is alive; one the store cannot tell about is taken to be (a resume waits rather than failing requests that may still answer). */
  async #alive (instanceId: string): Promise<boolean> {
    try {
      return await this.cluster.sessions.alive(instanceId)
    } catch (err) {
      this.#onerror(err, 'checking an instance')
      return true
    }
  }

  #assertAvailable (): void {
    if (!this.cluster.available) throw new StoreUnavailableError('2025-era sessions')
  }
}
