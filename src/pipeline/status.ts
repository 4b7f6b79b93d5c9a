import { isGatewayError } from '../errors.js'
import type { CallContext, CallFilter, CallMethod, CallOutcome, Outcome, WayIn } from './pipeline.js'

// What the status page shows of the calls: the most recent ones, and per tool its counts and
// its latencies over a sliding window. An `observe` filter of the call pipeline, so it sees
// every call on every way in, refusals included, and never changes an answer. Everything is
// in memory and bounded (recent calls, samples per tool, tools tracked), so a busy or hostile
// caller cannot grow it; one gateway process counts its own calls.
//
// `observe` runs on every call, so it only writes into preallocated ring buffers; sorting for
// percentiles happens when someone reads the page.

/** The calls recorded; lists are not (they are not calls of a tool, prompt or resource). */
const RECORDED = new Set<CallMethod | string>(['tools/call', 'prompts/get', 'resources/read'])

/** How many recent calls are kept. */
export const DEFAULT_RECENT_CALLS = 100
/** The window of the per-tool figures: the last 5 minutes. */
export const DEFAULT_WINDOW_MS = 5 * 60_000
/** Durations kept per tool: within the window, at most this many (the most recent). */
export const DEFAULT_SAMPLES_PER_TOOL = 1024
/** Tools tracked at most; calls of further names are counted in `untracked` only (names come from callers). */
export const DEFAULT_MAX_TOOLS = 1000
/** State changes kept per server. */
const STATE_HISTORY = 10

export interface StatusRecorderOptions {
  /** Recent calls kept. Default `DEFAULT_RECENT_CALLS`. */
  recentCalls?: number
  /** Window of the per-tool figures, in ms. Default `DEFAULT_WINDOW_MS`. */
  windowMs?: number
  /** Durations kept per tool. Default `DEFAULT_SAMPLES_PER_TOOL`. */
  samplesPerTool?: number
  /** Tools tracked at most. Default `DEFAULT_MAX_TOOLS`. */
  maxTools?: number
}

/** One recent call, as the page and `/status.json` show it. */
export interface RecentCall {
  /** When it ended, ms since the epoch. */
  at: number
  server: string
  method: string
  name: string | undefined
  /** The caller's client id (API key id or token client), never a credential; absent when anonymous. */
  clientId?: string
  way: WayIn
  outcome: Outcome
  /** The refusal's or failure's `GW_ERR_*` code, where there is one. */
  code?: string
  durationMs: number
  requestId?: string
}

/** One tool's figures. */
export interface ToolFigures {
  server: string
  tool: string
  /** Since the gateway started. */
  calls: number
  errors: number
  /** Within the window (at most `samplesPerTool` of the most recent calls). */
  window: { calls: number, errors: number, errorRate: number, p50Ms: number | null, p99Ms: number | null }
  lastCallAt: number
}

/** One change of a server's state. */
export interface StateChange {
  state: string
  at: number
  failure?: string
}

/** A tool's counts and a ring of its most recent calls' end times, durations and outcomes. */
class ToolStats {
  calls = 0
  errors = 0
  lastCallAt = 0
  #at: Float64Array
  #ms: Float64Array
  #failed: Uint8Array
  #next = 0
  #filled = 0

  constructor (capacity: number) {
    this.#at = new Float64Array(capacity)
    this.#ms = new Float64Array(capacity)
    this.#failed = new Uint8Array(capacity)
  }

