import { randomUUID } from 'node:crypto'
import {
  CLIENT_CAPABILITIES_META_KEY,
  isInputRequiredResult,
  ProtocolError,
  ProtocolErrorCode,
  type AuthInfo,
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
// the results of those requests.
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
 * Calls waiting for their client's answers, by `requestState`. In this process only: a retry
 * that reaches another gateway instance is told to make the call again (run replicas with
 * sticky routing, or let such calls fail over that way).
 */
const waiting = new Map<string, AskingCall>()

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
 * One round of a 2026-07-28 call that may ask its client for input: the first (`start` makes
 * the upstream call), or a retry that carries answers and the `requestState` of an earlier
 * round. Answers the call's result, or `input_required` with the questions still open.
 */
export async function askingRound (
  ctx: ServerContext,
  options: RelayOptions,
  start: (options: RelayOptions) => Promise<Record<string, unknown>>
): Promise<Record<string, unknown>> {
  const state = ctx.mcpReq.requestState()
  if (typeof state === 'string' && state.startsWith(KEY_PREFIX)) {
    const call = waiting.get(state)
    // Another caller's `requestState` answers as an unknown one: it must not continue (or
    // learn of) a call that is not its own.
    if (call === undefined || call.caller !== callerKey(options.authInfo)) {
      throw new ProtocolError(ProtocolErrorCode.InvalidParams, 'Invalid or expired requestState: the call it continues has ended, or was made through another gateway instance; make the call again', { reason: 'invalid_request_state' })
    }
    return await call.round(ctx, options)
  }
  return await new AskingCall(start, options).round(ctx, options)
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
  #questions = new Map<string, Question>()
  #outcome: Outcome | undefined
  /** Wake the rounds waiting for the next question or the outcome (a client may retry twice). */
  #waiters: Array<() => void> = []
  /** The round in progress: where the upstream's progress and log messages go. */
  #round: RelayOptions
  #capabilities: Record<string, unknown> | undefined
  #controller = new AbortController()
  #ids = 0

  constructor (start: (options: RelayOptions) => Promise<Record<string, unknown>>, first: RelayOptions) {
    this.#round = first
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

  async round (ctx: ServerContext, options: RelayOptions): Promise<Record<string, unknown>> {
    this.#round = options
    this.#capabilities = (ctx.mcpReq.envelope as Record<string, unknown> | undefined)?.[CLIENT_CAPABILITIES_META_KEY] as Record<string, unknown> | undefined
    const answers = ctx.mcpReq.inputResponses ?? {}
    for (const [id, question] of this.#questions) {
      const answer = answers[id]
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
          return this.#outcome.result
        }
        // A question left unanswered is asked again, as a 2026-07-28 server would.
        const open = [...this.#questions].filter(([, question]) => !question.answered)
        if (open.length > 0) {
          return {
            resultType: 'input_required',
            inputRequests: Object.fromEntries(open.map(([id, question]) => [id, question.request])),
            requestState: this.#key
          }
        }
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
    if (this.#key === undefined) {
      this.#key = `${KEY_PREFIX}${randomUUID()}`
      waiting.set(this.#key, this)
    }
    const id = `${request.method.replace('/', '_')}_${++this.#ids}`
    return await new Promise((resolve, reject) => {
      this.#questions.set(id, { request, answered: false, resolve, reject })
      this.#wakeRound()
    })
  }

  #end (outcome: Outcome): void {
    this.#outcome = outcome
    if (this.#key !== undefined) waiting.delete(this.#key)
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
