// The `input_required` rounds of a 2026-07-28 call across gateway instances. The call stays
// open on the instance that started it (its upstream request is in flight there); the
// client's retry may reach any instance, which reads the instance that holds the call from
// the sealed `requestState` and forwards the round to it over the cluster's broker: a
// request on that instance's channel, the answer on a channel of the round's own.
import { randomUUID } from 'node:crypto'
import { ProtocolError, type Progress } from '@modelcontextprotocol/server'
import type { McpMessage, RelayOptions } from '../connections/connection.js'
import { DEFAULT_TIMEOUT_MS } from '../defaults.js'
import { CallError, isGatewayError, toJsonRpcError, type CallFailure } from '../errors.js'
import type { BrokerMessage } from '../stores/broker.js'
import { HEARTBEAT_MS, type Cluster } from '../stores/cluster.js'
import { InputRounds, invalidRequestState, type CallRound, type RoundAnswer, type RoundRelay } from './input-rounds.js'
import { useInputRounds } from './relay-server.js'

/** The channel an instance takes rounds of the calls it holds on. */
export function roundsChannel (instanceId: string): string {
  return `rounds:${instanceId}`
}

export interface RoundForwarderOptions {
  /** How long a `requestState` stays valid, in seconds. Default 600 (see `InputRoundsOptions`). */
  ttlSeconds?: number
}

/**
 * The input rounds of one gateway instance of a cluster: its states sealed with the
 * cluster's `requestStateKey`, so every instance can read them; the rounds of calls held
 * elsewhere forwarded to their instance; and the responder that runs, for other instances,
 * the rounds of the calls held here (`start` takes its subscription, `close` ends it).
 */
export class RoundForwarder implements RoundRelay {
  readonly rounds: InputRounds
  #cluster: Cluster
  #started = false
  #unsubscribe: (() => void) | undefined
  #retry: NodeJS.Timeout | undefined
  /** Rounds run here for another instance, by reply channel: a cancelled retry aborts its round. */
  #serving = new Map<string, AbortController>()

  constructor (cluster: Cluster, options: RoundForwarderOptions = {}) {
    this.#cluster = cluster
    this.rounds = new InputRounds({
      instanceId: cluster.instanceId,
      key: cluster.requestStateKey,
      relay: this,
      ...(options.ttlSeconds !== undefined && { ttlSeconds: options.ttlSeconds })
    })
  }

