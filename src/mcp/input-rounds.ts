import { randomBytes, randomUUID } from 'node:crypto'
import {
  CLIENT_CAPABILITIES_META_KEY,
  createRequestStateCodec,
  isInputRequiredResult,
  ProtocolError,
  ProtocolErrorCode,
  type AuthInfo,
  type RequestStateCodec,
  type ServerContext
} from '@modelcontextprotocol/server'
import type { Downstream, McpMessage, RelayOptions } from '../connections/connection.js'
import { askDownstream, QUESTIONS } from './protocol.js'

// A 2025-era server asks its client for input with a server→client request in the middle of
// a call (elicitation, sampling, roots). A 2026-07-28 client cannot receive one: that revision
// answers the call with `input_required` instead, and the client makes the call again with the
// answers. This module translates the one into the other, so 2026-07-28 clients can use the
// servers people run today: the upstream call stays open in the gateway between rounds, its
// questions go out as `inputRequests`, and the answers of the next round go back upstream as
// the results of those requests. The call stays open on the instance that started it; a
// retry that reaches another instance of a cluster is taken there (`round-forwarding.ts`).
//
// The other direction is here too (`fulfilInputRequired`): a 2026-07-28 upstream asks with
// `input_required`, and a 2025-era client of the gateway can only be asked with server→client
// requests, so the gateway asks them on the client's session and makes the call again with
// the answers.
//
// Written here because neither side of the SDK does it for a relay: its client fulfils
// `input_required` through handlers of its own, not for a caller it relays, and its server
// turns `input_required` into server→client requests only for the handlers it runs itself.

/** Most rounds of one call before the gateway gives up: the SDK client's own default (`inputRequired.maxRounds`). */
const MAX_ROUNDS = 10

/**
 * A call to a 2026-07-28 upstream made for a caller that cannot receive `input_required` (a
 * 2025-era client, or REST): each round's questions are put to the caller, one after another,
 * as server→client requests on its own session (`askDownstream`; over REST there is no client
 * and the call fails with `NoClientToAskError`), and the call is made again as a new request
 * with the answers as `inputResponses` and the round's `requestState` exactly as it came
 * (none when the round had none). Every retry starts from the call's own `params`, so the
 * answers of one round never reach another round or another call.
 */
export async function fulfilInputRequired (
  params: Record<string, unknown>,
  downstream: Downstream | undefined,
  send: (params: Record<string, unknown>) => Promise<Record<string, unknown>>
): Promise<Record<string, unknown>> {
  let result = await send(params)
  for (let round = 1; isInputRequiredResult(result); round++) {
    if (round > MAX_ROUNDS) throw new ProtocolError(ProtocolErrorCode.InternalError, `The server still asked for input after ${MAX_ROUNDS} rounds of one call`)
    const questions = Object.entries(result.inputRequests ?? {})
    const inputResponses: Record<string, Record<string, unknown>> = {}
    for (const [key, request] of questions) inputResponses[key] = await askDownstream(downstream, request as McpMessage)
    result = await send({
      ...params,
      ...(questions.length > 0 && { inputResponses }),
      ...(result.requestState !== undefined && { requestState: result.requestState })
    })
  }
  return result
}

/** Marks a `requestState` minted here, so another server's state is never taken for one. */
const KEY_PREFIX = 'fastify-mcp-gateway/ask/'
/** The client capability each question needs, as the 2026-07-28 revision checks it. */
const NEEDS: Record<string, string | undefined> = Object.fromEntries(Object.entries(QUESTIONS).map(([capability, method]) => [method, capability]))

/**
 * Who a caller is, to bind what it starts (a call waiting for its answers here, a 2025-era
 * session in src/http/sessions.ts) to it: the kind of credential, the client and the subject;
 * `''` while nobody is authenticated. Never the token itself, which a client refreshes while
 * it stays the same caller.
 */
export function callerKey (authInfo: AuthInfo | undefined): string {
  if (authInfo === undefined) return ''
  const extra = authInfo.extra as { kind?: unknown, sub?: unknown } | undefined
  return JSON.stringify([extra?.kind ?? null, authInfo.clientId, typeof extra?.sub === 'string' ? extra.sub : null])
}

/**
 * The answer to a retry whose `requestState` continues nothing it may continue. A forged,
 * expired or another caller's state all answer alike, so a caller learns nothing of calls
 * that are not its own; `why` is only said once the state is known to be this caller's.
 */
export function invalidRequestState (why = 'the call it continues has ended'): ProtocolError {
  return new ProtocolError(ProtocolErrorCode.InvalidParams, `Invalid or expired requestState: ${why}; make the call again`, { reason: 'invalid_request_state' })
}

/** What one round brings to a waiting call: the client's answers, and the capabilities it declared on this request. */
export interface RoundInput {
  inputResponses: Record<string, unknown>
  capabilities: Record<string, unknown> | undefined
}

/** A round for a waiting call, by the call's key and the caller that sent it. */
export interface CallRound extends RoundInput {
  key: string
  caller: string
}

