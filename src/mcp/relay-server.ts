import {
  LOG_LEVEL_META_KEY,
  type LoggingLevel,
  type RequestMethod,
  Server,
  type ServerCapabilities,
  type ServerContext
} from '@modelcontextprotocol/server'
import type { McpMessage, RelayOptions, RelaySession, RelayTarget, ServerScope } from '../connections/connection.js'
import { GATEWAY_INFO, DEFAULT_TIMEOUT_MS } from '../defaults.js'
import { toJsonRpcError } from '../errors.js'
import { requestOrigin } from './handlers.js'
import { askingRound, type InputRounds } from './input-rounds.js'
import { INPUT_METHODS } from './protocol.js'
import { sharedJsonSchemaValidator } from './validator.js'

/**
 * The input rounds of the gateway instance each relay server answers for, set by whoever
 * builds the server for a cluster (`forwardRounds` in round-forwarding.ts). A server without
 * one keeps its calls in this process, as a gateway that runs alone does. Kept beside the
 * server rather than passed to `createServer`, so no connection needs to know of clusters.
 */
const roundsOf = new WeakMap<object, InputRounds>()

/** Makes `server` (a relay server; any other is left as it is) keep and continue its 2026-07-28 calls' input rounds through `rounds`. */
export function useInputRounds (server: object, rounds: InputRounds): void {
  roundsOf.set(server, rounds)
}

/**
 * A low-level SDK server whose every request is relayed to a target. The SDK server owns the
 * downstream protocol (initialize, both eras, ping, cancellation); the relay maps each
 * request to `target.request` with the downstream context that routes the upstream's
 * progress, log messages and questions back to the client that caused them.
 *
 * Only what the target declares is declared, so a client sees the upstream's own surface.
 */
export function relayServer (target: RelayTarget, scope: ServerScope, timeoutMs = DEFAULT_TIMEOUT_MS): Server {
  const upstream = target.capabilities()
  const capabilities: ServerCapabilities = {
    ...(upstream.tools !== undefined && { tools: { listChanged: true } }),
    ...(upstream.prompts !== undefined && { prompts: { listChanged: true } }),
    ...(upstream.resources !== undefined && { resources: { listChanged: true, subscribe: upstream.resources.subscribe === true } }),
    ...(upstream.completions !== undefined && { completions: {} }),
    ...(upstream.logging !== undefined && { logging: {} })
  }
  const instructions = target.instructions()
  const server = new Server({ name: target.name, version: GATEWAY_INFO.version }, {
    capabilities,
    ...(instructions !== undefined && { instructions }),
    jsonSchemaValidator: sharedJsonSchemaValidator
  })

  const subscribed = new Set<string>()
  const session: RelaySession = {
    scope,
    clientCapabilities: () => server.getClientCapabilities(),
    ask: async (request) => await server.request(request as { method: RequestMethod, params?: Record<string, unknown> }) as Record<string, unknown>,
    notify (notification) {
      if (server.transport === undefined) return
      const sent = notificationFor(server, notification, subscribed)
      sent?.catch(() => {})
    }
  }
  const detach = target.attach(session)
  const previous = server.onclose
  server.onclose = () => {
    previous?.()
    detach()
    // A shared upstream keeps a subscription while any session holds it.
    for (const uri of subscribed) target.request('resources/unsubscribe', { uri }, { session }).catch(() => {})
    subscribed.clear()
  }

  const relay = (method: string) => async (request: { params?: Record<string, unknown> }, ctx: ServerContext): Promise<Record<string, unknown>> => {
    const { options, sent } = relayOptions(ctx, timeoutMs, session)
    try {
      if (options.modern !== true) return await target.request(method, request.params, options)
      const params = modernParams(request.params, ctx)
      // A 2025-era upstream's questions during such a call reach the client as
      // `input_required` rounds (see `input-rounds.ts`).
      if (INPUT_METHODS.has(method)) return await askingRound(ctx, options, async call => await target.request(method, params, { ...call, session }), roundsOf.get(server))
      return await target.request(method, params, options)
    } catch (err) {
      throw toJsonRpcError(err, target.name)
    } finally {
      // Notifications relayed during the request go out before its answer, as the upstream
      // sent them: after the answer the client's stream for the request may be gone.
      if (sent.length > 0) await Promise.allSettled(sent)
    }
  }
  // The SDK types each handler by method; the relay passes params and results through as
  // they are, validated by the upstream and by the SDK on each side.
  const handle = server.setRequestHandler.bind(server) as (method: string, handler: ReturnType<typeof relay>) => void
  if (capabilities.tools !== undefined) {
    handle('tools/list', relay('tools/list'))
    handle('tools/call', relay('tools/call'))
  }
  if (capabilities.prompts !== undefined) {
    handle('prompts/list', relay('prompts/list'))
    handle('prompts/get', relay('prompts/get'))
  }
  if (capabilities.resources !== undefined) {
    handle('resources/list', relay('resources/list'))
    handle('resources/templates/list', relay('resources/templates/list'))
    handle('resources/read', relay('resources/read'))
    if (capabilities.resources.subscribe === true) {
      const subscribe = relay('resources/subscribe')
      const unsubscribe = relay('resources/unsubscribe')
      handle('resources/subscribe', async (request, ctx) => {
        const result = await subscribe(request, ctx)
        subscribed.add(String(request.params?.uri))
        return result
      })
      handle('resources/unsubscribe', async (request, ctx) => {
        subscribed.delete(String(request.params?.uri))
        return await unsubscribe(request, ctx)
      })
    }
  }
  if (capabilities.completions !== undefined) handle('completion/complete', relay('completion/complete'))
  if (capabilities.logging !== undefined) handle('logging/setLevel', relay('logging/setLevel'))
  return server
}

