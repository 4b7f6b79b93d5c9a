import {
  CLIENT_CAPABILITIES_META_KEY,
  CLIENT_INFO_META_KEY,
  LOG_LEVEL_META_KEY,
  PROTOCOL_VERSION_META_KEY,
  ProtocolError,
  ProtocolErrorCode,
  SdkError,
  SdkErrorCode,
  type ClientCapabilities,
  type LoggingLevel
} from '@modelcontextprotocol/server'
import type { Downstream, ListKind, McpMessage } from '../connections/connection.js'

// Protocol helpers shared by the connections and the relay: pagination, the server→client
// questions, list changes, what a 2025-era connection must not be sent, and what a
// 2026-07-28 one is sent on behalf of each caller.

/** Every item of a paginated list (`tools/list` and the like), following `nextCursor`. */
export async function allPages<T> (fetchPage: (params: Record<string, unknown>) => Promise<Record<string, unknown>>, key: string): Promise<T[]> {
  const items: T[] = []
  let cursor: string | undefined
  do {
    const page = await fetchPage(cursor === undefined ? {} : { cursor })
    items.push(...(page[key] as T[] | undefined ?? []))
    cursor = page.nextCursor as string | undefined
  } while (cursor !== undefined)
  return items
}

/** The server→client requests that ask a client for input, by the client capability each needs. */
export const QUESTIONS = { sampling: 'sampling/createMessage', elicitation: 'elicitation/create', roots: 'roots/list' } as const

/** The methods whose 2026-07-28 answer may be `input_required`: the ones during which a server may ask for input. */
export const INPUT_METHODS: ReadonlySet<string> = new Set(['tools/call', 'prompts/get', 'resources/read'])

/** The list each `list_changed` notification is about. */
export const LIST_CHANGED: Record<string, ListKind | undefined> = {
  'notifications/tools/list_changed': 'tools',
  'notifications/prompts/list_changed': 'prompts',
  'notifications/resources/list_changed': 'resources'
}

/** A 2026-07-28 request's params without what only that revision knows, for a 2025-era connection. */
export function legacyParams (params: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (params === undefined) return undefined
  const { inputResponses: _responses, requestState: _state, _meta, ...rest } = params
  const meta = Object.entries((_meta ?? {}) as Record<string, unknown>).filter(([key]) => !key.startsWith('io.modelcontextprotocol/'))
  return meta.length === 0 ? rest : { ...rest, _meta: Object.fromEntries(meta) }
}

/**
 * The capabilities of a client that the gateway can honour on its behalf towards an upstream:
 * the questions (sampling, elicitation, roots), which it passes on to that client. Nothing
 * else of the client's is the gateway's to promise.
 */
export function questionCapabilities (declared: ClientCapabilities | undefined): ClientCapabilities {
  if (declared === undefined) return {}
  const { sampling, elicitation, roots } = declared
  return {
    ...(sampling !== undefined && { sampling }),
    ...(elicitation !== undefined && { elicitation }),
    ...(roots !== undefined && { roots })
  }
}

/**
 * A request's params as the gateway sends them over a 2026-07-28 link for one caller. The
 * `_meta` envelope is the gateway's: the SDK client adds the gateway's client info and the
 * link's negotiated version (a 2026-07-28 caller's own are dropped, so its name never passes
 * for the gateway's and its version never disagrees with the link's); the capabilities are
 * those the gateway can honour for this caller, and the log level the one it asked for.
 */
export function envelopedParams (params: Record<string, unknown> | undefined, capabilities: ClientCapabilities, logLevel: LoggingLevel | undefined): Record<string, unknown> {
  const { [PROTOCOL_VERSION_META_KEY]: _version, [CLIENT_INFO_META_KEY]: _info, [LOG_LEVEL_META_KEY]: _level, ...meta } = (params?._meta ?? {}) as Record<string, unknown>
  return {
    ...params,
    _meta: {
      ...meta,
      [CLIENT_CAPABILITIES_META_KEY]: capabilities,
      ...(logLevel !== undefined && { [LOG_LEVEL_META_KEY]: logLevel })
    }
  }
}

/**
 * The answer to a server's question during a call that came over REST: there is no client to
 * ask. A 2025-era server gets it as the error of its request (its tool then fails); for a
 * 2026-07-28 server's `input_required` the gateway answers the call with it.
 */
export class NoClientToAskError extends ProtocolError {
  constructor (method: string) {
    super(ProtocolErrorCode.InternalError, `'${method}' cannot be answered: the call came over the gateway's REST API, which has no client to ask`)
    this.name = 'NoClientToAskError'
  }
}

/**
 * A server's question (sampling, elicitation, roots) put to the downstream client whose call
 * it belongs to, with the reason in the server's terms when it cannot be: the call came over
 * REST (no client), or the client speaks 2026-07-28 (no server→client requests there).
 */
export async function askDownstream (caller: Downstream | undefined, request: McpMessage): Promise<Record<string, unknown>> {
  if (caller === undefined) throw new NoClientToAskError(request.method)
  try {
    return await caller.send(request)
  } catch (err) {
    if (err instanceof ProtocolError) throw err
    if (err instanceof SdkError && err.code === SdkErrorCode.MethodNotSupportedByProtocolVersion) {
      throw new ProtocolError(ProtocolErrorCode.InternalError, `'${request.method}' cannot be forwarded: the downstream client speaks MCP 2026-07-28, which has no server-to-client requests; the gateway turns them into input_required rounds only during tools/call, prompts/get and resources/read`)
    }
    throw new ProtocolError(ProtocolErrorCode.InternalError, `The downstream client did not answer '${request.method}': ${err instanceof Error ? err.message : String(err)}`)
  }
}