/** What a round answers: the call's result, or the questions still open (the gateway's own `input_required`). */
export type RoundAnswer = { result: Record<string, unknown> } | { inputRequests: Record<string, McpMessage> }

/** Takes a round to the gateway instance that holds its call (`round-forwarding.ts`). */
export interface RoundRelay {
  forward (instanceId: string, round: CallRound, options: RelayOptions): Promise<RoundAnswer>
}

export interface InputRoundsOptions {
  /** Names this instance in the states it mints. Default: random, a process of its own. */
  instanceId?: string
  /**
   * Seals the states (`createRequestStateCodec`, at least 32 bytes): the same on every
   * instance a retry may reach. Default: random per process, right while one process serves
   * every round.
   */
  key?: string
  /** How long a state stays valid, in seconds. Default 600, the SDK's: a call held longer than its timeout has ended anyway. */
  ttlSeconds?: number
  /** Where the rounds of calls other instances hold go. Default: none, such a retry is told to make the call again. */
  relay?: RoundRelay
}

/** The sealed `requestState`'s payload: the instance that holds the call, and the call's key there. */
interface HeldCall { i: string, k: string }

/**
 * The 2026-07-28 calls of one gateway instance that wait for their client's answers, and the
 * `requestState` that names each: sealed with the SDK's codec, bound to the caller and the
 * method, carrying the instance that holds the call and the call's key there. The payload is
 * signed, not encrypted: a client can read both ids, neither of which is a secret.
 */
export class InputRounds {
  readonly instanceId: string
  #codec: RequestStateCodec<HeldCall>
  /** Calls waiting for their client's answers, by key. */
  #waiting = new Map<string, AskingCall>()
  #relay: RoundRelay | undefined

