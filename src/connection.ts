import {
  InMemoryTransport,
  McpServer,
  SdkError,
  SdkErrorCode,
  type CallToolResult,
  type McpRequestContext,
  type Server,
  type ServerOptions,
  type Tool
} from '@modelcontextprotocol/server'
import { Client } from '@modelcontextprotocol/client'
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
 * An in-process server, reached through an SDK `Client` over an in-memory linked transport
 * pair. One long-lived server instance answers every REST call, so nothing is constructed
 * per request; downstream MCP sessions get their own instance from the same factory.
 */
export class InProcessConnection implements McpConnection {
  readonly name: string
  #factory: ServerFactory
  #state: ServerState = 'starting'
  #failure: string | undefined
  #client: Client | undefined
  #server: McpServer | Server | undefined
  #tools: Tool[] = []

  constructor (name: string, factory: ServerFactory) {
    this.name = name
    this.#factory = factory
  }

  get state (): ServerState { return this.#state }
  get failure (): string | undefined { return this.#failure }

  async start (): Promise<void> {
    try {
      const server = this.createServer()
      const client = new Client({ name: 'fastify-mcp-gateway', version: '1.0.0' }, { jsonSchemaValidator: sharedJsonSchemaValidator })
      const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair()
      this.#server = server
      await server.connect(serverTransport)
      await client.connect(clientTransport)
      // The server closing on its own (a crash, a tool that ends it) takes it down: calls in
      // flight fail with 502, later calls get 503.
      client.onclose = () => {
        if (this.#state === 'up') {
          this.#state = 'down'
          this.#failure = 'the server closed its connection'
        }
      }
      this.#client = client
      this.#tools = (await client.listTools()).tools
      this.#state = 'up'
    } catch (err) {
      this.#state = 'down'
      this.#failure = err instanceof Error ? err.message : String(err)
      await this.close().catch(() => {})
      this.#state = 'down'
      throw err
    }
  }

  tools (): readonly Tool[] { return this.#tools }

  async callTool (name: string, args: Record<string, unknown>, options: CallOptions = {}): Promise<CallToolResult> {
    const client = this.#client
    if (client === undefined || this.#state !== 'up') {
      throw new SdkError(SdkErrorCode.NotConnected, `Server '${this.name}' is ${this.#state}`)
    }
    const result = await client.callTool({ name, arguments: args }, {
      ...(options.signal !== undefined && { signal: options.signal }),
      ...(options.timeoutMs !== undefined && { timeout: options.timeoutMs })
    })
    return result as CallToolResult
  }

  createServer (): McpServer | Server {
    return this.#factory({ jsonSchemaValidator: sharedJsonSchemaValidator })
  }

  async close (): Promise<void> {
    this.#state = 'closed'
    const client = this.#client
    const server = this.#server
    this.#client = undefined
    this.#server = undefined
    await client?.close()
    await server?.close()
  }
}
