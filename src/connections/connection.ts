import type {
  AuthInfo,
  CallToolResult,
  ClientCapabilities,
  McpRequestContext,
  McpServer,
  Progress,
  Server,
  ServerCapabilities,
  ServerOptions,
  Tool
} from '@modelcontextprotocol/server'

// The seam's contracts, and nothing else: every mounted server is reached through an
// `McpConnection`, whatever its transport. The implementations (in-process, upstream,
// aggregate) live beside this file; the protocol plumbing under src/mcp depends on these
// types only, so no implementation and no plumbing import each other in a circle.

/** What `/ready` reports for each mounted server. */
export type ServerState = 'starting' | 'up' | 'down' | 'closed'

/** A function that builds an in-process MCP server; it defines tools and nothing about HTTP. */
export type ServerFactory = (options: ServerOptions) => McpServer | Server

export interface CallOptions {
  /** Aborted when the HTTP client goes away; the SDK then sends `notifications/cancelled`. */
  signal?: AbortSignal
  /** Per-call timeout; the SDK rejects with `RequestTimeout` when it passes. */
  timeoutMs?: number
}

/** A message the gateway sends or relays, without the JSON-RPC envelope. */
export interface McpMessage {
  method: string
  params?: Record<string, unknown>
}

/**
 * The downstream MCP client on whose behalf a request is made: where the server's questions
 * (sampling, elicitation, roots) and the log messages of that request go.
 */
export interface Downstream {
  send (request: McpMessage): Promise<Record<string, unknown>>
  notify (notification: McpMessage): Promise<void>
}

export interface RelayOptions extends CallOptions {
  /** Receives the server's progress; asking for it puts a progress token on the request. */
  onProgress?: (progress: Progress) => void
  /** Absent for REST calls, which have no client to ask. */
  downstream?: Downstream
  /**
   * Set for a request of a 2026-07-28 client. Its params then carry what that revision
   * puts on each request (the `_meta` envelope with the client's capabilities and log
   * level, and on a retry `inputResponses` and `requestState`), and the answer may be an
   * `input_required` result, which goes back to the client as it is.
   */
  modern?: boolean
  /** Who is calling, as the SDK carries it (`ctx.http.authInfo`); absent while nobody is authenticated. */
  authInfo?: AuthInfo
  /** The HTTP request it came with, where the way in knows it: for the pipeline's per-member calls of `/mcp`. */
  origin?: { requestId?: string, ip?: string }
}

/** The lists a server can announce as changed. */
export type ListKind = 'tools' | 'prompts' | 'resources'

/** A downstream MCP session gets its own instance; shared ones serve stateless requests. */
export type ServerScope = 'session' | 'shared'

/** One relay server as its target sees it: a key for per-session state and a way to notify it. */
export interface RelaySession {
  readonly scope: ServerScope
  /** What the downstream client declared at initialize (2025 era), if it has. */
  clientCapabilities (): ClientCapabilities | undefined
  /** A notification tied to no request: list changes, resource updates, log messages. */
  notify (notification: McpMessage): void
  /** A server→client request tied to no request of the client's (a session's `roots/list`). */
  ask (request: McpMessage): Promise<Record<string, unknown>>
}

/** What a relay server forwards to: one upstream server, or the aggregate of all of them. */
export interface RelayTarget {
  readonly name: string
  capabilities (): ServerCapabilities
  instructions (): string | undefined
  /** `options.session` names the downstream session, for targets that keep state per session. */
  request (method: string, params: Record<string, unknown> | undefined, options: RelayOptions & { session?: RelaySession }): Promise<Record<string, unknown>>
  /** Receives the target's notifications that belong to no request; returns the detach. */
  attach (session: RelaySession): () => void
}

/**
 * The one seam through which every mounted server is reached, whatever its transport.
 *
 * The REST routes and `/ready` talk to a connection; the Streamable HTTP endpoint asks it
 * for the server instances that answer downstream MCP clients (`createServer`). An
 * in-process server is one implementation; upstream stdio and remote servers, and the
 * aggregate of all of them, implement the same interface.
 */