  constructor (options: InputRoundsOptions = {}) {
    this.instanceId = options.instanceId ?? randomUUID()
    this.#relay = options.relay
    this.#codec = createRequestStateCodec<HeldCall>({
      key: options.key ?? randomBytes(32),
      ...(options.ttlSeconds !== undefined && { ttlSeconds: options.ttlSeconds }),
      // The caller as the relay sees it (`relayOptions` reads the same `ctx.http.authInfo`).
      bind: ctx => `${ctx.mcpReq.method}\0${callerKey(ctx.http?.authInfo)}`
    })
  }

  /** Calls waiting here for their client's answers. */
  get size (): number { return this.#waiting.size }

  /**
   * One round of a 2026-07-28 call that may ask its client for input: the first (`start`
   * makes the upstream call), or a retry that carries answers and the `requestState` of an
   * earlier round, continued here or on the instance that holds the call. Answers the call's
   * result, or `input_required` with the questions still open.
   */
  async round (
    ctx: ServerContext,
    options: RelayOptions,
    start: (options: RelayOptions) => Promise<Record<string, unknown>>
  ): Promise<Record<string, unknown>> {
    const state = ctx.mcpReq.requestState()
    const input: RoundInput = {
      inputResponses: ctx.mcpReq.inputResponses ?? {},
      capabilities: (ctx.mcpReq.envelope as Record<string, unknown> | undefined)?.[CLIENT_CAPABILITIES_META_KEY] as Record<string, unknown> | undefined
    }
    if (typeof state === 'string' && state.startsWith(KEY_PREFIX)) {
      const held = await this.#open(state.slice(KEY_PREFIX.length), ctx)
      const round = { ...input, key: held.k, caller: callerKey(options.authInfo) }
      let answer: RoundAnswer
      if (held.i === this.instanceId) answer = await this.continue(round, options)
      else if (this.#relay !== undefined) answer = await this.#relay.forward(held.i, round, options)
      else throw invalidRequestState()
      return await this.#answer(answer, held, ctx)
    }
    const call = new AskingCall(start, options, input, this.#waiting)
    const answer = await call.round(input, options)
    return await this.#answer(answer, { i: this.instanceId, k: call.key ?? '' }, ctx)
  }

  /** A round of a call held here: from this instance's own client, or forwarded by another instance. */
  async continue (round: CallRound, options: RelayOptions): Promise<RoundAnswer> {
    const call = this.#waiting.get(round.key)
    // Another caller's state answers as an unknown one: it must not continue (or learn of) a
    // call that is not its own. The seal binds the state to its caller already; this holds
    // for a round another instance forwarded too.
    if (call === undefined || call.caller !== round.caller) throw invalidRequestState()
    return await call.round(round, options)
  }

  async #open (sealed: string, ctx: ServerContext): Promise<HeldCall> {
    let held: unknown
    try {
      held = await this.#codec.verify(sealed, ctx)
    } catch {
      // Forged, expired, another caller's or another method's: the codec's reason stays here.
      throw invalidRequestState()
    }
    const { i, k } = (held ?? {}) as Partial<HeldCall>
    if (typeof i !== 'string' || typeof k !== 'string') throw invalidRequestState()
    return { i, k }
  }

  async #answer (answer: RoundAnswer, held: HeldCall, ctx: ServerContext): Promise<Record<string, unknown>> {
    if ('result' in answer) return answer.result
    return { resultType: 'input_required', inputRequests: answer.inputRequests, requestState: KEY_PREFIX + await this.#codec.mint(held, ctx) }
  }
}

/** The rounds of a gateway that runs alone: its calls in this process, its states sealed with a key of its own. */
const localRounds = new InputRounds()

/**
 * One round of a 2026-07-28 call that may ask its client for input (see `InputRounds.round`),
 * through `rounds` (an instance of a cluster, `round-forwarding.ts`) or, by default, this
 * process alone: a retry that reaches another gateway instance is then told to make the call again.
 */
export async function askingRound (
  ctx: ServerContext,
  options: RelayOptions,
  start: (options: RelayOptions) => Promise<Record<string, unknown>>,
  rounds: InputRounds = localRounds
): Promise<Record<string, unknown>> {
  return await rounds.round(ctx, options, start)
}

interface Question {
  request: McpMessage
  answered: boolean
  resolve: (result: Record<string, unknown>) => void
  reject: (err: Error) => void
}

type Outcome = { result: Record<string, unknown> } | { error: unknown }

class AskingCall {
  /** The caller that made the call (`callerKey`): only its retries continue it. */
  readonly caller: string
  /** Minted with the first question: a call that asks nothing costs no entry in `waiting`. */
  #key: string | undefined
  #waiting: Map<string, AskingCall>
  #questions = new Map<string, Question>()
  #outcome: Outcome | undefined
  /** Wake the rounds waiting for the next question or the outcome (a client may retry twice). */
  #waiters: Array<() => void> = []
  /** The round in progress: where the upstream's progress and log messages go. */
  #round: RelayOptions
  #capabilities: Record<string, unknown> | undefined
  #controller = new AbortController()
  #ids = 0

  constructor (start: (options: RelayOptions) => Promise<Record<string, unknown>>, first: RelayOptions, input: RoundInput, waiting: Map<string, AskingCall>) {
    this.#round = first
    // Before the call starts: its first question may come at once.
    this.#capabilities = input.capabilities
    this.#waiting = waiting
    this.caller = callerKey(first.authInfo)
    // The call outlives the round that started it, so it has its own signal; a round that is
    // cancelled while it waits cancels the call (see `round`).
    start({
      signal: this.#controller.signal,
      ...(first.timeoutMs !== undefined && { timeoutMs: first.timeoutMs }),
      ...(first.authInfo !== undefined && { authInfo: first.authInfo }),
      ...(first.origin !== undefined && { origin: first.origin }),
      modern: true,
      onProgress: progress => { this.#round.onProgress?.(progress) },
      downstream: {
        send: async request => await this.#ask(request),
        notify: async notification => { await this.#round.downstream?.notify(notification) }
      }
    }).then(result => { this.#end({ result }) }, (error: unknown) => { this.#end({ error }) })
  }

  /** The key of this call among the waiting ones, once it asked something. */
  get key (): string | undefined { return this.#key }

  async round (input: RoundInput, options: RelayOptions): Promise<RoundAnswer> {
    this.#round = options
    this.#capabilities = input.capabilities
    for (const [id, question] of this.#questions) {
      const answer = input.inputResponses[id]
      if (question.answered || answer === undefined || answer === null || typeof answer !== 'object') continue
      question.answered = true
      question.resolve(answer as Record<string, unknown>)
    }
    const onAbort = (): void => { this.#controller.abort(options.signal?.reason) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      for (;;) {
        if (this.#outcome !== undefined) {
          if ('error' in this.#outcome) throw this.#outcome.error
          return { result: this.#outcome.result }
        }
        // A question left unanswered is asked again, as a 2026-07-28 server would.
        const open = [...this.#questions].filter(([, question]) => !question.answered)
        if (open.length > 0) return { inputRequests: Object.fromEntries(open.map(([id, question]) => [id, question.request])) }
        await new Promise<void>(resolve => { this.#waiters.push(resolve) })
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
    }
  }

  /** The upstream's question: held until a round carries its answer. */
  async #ask (request: McpMessage): Promise<Record<string, unknown>> {
    const needed = NEEDS[request.method]
    if (needed === undefined || this.#capabilities?.[needed] === undefined) {
      throw new ProtocolError(ProtocolErrorCode.InternalError, `'${request.method}' cannot be forwarded: the client (MCP 2026-07-28) did not declare the ${needed ?? request.method} capability on its request`)
    }
    if (this.#key === undefined && this.#outcome === undefined) {
      this.#key = randomUUID()
      this.#waiting.set(this.#key, this)
    }
    const id = `${request.method.replace('/', '_')}_${++this.#ids}`
    return await new Promise((resolve, reject) => {
      this.#questions.set(id, { request, answered: false, resolve, reject })
      this.#wakeRound()
    })
  }

  #end (outcome: Outcome): void {
    this.#outcome = outcome
    if (this.#key !== undefined) this.#waiting.delete(this.#key)
    for (const question of this.#questions.values()) {
      if (!question.answered) question.reject(new ProtocolError(ProtocolErrorCode.InternalError, 'The call ended before the client answered'))
    }
    this.#wakeRound()
  }

  #wakeRound (): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }
}
