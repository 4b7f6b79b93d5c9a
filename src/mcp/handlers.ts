import type { AuthInfo, JSONRPCRequest, McpServer, Result, Server, ServerContext } from '@modelcontextprotocol/server'
import { InternalError } from '../errors.js'

/** A request handler as the SDK's `Protocol` stores it. */
export type Handler = (request: JSONRPCRequest, ctx: ServerContext) => Promise<Result>

/**
 * Puts `wrap` around every request handler of an SDK server instance, those registered
 * later included (a server's first tool added at run time installs `tools/call` then).
 *
 * The SDK has no public hook around its request handlers: this relies on `Protocol` keeping
 * them in a private `_requestHandlers` Map that its dispatch reads (SDK v2.4). Should an SDK
 * upgrade move that map, this throws rather than let calls bypass what `wrap` enforces;
 * test/src/pipeline/pipeline.test.ts fails then too.
 */
export function interceptHandlers<S extends McpServer | Server> (instance: S, wrap: (method: string, handler: Handler) => Handler): S {
  const protocol = ('server' in instance ? instance.server : instance) as unknown as { _requestHandlers?: unknown }
  const handlers = protocol._requestHandlers
  if (!(handlers instanceof Map)) {
    throw new InternalError({ cause: new Error('the MCP SDK no longer keeps its request handlers in _requestHandlers: the gateway cannot wrap them') })
  }
  const map = handlers as Map<string, Handler>
  for (const [method, handler] of map) map.set(method, wrap(method, handler))
  const set = map.set.bind(map)
  map.set = (method: string, handler: Handler) => set(method, wrap(method, handler))
  return instance
}

/**
 * A handler that sees the caller's identity as `ctx.http.authInfo` where the transport could
 * not pass it: the SDK's `serveStdio` entry, which the shared lanes and the in-process
 * connection run on, drops a message's extra info, so the identity travels beside the
 * request (`authInfoOf`, by the request id) and is put back here.
 */
export function carryAuthInfo (handler: Handler, authInfoOf: (id: JSONRPCRequest['id']) => AuthInfo | undefined): Handler {
  return (request, ctx) => {
    const authInfo = ctx.http?.authInfo === undefined ? authInfoOf(ctx.mcpReq.id) : undefined
    return handler(request, authInfo === undefined ? ctx : { ...ctx, http: { ...ctx.http, authInfo } })
  }
}

/** Where a request came from: its HTTP request's id, the client's address, and the caller. */
export interface RequestOrigin {
  requestId?: string
  ip?: string
  authInfo?: AuthInfo
}

/** Where `carryOrigin` puts the origin in the handler's `ctx.http`; a symbol, so it never clashes with the SDK's fields. */
const REQUEST_ORIGIN = Symbol.for('fastify-mcp-gateway.requestOrigin')

/**
 * A handler that sees where its request came from, for a relay that dispatches to other
 * servers itself (the aggregate `/mcp`, whose per-member calls pass the call pipeline with
 * the client's address and request id): the origin travels beside the request, by its id,
 * as the caller does in `carryAuthInfo`, and is put in `ctx.http`, the caller included.
 */
export function carryOrigin (handler: Handler, originOf: (id: JSONRPCRequest['id']) => RequestOrigin | undefined): Handler {
  return (request, ctx) => {
    const origin = originOf(ctx.mcpReq.id)
    if (origin === undefined) return handler(request, ctx)
    const authInfo = ctx.http?.authInfo ?? origin.authInfo
    return handler(request, { ...ctx, http: { ...ctx.http, ...(authInfo !== undefined && { authInfo }), [REQUEST_ORIGIN]: origin } as NonNullable<ServerContext['http']> })
  }
}

/** The origin `carryOrigin` put in a handler's context, if it did. */
export function requestOrigin (ctx: ServerContext): RequestOrigin | undefined {
  return (ctx.http as { [REQUEST_ORIGIN]?: RequestOrigin } | undefined)?.[REQUEST_ORIGIN]
}