export interface McpConnection extends RelayTarget {
  readonly name: string
  readonly state: ServerState
  /** Why the server is down, when it is. */
  readonly failure: string | undefined
  /** While down: seconds until the next attempt to bring it back, for `Retry-After`. */
  readonly retryAfter: number | undefined
  /** Each downstream session holds state only this process has (`isolation: "session"`: its own upstream connection); no other gateway instance can serve it. */
  readonly pinsSessions?: boolean
  /** Connects and lists tools; throws when the server cannot start. Idempotent. */
  start (): Promise<void>
  /** The tools, with their JSON Schemas, as last listed. */
  tools (): readonly Tool[]
  /** What the server declared it can do, as of the last connect. */
  capabilities (): ServerCapabilities
  instructions (): string | undefined
  /** Any client→server request, relayed with progress, cancellation and the caller's questions. */
  request (method: string, params: Record<string, unknown> | undefined, options?: RelayOptions): Promise<Record<string, unknown>>
  callTool (name: string, args: Record<string, unknown>, options?: RelayOptions): Promise<CallToolResult>
  /**
   * A tool call whose arguments the caller has already validated against the tool's
   * `inputSchema` (the REST routes have, with Ajv), by the quickest way the connection has:
   * it answers, fails, times out, is cancelled and reports progress exactly as `callTool`,
   * so a caller may use either. Only what a REST call carries: no client to ask, 2025 terms.
   * Optional: a connection with no quicker way leaves it out, and callers use `callTool`.
   */
  callValidated? (name: string, args: Record<string, unknown>, options?: Pick<RelayOptions, 'signal' | 'timeoutMs' | 'onProgress' | 'authInfo'>): Promise<CallToolResult>
  /** A fresh server instance for one downstream MCP session or stateless requests. */
  createServer (ctx?: McpRequestContext, scope?: ServerScope): McpServer | Server
  /** Calls `listener` after one of the server's lists changed (and `tools()` is fresh). */
  onListChanged (listener: (kind: ListKind) => void): () => void
  close (): Promise<void>
}

// --- The call pipeline, as the seam sees it (implemented in src/pipeline) ---------------

/** How a call reached the gateway. */
export type WayIn = 'rest' | 'mcp-2025-session' | 'mcp-2025-stateless' | 'mcp-2026' | 'aggregate'

/** The methods the pipeline sees: calls of one named item, and the lists of them. */
export type CallMethod = 'tools/call' | 'prompts/get' | 'resources/read' | 'resources/subscribe'
export type ListMethod = 'tools/list' | 'prompts/list' | 'resources/list' | 'resources/templates/list'

/** One request to one mounted server, as every filter sees it. */
export interface CallContext {
  /** The mounted server that answers it: a member's own name on `/mcp`, never the aggregate. */
  server: string
  method: CallMethod | ListMethod
  /** The tool or prompt name, or the resource URI (template), in the server's own terms; absent on lists. */
  name?: string
  arguments?: Record<string, unknown>
  /** Who is calling; absent while nobody is authenticated. */
  identity?: AuthInfo
  way: WayIn
  /** The HTTP request's id (`x-request-id` or Fastify's), where the way in knows it. */
  requestId?: string
  /** The client's address (Fastify's `request.ip`, which honours `trustProxy`), where the way in knows it: what rate limits key an anonymous caller by. */
  ip?: string
  /**
   * The MCP request as a tracer describes it, filled in on the MCP ways in only while some
   * filter wraps calls (`around`): its JSON-RPC id, the protocol version it speaks, the 2025
   * session it belongs to, and the W3C trace context its client put in `params._meta`.
   */
  mcp?: McpRequestInfo
}

/** What an MCP request says about itself, for traces (OpenTelemetry's MCP conventions). */
export interface McpRequestInfo {
  /** The JSON-RPC request id. */
  id: string | number
  protocolVersion?: string
  /** The `Mcp-Session-Id` of a 2025-era session; never set for 2026-07-28 requests, which have none. */
  sessionId?: string
  /** `params._meta.traceparent` and `tracestate` (SEP-414), as the client sent them. */
  traceparent?: string
  tracestate?: string
}

/**
 * The call pipeline as a connection that dispatches to other servers (the aggregate) uses it:
 * whether the caller may see an item, and one call through the filters.
 */
export interface CallGate {
  readonly active: boolean
  allows (call: CallContext): boolean
  call<T> (call: CallContext, run: () => Promise<T>, refuse?: (err: Error) => Error): Promise<T>
}
