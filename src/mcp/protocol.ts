import { ProtocolError, ProtocolErrorCode, SdkError, SdkErrorCode } from '@modelcontextprotocol/server'
import type { Downstream, ListKind, McpMessage } from '../connections/connection.js'

// Protocol helpers shared by the connections and the relay: pagination, the server→client
// questions, list changes, and what a 2025-era connection must not be sent.

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
 * A server's question (sampling, elicitation, roots) put to the downstream client whose call
 * it belongs to, with the reason in the server's terms when it cannot be: the call came over
 * REST (no client), or the client speaks 2026-07-28 (no server→client requests there).
 */
export async function askDownstream (caller: Downstream | undefined, request: McpMessage): Promise<Record<string, unknown>> {
  if (caller === undefined) {
    throw new ProtocolError(ProtocolErrorCode.InternalError, `'${request.method}' cannot be answered: the call came over the gateway's REST API, which has no client to ask`)
  }
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
