import {
  LATEST_PROTOCOL_VERSION,
  ProtocolError,
  ProtocolErrorCode,
  SdkError,
  SdkErrorCode,
  type CallToolResult,
  type InitializeResult,
  type JSONRPCMessage,
  type McpRequestContext,
  type McpServer,
  type Progress,
  type Server,
  type ServerCapabilities,
  type ServerOptions,
  type Tool
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import { MultiplexTransport } from './multiplex-transport.js'
import type { RelaySession, RelayTarget } from './relay-server.js'
import { sharedJsonSchemaValidator } from './validator.js'

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
}

/** The lists a server can announce as changed. */
export type ListKind = 'tools' | 'prompts' | 'resources'

/** A downstream MCP session gets its own instance; shared ones serve stateless requests. */
export type ServerScope = 'session' | 'shared'

/**
 * The one seam through which every mounted server is reached, whatever its transport.
 *
 * The REST shim and `/ready` talk to a connection; the Streamable HTTP endpoint asks it for
 * the server instances that answer downstream MCP clients (`createServer`). An in-process
 * server is one implementation; upstream stdio and remote servers implement the same
 * interface.
 */
export interface McpConnection extends RelayTarget {
  readonly name: string
  readonly state: ServerState
  /** Why the server is down, when it is. */
  readonly failure: string | undefined
  /** While down: seconds until the next attempt to bring it back, for `Retry-After`. */
  readonly retryAfter: number | undefined
  /** Connects and lists tools; throws when the server cannot start. */
  start (): Promise<void>
  /** The tools, with their JSON Schemas, as last listed. */
  tools (): readonly Tool[]
  /** What the server declared it can do, as of the last connect. */
  capabilities (): ServerCapabilities
  instructions (): string | undefined
  /** Any client→server request, relayed with progress, cancellation and the caller's questions. */
  request (method: string, params: Record<string, unknown> | undefined, options?: RelayOptions): Promise<Record<string, unknown>>
  callTool (name: string, args: Record<string, unknown>, options?: RelayOptions): Promise<CallToolResult>
  /** A fresh server instance for one downstream MCP session or stateless requests. */
  createServer (ctx?: McpRequestContext, scope?: ServerScope): McpServer | Server
  /** Calls `listener` after one of the server's lists changed (and `tools()` is fresh). */
  onListChanged (listener: (kind: ListKind) => void): () => void
  close (): Promise<void>
}

/**
 * An in-process server, reached over a multiplexing transport (see `multiplex-transport.ts`)
 * into one long-lived connection opened by the SDK's own serving entry. The gateway is that
 * connection's client: it initializes it, lists tools and calls them. Nothing is built per
 * call, and no SDK `Client` sits on the REST hot path: its result parsing and output
 * validation would repeat work the server has just done (the server validates
 * `structuredContent` against the `outputSchema` before answering). A server's question
 * during a call (sampling, elicitation) goes to the client that made it (`/mcp`).
 * Downstream MCP sessions get their own instance from the same factory (`createServer`).
 */
export class InProcessConnection implements McpConnection {
  readonly name: string
  #factory: ServerFactory
  #state: ServerState = 'starting'
  #failure: string | undefined
  #mux: MultiplexTransport | undefined
  #handle: StdioServerHandle | undefined
  #tools: Tool[] = []
  #initialized: InitializeResult | undefined
  #listeners = new Set<(kind: ListKind) => void>()

  constructor (name: string, factory: ServerFactory) {
    this.name = name
    this.#factory = factory
  }

