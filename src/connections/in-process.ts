import {
  LATEST_PROTOCOL_VERSION,
  type CallToolResult,
  type InitializeResult,
  type JSONRPCMessage,
  type McpServer,
  type Progress,
  type Server,
  type ServerCapabilities,
  type Tool
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import { GATEWAY_INFO } from '../defaults.js'
import { CallError } from '../errors.js'
import { carryAuthInfo, interceptHandlers } from '../mcp/handlers.js'
import { MultiplexTransport } from '../mcp/multiplex-transport.js'
import { allPages, askDownstream, legacyParams, LIST_CHANGED } from '../mcp/protocol.js'
import { sharedJsonSchemaValidator } from '../mcp/validator.js'
import type { ListKind, McpConnection, RelayOptions, RelaySession, ServerFactory, ServerState } from './connection.js'

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
      let first: McpServer | Server | undefined = this.#connectionServer(mux)
      const factory = (): McpServer | Server => {
        const server = first ?? this.#connectionServer(mux)
        first = undefined
        return server
      }
      this.#handle = serveStdio(factory, { transport: mux })
      this.#initialized = await this.#request('initialize', {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        // What the gateway can pass on to the client of a call (`askDownstream`), as it
        // declares to upstreams: a call over REST, which has no client, is refused.
        capabilities: { sampling: {}, elicitation: { form: {}, url: {} } },
        clientInfo: GATEWAY_INFO
      }) as InitializeResult
      mux.notify({ jsonrpc: '2.0', method: 'notifications/initialized' })
      // A server with no tools (only prompts or resources) has no tools/list to ask.
      this.#tools = this.#initialized.capabilities.tools === undefined ? [] : await this.#listTools()
      this.#state = 'up'
    } catch (err) {
      // The error's own text (a path, a connection string) goes to the log, never into an answer.
      this.#failure = 'the server failed to start; see the log'
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
        ...(options.authInfo !== undefined && { origin: { authInfo: options.authInfo } }),
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

  /** The instance behind the gateway's own connection: it sees the caller of each call (`ctx.http.authInfo`). */
  #connectionServer (mux: MultiplexTransport): McpServer | Server {
    return interceptHandlers(this.createServer(), (_method, handler) => carryAuthInfo(handler, id => mux.originOf(id)?.authInfo))
  }

  async close (): Promise<void> {
    this.#state = 'closed'
    const handle = this.#handle
    this.#handle = undefined
    this.#mux = undefined
    await handle?.close()
  }
}
