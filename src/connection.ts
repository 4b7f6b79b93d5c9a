import {
  LATEST_PROTOCOL_VERSION,
  type CallToolResult,
  type ListToolsResult,
  type McpRequestContext,
  type McpServer,
  type Server,
  type ServerOptions,
  type Tool
} from '@modelcontextprotocol/server'
import { serveStdio, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import { MultiplexTransport } from './multiplex-transport.js'
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

/**
 * The one seam through which every mounted server is reached, whatever its transport.
 *
 * The REST shim and `/ready` talk to a connection; the Streamable HTTP endpoint asks it for
 * the server instances that answer downstream MCP clients (`createServer`). An in-process
 * server is one implementation; upstream stdio and remote servers implement the same
 * interface.
 */
export interface McpConnection {
  readonly name: string
  readonly state: ServerState
  /** Why the server is down, when it is. */
  readonly failure: string | undefined
  /** Connects and lists tools; throws when the server cannot start. */
  start (): Promise<void>
  /** The tools discovered at start, with their JSON Schemas. */
  tools (): readonly Tool[]
  callTool (name: string, args: Record<string, unknown>, options?: CallOptions): Promise<CallToolResult>
  /** A fresh server instance for one downstream MCP session or request. */
  createServer (ctx?: McpRequestContext): McpServer | Server
  close (): Promise<void>
}

/**
 * An in-process server, reached over a multiplexing transport (see `multiplex-transport.ts`)
 * into one long-lived connection opened by the SDK's own serving entry. The gateway is that
 * connection's client: it initializes it, lists tools and calls them. Nothing is built per
 * call, and no SDK `Client` sits on the REST hot path: its result parsing and output
 * validation would repeat work the server has just done (the server validates
 * `structuredContent` against the `outputSchema` before answering).
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

  constructor (name: string, factory: ServerFactory) {
    this.name = name
    this.#factory = factory
  }

  get state (): ServerState { return this.#state }
  get failure (): string | undefined { return this.#failure }

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
        }
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
      await this.#request('initialize', {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'fastify-mcp-gateway', version: '1.0.0' }
      })
      mux.notify({ jsonrpc: '2.0', method: 'notifications/initialized' })
      const tools: Tool[] = []
      let cursor: string | undefined
      do {
        const page = await this.#request('tools/list', cursor === undefined ? {} : { cursor }) as ListToolsResult
        tools.push(...page.tools)
        cursor = page.nextCursor
      } while (cursor !== undefined)
      this.#tools = tools
      this.#state = 'up'
    } catch (err) {
      this.#failure = err instanceof Error ? err.message : String(err)
      await this.close().catch(() => {})
      this.#state = 'down'
      throw err
    }
  }

  tools (): readonly Tool[] { return this.#tools }

  async callTool (name: string, args: Record<string, unknown>, options: CallOptions = {}): Promise<CallToolResult> {
    if (this.#state !== 'up') throw new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`)
    return await this.#request('tools/call', { name, arguments: args }, options) as CallToolResult
  }

  /** One request over the connection, with the SDK client's error codes for timeouts and closes. */
  #request (method: string, params: Record<string, unknown>, options: CallOptions = {}): Promise<unknown> {
    const mux = this.#mux
    if (mux === undefined) return Promise.reject(new CallError('NOT_CONNECTED', `Server '${this.name}' is ${this.#state}`))
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
        notify () {},
        respond: (response) => {
          if (!settle()) return
          if (mux.closed) reject(new CallError('CONNECTION_CLOSED', `Server '${this.name}' closed its connection`))
          else if ('error' in response) reject(new CallError('PROTOCOL_ERROR', response.error.message, response.error.code))
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

/** A failed call, with the SDK client's error codes so callers handle every connection alike. */
export class CallError extends Error {
  readonly code: 'NOT_CONNECTED' | 'CONNECTION_CLOSED' | 'REQUEST_TIMEOUT' | 'ABORTED' | 'PROTOCOL_ERROR'
  /** The JSON-RPC error code, for protocol errors. */
  readonly rpcCode: number | undefined
  constructor (code: CallError['code'], message: string, rpcCode?: number) {
    super(message)
    this.name = 'CallError'
    this.code = code
    this.rpcCode = rpcCode
  }
}
