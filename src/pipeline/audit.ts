import type { FastifyBaseLogger } from 'fastify'
import { isGatewayError } from '../errors.js'
import type { CallContext, CallFilter, CallMethod, CallOutcome } from './pipeline.js'

// The audit log: one structured line per tool call, prompt get and resource read, whatever
// the way in, as an `observe` filter of the call pipeline (so refusals are audited too, and
// a failure to log never changes an answer). Each line is at `info`, under `audit`: who
// (`clientId`, never a credential; the address of an anonymous caller), what (server, name,
// method), how (way in, request id), and how it went (outcome, duration). The arguments,
// which may hold personal data, only while the logger writes `debug`.

/** The calls audited; lists and subscriptions are not. */
const AUDITED = new Set<CallMethod | string>(['tools/call', 'prompts/get', 'resources/read'])

/** Pino's levels by name, to ask a logger whether it writes one (Fastify's logger type leaves `isLevelEnabled` out). */
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 }

/** Whether `log` writes lines at `level`; a disabled logger (`logger: false`) writes none. */
export function writes (log: FastifyBaseLogger, level: 'debug' | 'info'): boolean {
  const current = LEVELS[log.level]
  return current !== undefined && current <= (LEVELS[level] as number)
}

/** One audit line's fields, in the order they are written. */
interface AuditEntry {
  clientId?: string
  ip?: string
  sub?: string
  server: string
  method: string
  name: string | undefined
  way: CallContext['way']
  outcome: CallOutcome['outcome']
  code?: string
  durationMs: number
  requestId?: string
  arguments?: Record<string, unknown>
}

/**
 * One audit line's fields. Built by assignment rather than by spreading optional parts: a
 * spread of a conditional literal costs an object and a copy each, and this runs on every
 * call the default log level writes.
 */
function entryOf (call: CallContext, outcome: CallOutcome, withArguments: boolean): AuditEntry {
  const identity = call.identity
  const entry = {} as AuditEntry
  if (identity !== undefined) entry.clientId = identity.clientId
  else if (call.ip !== undefined) entry.ip = call.ip
  const sub = (identity?.extra as { sub?: unknown } | undefined)?.sub
  if (typeof sub === 'string') entry.sub = sub
  entry.server = call.server
  entry.method = call.method
  entry.name = call.name
  entry.way = call.way
  entry.outcome = outcome.outcome
  if (isGatewayError(outcome.error)) entry.code = outcome.error.code
  entry.durationMs = Math.round(outcome.durationMs * 100) / 100
  if (call.requestId !== undefined) entry.requestId = call.requestId
  if (withArguments && call.arguments !== undefined) entry.arguments = call.arguments
  return entry
}

/** The audit filter, writing to `log`; `audited` hears of each HTTP request whose call it wrote a line for. */
export function auditFilter (log: FastifyBaseLogger, audited?: (requestId: string) => void): CallFilter {
  return {
    name: 'audit',
    observe (call: CallContext, outcome: CallOutcome): void {
      if (!AUDITED.has(call.method)) return
      log.info({ audit: entryOf(call, outcome, writes(log, 'debug')) }, 'mcp call')
      if (audited !== undefined && call.requestId !== undefined) audited(call.requestId)
    }
  }
}