/**
 * Maps the SDK handler context onto the relay's options: cancellation, progress, the client,
 * and the session the request belongs to. Built by assignment, once per call: it is on the
 * path of every relayed request.
 */
function relayOptions (ctx: ServerContext, timeoutMs: number, session: RelaySession): { options: RelayOptions & { session: RelaySession }, sent: Array<Promise<void>> } {
  const origin = requestOrigin(ctx)
  const progressToken = ctx.mcpReq._meta?.progressToken
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined
  const modern = envelope !== undefined
  // A 2026-07-28 client gets log messages only when its request asked for them, at or above
  // the level it named; a 2025 client set its level on the upstream (logging/setLevel).
  const logLevel = envelope?.[LOG_LEVEL_META_KEY] as LoggingLevel | undefined
  const sent: Array<Promise<void>> = []
  const notify = (notification: McpMessage): Promise<void> => {
    if (modern && notification.method === 'notifications/message' && !logged(notification, logLevel)) return Promise.resolve()
    const sending = ctx.mcpReq.notify(notification)
    sent.push(sending)
    return sending
  }
  const options: RelayOptions & { session: RelaySession } = {
    signal: ctx.mcpReq.signal,
    timeoutMs,
    session,
    downstream: {
      send: async (request) => await ctx.mcpReq.send(request as { method: RequestMethod, params?: Record<string, unknown> }) as Record<string, unknown>,
      notify
    }
  }
  if (modern) options.modern = true
  const authInfo = ctx.http?.authInfo
  if (authInfo !== undefined) options.authInfo = authInfo
  if (origin !== undefined) options.origin = { ...(origin.requestId !== undefined && { requestId: origin.requestId }), ...(origin.ip !== undefined && { ip: origin.ip }) }
  if (progressToken !== undefined) {
    options.onProgress = progress => { notify({ method: 'notifications/progress', params: { ...progress, progressToken } }).catch(() => {}) }
  }
  return { options, sent }
}

/** Severity order of MCP log levels (RFC 5424, least severe first). */
const LOG_LEVELS: readonly LoggingLevel[] = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency']

function logged (notification: McpMessage, level: LoggingLevel | undefined): boolean {
  if (level === undefined) return false
  return LOG_LEVELS.indexOf(notification.params?.level as LoggingLevel) >= LOG_LEVELS.indexOf(level)
}

/**
 * A 2026-07-28 request's params as its client sent them: the SDK lifts the `_meta`
 * envelope, `inputResponses` and `requestState` off before the handler runs, and the
 * upstream needs all three (the client's capabilities decide which input it may ask for;
 * a retry carries the answers and the upstream's own state back).
 */
function modernParams (params: Record<string, unknown> | undefined, ctx: ServerContext): Record<string, unknown> {
  const { envelope, inputResponses } = ctx.mcpReq
  const requestState = ctx.mcpReq.requestState()
  return {
    ...params,
    _meta: { ...(params?._meta as Record<string, unknown> | undefined), ...envelope },
    ...(inputResponses !== undefined && { inputResponses }),
    ...(typeof requestState === 'string' && { requestState })
  }
}

function notificationFor (server: Server, notification: McpMessage, subscribed: Set<string>): Promise<void> | undefined {
  switch (notification.method) {
    case 'notifications/tools/list_changed': return server.sendToolListChanged()
    case 'notifications/prompts/list_changed': return server.sendPromptListChanged()
    case 'notifications/resources/list_changed': return server.sendResourceListChanged()
    case 'notifications/resources/updated': {
      const uri = notification.params?.uri
      return typeof uri === 'string' && subscribed.has(uri) ? server.sendResourceUpdated({ uri }) : undefined
    }
    case 'notifications/message':
      return server.getCapabilities().logging === undefined
        ? undefined
        : server.sendLoggingMessage(notification.params as Parameters<Server['sendLoggingMessage']>[0])
  }
  return undefined
}