  add (at: number, ms: number, failed: boolean): void {
    this.calls++
    if (failed) this.errors++
    this.lastCallAt = at
    this.#at[this.#next] = at
    this.#ms[this.#next] = ms
    this.#failed[this.#next] = failed ? 1 : 0
    this.#next = (this.#next + 1) % this.#at.length
    if (this.#filled < this.#at.length) this.#filled++
  }

  window (since: number): ToolFigures['window'] {
    const durations: number[] = []
    let errors = 0
    for (let i = 0; i < this.#filled; i++) {
      if ((this.#at[i] as number) < since) continue
      durations.push(this.#ms[i] as number)
      errors += this.#failed[i] as number
    }
    durations.sort((a, b) => a - b)
    return {
      calls: durations.length,
      errors,
      errorRate: durations.length === 0 ? 0 : errors / durations.length,
      p50Ms: percentile(durations, 0.5),
      p99Ms: percentile(durations, 0.99)
    }
  }
}

/** The nearest-rank percentile of sorted values, rounded to 0.01 ms. */
function percentile (sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null
  const value = sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] as number
  return Math.round(value * 100) / 100
}

/**
 * The status page's memory: recent calls and per-tool figures (fed by `filter()`, the
 * pipeline observer), and when each server last changed state (fed by `noteState`, since a
 * connection announces no state change; the status plugin polls).
 */
export class StatusRecorder {
  readonly windowMs: number
  /** Calls of tools past `maxTools`, counted but not tracked. */
  untracked = 0
  #recent: Array<RecentCall | undefined>
  #nextRecent = 0
  #tools = new Map<string, Map<string, ToolStats>>()
  /** Tools in `#tools`, all servers together. */
  #tracked = 0
  #samples: number
  #maxTools: number
  #states = new Map<string, StateChange[]>()

  constructor (options: StatusRecorderOptions = {}) {
    this.#recent = new Array<RecentCall | undefined>(options.recentCalls ?? DEFAULT_RECENT_CALLS)
    this.windowMs = options.windowMs ?? DEFAULT_WINDOW_MS
    this.#samples = options.samplesPerTool ?? DEFAULT_SAMPLES_PER_TOOL
    this.#maxTools = options.maxTools ?? DEFAULT_MAX_TOOLS
  }

  /** The pipeline observer. */
  filter (): CallFilter {
    return { name: 'status', observe: (call, outcome) => { this.record(call, outcome) } }
  }

  record (call: CallContext, outcome: CallOutcome, at = Date.now()): void {
    if (!RECORDED.has(call.method)) return
    // The optional fields are added to the object rather than spread into it: a spread makes
    // an object of its own each time, and this runs on every call.
    const recent: RecentCall = { at, server: call.server, method: call.method, name: call.name, way: call.way, outcome: outcome.outcome, durationMs: Math.round(outcome.durationMs * 100) / 100 }
    if (call.identity !== undefined) recent.clientId = call.identity.clientId
    if (isGatewayError(outcome.error)) recent.code = outcome.error.code
    if (call.requestId !== undefined) recent.requestId = call.requestId
    this.#recent[this.#nextRecent] = recent
    this.#nextRecent = (this.#nextRecent + 1) % this.#recent.length
    if (call.method !== 'tools/call' || call.name === undefined) return
    // By server, then by name: no key string built per call.
    let tools = this.#tools.get(call.server)
    let stats = tools?.get(call.name)
    if (stats === undefined) {
      if (this.#tracked >= this.#maxTools) {
        this.untracked++
        return
      }
      if (tools === undefined) {
        tools = new Map()
        this.#tools.set(call.server, tools)
      }
      stats = new ToolStats(this.#samples)
      tools.set(call.name, stats)
      this.#tracked++
    }
    stats.add(at, outcome.durationMs, outcome.outcome !== 'ok')
  }

  /** The recent calls, newest first. */
  recentCalls (): RecentCall[] {
    const calls: RecentCall[] = []
    const length = this.#recent.length
    for (let i = 1; i <= length; i++) {
      const call = this.#recent[(this.#nextRecent - i + length) % length]
      if (call === undefined) break
      calls.push(call)
    }
    return calls
  }

  /** Every tracked tool's figures, the window ending `now`. */
  tools (now = Date.now()): ToolFigures[] {
    const since = now - this.windowMs
    const figures: ToolFigures[] = []
    for (const [server, tools] of this.#tools) {
      for (const [tool, stats] of tools) {
        figures.push({ server, tool, calls: stats.calls, errors: stats.errors, window: stats.window(since), lastCallAt: stats.lastCallAt })
      }
    }
    return figures
  }

  /** Records a server's state as seen now; a change of state starts a new entry. Returns its changes, newest first. */
  noteState (server: string, state: string, failure: string | undefined, at = Date.now()): readonly StateChange[] {
    let changes = this.#states.get(server)
    if (changes === undefined) {
      changes = []
      this.#states.set(server, changes)
    }
    const last = changes[0]
    if (last === undefined || last.state !== state) {
      changes.unshift({ state, at, ...(failure !== undefined && { failure }) })
      if (changes.length > STATE_HISTORY) changes.length = STATE_HISTORY
    } else if (failure !== undefined) {
      // Still down, for a reason that may have changed between attempts: the latest one counts, the time it went down stays.
      last.failure = failure
    }
    return changes
  }

  /** Forgets servers no longer mounted. */
  keepStates (servers: ReadonlySet<string>): void {
    for (const name of this.#states.keys()) if (!servers.has(name)) this.#states.delete(name)
  }
}