  /**
   * Takes the rounds other instances forward here; resolves once they can arrive. A broker
   * that cannot subscribe now (Redis down at boot, which must not stop the gateway) is tried
   * again every `HEARTBEAT_MS` until it can or the forwarder closes; meanwhile a round sent
   * here times out on its sender, whose client makes the call again. Calling it again is a no-op.
   */
  async start (onerror: (err: Error) => void = () => {}): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.#subscribe(onerror)
  }

  /** Stops taking rounds; those in flight here are cancelled, which ends their calls. */
  async close (): Promise<void> {
    this.#started = false
    clearTimeout(this.#retry)
    const unsubscribe = this.#unsubscribe
    this.#unsubscribe = undefined
    unsubscribe?.()
    for (const controller of this.#serving.values()) controller.abort(new CallError('ABORTED', 'The gateway instance is closing'))
    this.#serving.clear()
  }

  async #subscribe (onerror: (err: Error) => void): Promise<void> {
    try {
      const unsubscribe = await this.#cluster.broker.subscribe(roundsChannel(this.#cluster.instanceId), message => { this.#serve(message) })
      // Closed while subscribing: nothing may be left behind.
      if (this.#started) this.#unsubscribe = unsubscribe
      else unsubscribe()
    } catch (err) {
      onerror(err as Error)
      if (this.#started) this.#retry = setTimeout(() => { void this.#subscribe(onerror) }, HEARTBEAT_MS).unref()
    }
  }

  /**
   * Runs `round` on the instance that holds its call and answers what that instance
   * answered. An instance that is gone, or silent for the call's timeout, leaves nothing to
   * continue: the client is told to make the call again.
   */
  async forward (instanceId: string, round: CallRound, options: RelayOptions): Promise<RoundAnswer> {
    if (!await this.#alive(instanceId)) throw invalidRequestState('the gateway instance that held the call is gone')
    const broker = this.#cluster.broker
    const reply = `rounds-reply:${randomUUID()}`
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    let settle!: { resolve: (answer: RoundAnswer) => void, reject: (err: unknown) => void }
    const answered = new Promise<RoundAnswer>((resolve, reject) => { settle = { resolve, reject } })
    // The answer's channel is subscribed before the round is sent, so nothing sent back is missed.
    const unsubscribe = await broker.subscribe(reply, message => {
      switch (message.type) {
        // The round's progress and log messages come back on its channel, ahead of its answer
        // (one publisher, one channel: in order); one the broker loses is lost, as an
        // undeliverable notification is.
        case 'progress': options.onProgress?.(message.progress as Progress); break
        case 'notify': options.downstream?.notify(message.notification as McpMessage).catch(() => {}); break
        case 'answer': settle.resolve(message.answer as RoundAnswer); break
        case 'error': settle.reject(fromWire(message.error)); break
      }
    })
    const timer = setTimeout(() => { settle.reject(invalidRequestState('the gateway instance that holds the call did not answer in time')) }, timeoutMs).unref()
    const onAbort = (): void => {
      broker.publish(roundsChannel(instanceId), { type: 'cancel', reply })
      settle.reject(new CallError('ABORTED', 'The call was cancelled'))
    }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      broker.publish(roundsChannel(instanceId), { type: 'round', reply, timeoutMs, ...round })
      return await answered
    } finally {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      unsubscribe()
    }
  }

  /** An instance the shared store cannot vouch for counts as gone: its calls cannot be reached. */
  async #alive (instanceId: string): Promise<boolean> {
    try {
      return await this.#cluster.sessions.alive(instanceId)
    } catch {
      return false
    }
  }

  /** A round another instance forwarded: run on the call held here, its answer published back. */
  #serve (message: BrokerMessage): void {
    const reply = message.reply
    if (typeof reply !== 'string') return
    if (message.type === 'cancel') {
      this.#serving.get(reply)?.abort(new CallError('ABORTED', 'The call was cancelled'))
      return
    }
    const { key, caller, inputResponses, capabilities, timeoutMs } = message
    if (message.type !== 'round' || typeof key !== 'string' || typeof caller !== 'string') return
    const broker = this.#cluster.broker
    const publish = (answer: BrokerMessage): void => { broker.publish(reply, answer) }
    const controller = new AbortController()
    this.#serving.set(reply, controller)
    const options: RelayOptions = {
      signal: controller.signal,
      ...(typeof timeoutMs === 'number' && { timeoutMs }),
      onProgress: progress => { publish({ type: 'progress', progress }) },
      // A waiting call asks its questions as `input_required`, never on the round's downstream.
      downstream: {
        send: async () => { throw new CallError('CONNECTION_CLOSED', 'A forwarded round cannot ask its client directly') },
        notify: async notification => { publish({ type: 'notify', notification }) }
      }
    }
    const round: CallRound = {
      key,
      caller,
      inputResponses: isObject(inputResponses) ? inputResponses : {},
      capabilities: isObject(capabilities) ? capabilities : undefined
    }
    this.rounds.continue(round, options).then(
      answer => { publish({ type: 'answer', answer }) },
      (err: unknown) => { publish({ type: 'error', error: toWire(err) }) }
    ).finally(() => { this.#serving.delete(reply) })
  }
}

/**
 * The forwarder of `cluster`'s instance: one per cluster, so two gateways in one process
 * (each with a cluster of its own over shared parts, as tests run two instances) keep their
 * own calls, ids and responders.
 */
const forwarders = new WeakMap<Cluster, RoundForwarder>()

export function roundForwarder (cluster: Cluster): RoundForwarder {
  let forwarder = forwarders.get(cluster)
  if (forwarder === undefined) forwarders.set(cluster, forwarder = new RoundForwarder(cluster))
  return forwarder
}

/** Makes a server built for `cluster`'s instance keep its input rounds there; a gateway without a cluster keeps them in this process. */
export function forwardRounds (server: object, cluster: Cluster | undefined): void {
  if (cluster !== undefined) useInputRounds(server, roundForwarder(cluster).rounds)
}

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * A round's failure as the broker carries it, rebuilt as the same error on the instance
 * that answers the client, where the relay turns it into its JSON-RPC error as for a round
 * run there (`toJsonRpcError`). A failure the gateway has no words for stays without them.
 */
function toWire (err: unknown): BrokerMessage {
  if (err instanceof CallError) return { call: { failure: err.code, message: err.message, rpcCode: err.rpcCode, data: err.data } }
  const protocol = err instanceof ProtocolError ? err : isGatewayError(err) ? toJsonRpcError(err, '') : undefined
  if (protocol !== undefined) return { protocol: { code: protocol.code, message: protocol.message, data: protocol.data } }
  return {}
}

function fromWire (wire: unknown): Error {
  const { call, protocol } = (isObject(wire) ? wire : {}) as { call?: { failure: CallFailure, message: string, rpcCode?: number, data?: unknown }, protocol?: { code: number, message: string, data?: unknown } }
  if (call !== undefined) return new CallError(call.failure, call.message, call.rpcCode, call.data)
  if (protocol !== undefined) return ProtocolError.fromError(protocol.code, protocol.message, protocol.data)
  return new Error('The gateway instance that holds the call failed')
}