  get state (): ServerState { return this.#state }
  get failure (): string | undefined { return this.#failure }
  /** An in-process server does not come back once down: nothing to retry. */
  get retryAfter (): undefined { return undefined }

  async start (): Promise<void> {
    try {
      // The server ending its connection on its own (a crash, a tool that closes it) takes
      // it down: calls in flight fail with 502, later calls get 503.
      const mux = new MultiplexTransport({
        onClosed: () => {
          if (this.#state === 'up' || this.#state === 'starting') {
            this.#state = 'down'
            this.#failure = 'the server closed its connection'
          }
        },
        onUnrelated: message => { this.#onUnrelated(message.method) }
      })
      this.#mux = mux
      // Built here, not inside the entry, so a factory that throws fails the start with its
      // own error rather than an anonymous 'Internal server error' answer.
      let first: McpServer | Server | undefined = this.createServer()
      const factory = (): McpServer | Server => {
        const server = first ?? this.createServer()
        first = undefined
        return server
      }
      this.#handle = serveStdio(factory, { transport: mux })
      this.#initialized = await this.#request('initialize', {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        // What the gateway can pass on to the client of a call (`askDownstream`), as it
        // declares to upstreams: a call over REST, which has no client, is refused.
        capabilities: { sampling: {}, elicitation: { form: {}, url: {} } },
        clientInfo: { name: 'fastify-mcp-gateway', version: '1.0.0' }
      }) as InitializeResult
      mux.notify({ jsonrpc: '2.0', method: 'notifications/initialized' })
      // A server with no tools (only prompts or resources) has no tools/list to ask.
      this.#tools = this.#initialized.capabilities.tools === undefined ? [] : await this.#listTools()
      this.#state = 'up'
    } catch (err) {
      this.#failure = err instanceof Error ? err.message : String(err)
      await this.close().catch(() => {})
      this.#state = 'down'
      throw err
    }
  }

  async #listTools (): Promise<Tool[]> {
    return await allPages<Tool>(async params => await this.#request('tools/list', params) as Record<string, unknown>, 'tools')
  }

  #onUnrelated (method: string): void {
    const kind = LIST_CHANGED[method]
    if (kind === undefined) return
    const refreshed = kind === 'tools'
      ? this.#listTools().then(tools => { this.#tools = tools })
      : Promise.resolve()
    refreshed.then(() => { for (const listener of this.#listeners) listener(kind) }, () => {})
  }

  tools (): readonly Tool[] { return this.#tools }
  capabilities (): ServerCapabilities { return this.#initialized?.capabilities ?? {} }
  instructions (): string | undefined { return this.#initialized?.instructions }

  onListChanged (listener: (kind: ListKind) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** Relay servers built over this one (the aggregate's) hear of its list changes. */
  attach (session: RelaySession): () => void {
    return this.onListChanged(kind => { session.notify({ method: `notifications/${kind}/list_changed` }) })
  }

  async callTool (name: string, args: Record<string, unknown>, options: RelayOptions = {}): Promise<CallToolResult> {
    return await this.request('tools/call', { name, arguments: args }, options) as CallToolResult
  }

  async request (method: string, params: Record<string, unknown> | undefined, options: RelayOptions = {}): Promise<Record<string, unknown>> {
    if (this.#state !== 'up') throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`)
    // The gateway's connection to an in-process server speaks 2025 (see the class comment).
    return await this.#request(method, (options.modern === true ? legacyParams(params) : params) ?? {}, options) as Record<string, unknown>
  }

  /** One request over the connection, with the SDK client's error codes for timeouts and closes. */
  #request (method: string, params: Record<string, unknown>, options: RelayOptions = {}): Promise<unknown> {
    const mux = this.#mux
    if (mux === undefined) return Promise.reject(new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`))
    const { onProgress, downstream } = options
    if (onProgress !== undefined) {
      // The multiplexer routes the request's notifications to it, so any token is unique enough.
      params = { ...params, _meta: { ...(params._meta as object | undefined), progressToken: 1 } }
    }
    return new Promise((resolve, reject) => {
      let settled = false
      let timer: NodeJS.Timeout | undefined
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        return true
      }
      const id = mux.request({ jsonrpc: '2.0', id: 0, method, params }, {
        ask: async question => await askDownstream(downstream, { method: question.method, ...(question.params !== undefined && { params: question.params }) }),
        notify (message: JSONRPCMessage) {
          if (!('method' in message)) return
          if (message.method === 'notifications/progress') {
            const { progressToken: _token, ...progress } = message.params as Progress & { progressToken: unknown }
            onProgress?.(progress)
          } else if (downstream !== undefined) {
            downstream.notify({ method: message.method, ...(message.params !== undefined && { params: message.params }) }).catch(() => {})
          }
        },
        respond: (response) => {
          if (!settle()) return
          if (mux.closed) reject(new CallError('CONNECTION_CLOSED', `Server '${this.name}' closed its connection`))
          else if ('error' in response) reject(new CallError('PROTOCOL_ERROR', response.error.message, response.error.code, response.error.data))
          else resolve((response as { result: unknown }).result)
        }
      })
      const onAbort = (): void => {
        if (!settle()) return
        mux.cancel(id, 'the caller went away')
        reject(new CallError('ABORTED', 'The call was cancelled'))
      }
      if (settled) return
      if (options.signal?.aborted === true) {
        onAbort()
        return
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          if (!settle()) return
          mux.cancel(id, `timed out after ${options.timeoutMs} ms`)
          reject(new CallError('REQUEST_TIMEOUT', `No answer within ${options.timeoutMs} ms`))
        }, options.timeoutMs)
      }
    })
  }

  createServer (): McpServer | Server {
    return this.#factory({ jsonSchemaValidator: sharedJsonSchemaValidator })
  }

  async close (): Promise<void> {
    this.#state = 'closed'
    const handle = this.#handle
    this.#handle = undefined
    this.#mux = undefined
    await handle?.close()
  }
}

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

/** A failed call, with the SDK client's error codes so callers handle every connection alike. */
export class CallError extends Error {
  readonly code: 'NOT_CONNECTED' | 'CONNECTION_CLOSED' | 'REQUEST_TIMEOUT' | 'ABORTED' | 'PROTOCOL_ERROR'
  /** The JSON-RPC error code, for protocol errors. */
  readonly rpcCode: number | undefined
  readonly data: unknown
  constructor (code: CallError['code'], message: string, rpcCode?: number, data?: unknown) {
    super(message)
    this.name = 'CallError'
    this.code = code
    this.rpcCode = rpcCode
    this.data = data
  }
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
