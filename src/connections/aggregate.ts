import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import {
  UriTemplate,
  type CallToolResult,
  type McpRequestContext,
  type Prompt,
  type Resource,
  type ResourceTemplateType,
  type Server,
  type ServerCapabilities,
  type Tool
} from '@modelcontextprotocol/server'
import { DEFAULT_SEPARATOR } from '../defaults.js'
import { CallError, invalidParams, JsonRpcCode, PromptNotFoundError, ResourceNotFoundError, ToolNotFoundError } from '../errors.js'
import { allPages } from '../mcp/protocol.js'
import { relayServer } from '../mcp/relay-server.js'
import type { CallContext, CallGate, CallMethod, ListKind, McpConnection, RelayOptions, RelaySession, ServerScope, ServerState } from './connection.js'
import type { ServerRegistry } from './registry.js'

/** MCP clients commonly reject tool names longer than this (and some models do too). */
const MAX_NAME = 64

export interface AggregateOptions {
  /** Between the server's name and the tool's or prompt's. Default `DEFAULT_SEPARATOR`. */
  separator?: string
  /** Per-request timeout of relayed requests. Default `DEFAULT_TIMEOUT_MS`. */
  timeoutMs?: number
  /** The filters every request to a member passes, with the member's own names. */
  pipeline?: CallGate
  log?: FastifyBaseLogger
}

/**
 * The namespaced name of a server's tool or prompt: `<server><separator><name>`, or, when
 * that is longer than 64 characters, its first 55 characters, `_`, and 8 hex characters of
 * its SHA-256: deterministic, so a name stays the same across restarts and replicas.
 */
export function namespacedName (server: string, name: string, separator = DEFAULT_SEPARATOR): string {
  const full = `${server}${separator}${name}`
  if (full.length <= MAX_NAME) return full
  return `${full.slice(0, MAX_NAME - 9)}_${createHash('sha256').update(full).digest('hex').slice(0, 8)}`
}

interface Entry<T> { member: McpConnection, original: string, item: T }

/**
 * Every mounted server behind one MCP endpoint (`/mcp`): tools and prompts under
 * namespaced names, resources under their own URIs (which name their server already), each
 * request relayed to the server that owns the name through the same seam as everything
 * else (`McpConnection.request`), so progress, cancellation and questions to the client
 * travel as they do on the server's own endpoint.
 *
 * A member that is down keeps its tools listed; calling one answers that it is down, as
 * its own endpoint would. Two names that map to one namespaced name are a collision: the
 * first server in the config keeps it, and the others' are left out and logged.
 */
export class AggregateConnection implements McpConnection {
  readonly name: string
  #registry: ServerRegistry
  #separator: string
  #options: AggregateOptions
  #tools: Map<string, Entry<Tool>> | undefined
  /** `tools()`, built with the index: it is read on every tools/list and 2026-07-28 tools/call. */
  #toolList: Tool[] = []
  #prompts = new Map<string, Entry<Prompt>>()
  #resources = new Map<string, McpConnection>()
  #templates: Array<{ member: McpConnection, template: UriTemplate, raw: string }> = []
  #listeners = new Set<(kind: ListKind) => void>()
  #state: ServerState = 'starting'

  constructor (name: string, registry: ServerRegistry, options: AggregateOptions = {}) {
    this.name = name
    this.#registry = registry
    this.#separator = options.separator ?? DEFAULT_SEPARATOR
    this.#options = options
    registry.onListChanged((_server, kind) => {
      if (kind === 'tools') this.#tools = undefined
      for (const listener of this.#listeners) listener(kind)
    })
  }

  /** The mounted servers, in config order: read from the registry on each use, so servers added later join. */
  get #members (): McpConnection[] { return this.#registry.connections() }

  /**
   * One request to a member through the pipeline, under the member's own names; a name the
   * caller may not see answers as an unknown name of this endpoint does.
   */
  async #call (entry: { member: McpConnection, original: string }, method: CallMethod, exposed: string, params: Record<string, unknown>, options: RelayOptions): Promise<Record<string, unknown>> {
    const { pipeline } = this.#options
    const send = async (): Promise<Record<string, unknown>> => await entry.member.request(method, params, options)
    if (pipeline === undefined || !pipeline.active) return await send()
    return await pipeline.call(this.#context(entry.member, options, { method, name: entry.original, ...(params.arguments !== undefined && { arguments: params.arguments as Record<string, unknown> }) }), send, err => {
      if (err instanceof ToolNotFoundError) return invalidParams(`Tool ${exposed} not found`)
      if (err instanceof PromptNotFoundError) return invalidParams(`Prompt ${exposed} not found`)
      if (err instanceof ResourceNotFoundError) return new CallError('PROTOCOL_ERROR', `Resource ${exposed} not found`, JsonRpcCode.InvalidParams, { uri: exposed })
      return err
    })
  }

  #context (member: McpConnection, options: RelayOptions, call: Pick<CallContext, 'method' | 'name' | 'arguments'>): CallContext {
    return {
      server: member.name,
      way: 'aggregate',
      ...(options.authInfo !== undefined && { identity: options.authInfo }),
      ...(options.origin?.requestId !== undefined && { requestId: options.origin.requestId }),
      ...(options.origin?.ip !== undefined && { ip: options.origin.ip }),
      ...call
    }
  }

  /** The entries the caller may see. */
  #visible<T> (entries: Array<Entry<T>>, method: CallMethod, options: RelayOptions): Array<Entry<T>> {
    const { pipeline } = this.#options
    if (pipeline === undefined || !pipeline.active) return entries
    return entries.filter(entry => pipeline.allows(this.#context(entry.member, options, { method, name: entry.original })))
  }

  get state (): ServerState { return this.#state }
  get failure (): undefined { return undefined }
  get retryAfter (): undefined { return undefined }

  /** The members start themselves; this reports name collisions among what they offer. */
  async start (): Promise<void> {
    this.#toolIndex()
    this.#state = 'up'
  }

  #toolIndex (): Map<string, Entry<Tool>> {
    if (this.#tools !== undefined) return this.#tools
    const index = this.#index(this.#members.map(member => ({ member, items: member.tools() })), 'tool')
    this.#tools = index
    this.#toolList = [...index.values()].map(entry => entry.item)
    return index
  }

  #index<T extends { name: string }> (lists: Array<{ member: McpConnection, items: readonly T[] }>, what: string): Map<string, Entry<T>> {
    const index = new Map<string, Entry<T>>()
    for (const { member, items } of lists) {
      for (const item of items) {
        const name = namespacedName(member.name, item.name, this.#separator)
        const taken = index.get(name)
        if (taken !== undefined) {
          this.#options.log?.warn({ name, kept: `${taken.member.name}/${taken.original}`, dropped: `${member.name}/${item.name}` }, `${what} name collision on the aggregated endpoint`)
          continue
        }
        index.set(name, { member, original: item.name, item: { ...item, name } })
      }
    }
    return index
  }

  tools (): readonly Tool[] {
    this.#toolIndex()
    return this.#toolList
  }

  /** Declares everything: a member that is down now may offer it once it is back. */
  capabilities (): ServerCapabilities {
    return { tools: { listChanged: true }, prompts: { listChanged: true }, resources: { listChanged: true, subscribe: true }, completions: {}, logging: {} }
  }

  instructions (): string {
    return `One MCP endpoint for the servers ${this.#members.map(member => member.name).join(', ')}. Tool and prompt names start with the server's name and '${this.#separator}'.`
  }

  onListChanged (listener: (kind: ListKind) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  attach (session: RelaySession): () => void {
    const detach = this.#members.map(member => member.attach(session))
    return () => { for (const undo of detach) undo() }
  }

  createServer (_ctx?: McpRequestContext, scope: ServerScope = 'shared'): Server {
    return relayServer(this, scope, this.#options.timeoutMs)
  }

  async callTool (name: string, args: Record<string, unknown>, options?: RelayOptions): Promise<CallToolResult> {
    return await this.request('tools/call', { name, arguments: args }, options) as CallToolResult
  }

  async request (method: string, params: Record<string, unknown> = {}, options: RelayOptions & { session?: RelaySession } = {}): Promise<Record<string, unknown>> {
    switch (method) {
      case 'tools/list': {
        const { pipeline } = this.#options
        if (pipeline === undefined || !pipeline.active) return { tools: this.tools() }
        return { tools: this.#visible([...this.#toolIndex().values()], 'tools/call', options).map(entry => entry.item) }
      }
      case 'tools/call': {
        const entry = this.#toolIndex().get(String(params.name))
        if (entry === undefined) throw invalidParams(`Tool ${String(params.name)} not found`)
        return await this.#call(entry, method, String(params.name), { ...params, name: entry.original }, options)
      }
      case 'prompts/list':
        return { prompts: this.#visible([...(await this.#promptIndex(options)).values()], 'prompts/get', options).map(entry => entry.item) }
      case 'prompts/get': {
        const entry = this.#prompts.get(String(params.name)) ?? (await this.#promptIndex(options)).get(String(params.name))
        if (entry === undefined) throw invalidParams(`Prompt ${String(params.name)} not found`)
        return await this.#call(entry, method, String(params.name), { ...params, name: entry.original }, options)
      }
      case 'resources/list':
        return {
          resources: await this.#gather<Resource>('resources/list', 'resources', options, resource => resource.uri, (member, resource) => { this.#resources.set(resource.uri, member) })
        }
      case 'resources/templates/list':
        this.#templates = []
        return {
          resourceTemplates: await this.#gather<ResourceTemplateType>('resources/templates/list', 'resourceTemplates', options, template => template.uriTemplate, (member, template) => {
            try {
              this.#templates.push({ member, template: new UriTemplate(template.uriTemplate), raw: template.uriTemplate })
            } catch {}
          })
        }
      case 'resources/read':
      case 'resources/subscribe': {
        const uri = String(params.uri)
        return await this.#call({ member: await this.#owner(uri, options), original: uri }, method, uri, params, options)
      }
      case 'resources/unsubscribe':
        return await (await this.#owner(String(params.uri), options)).request(method, params, options)
      case 'completion/complete': {
        const ref = params.ref as { type?: string, name?: string, uri?: string } | undefined
        if (ref?.type === 'ref/prompt') {
          const entry = this.#prompts.get(String(ref.name)) ?? (await this.#promptIndex(options)).get(String(ref.name))
          if (entry === undefined) throw invalidParams(`Prompt ${String(ref.name)} not found`)
          return await entry.member.request(method, { ...params, ref: { ...ref, name: entry.original } }, options)
        }
        const owner = this.#templates.find(candidate => candidate.raw === ref?.uri)?.member ?? await this.#owner(String(ref?.uri), options)
        return await owner.request(method, params, options)
      }
      case 'logging/setLevel':
        await Promise.allSettled(this.#up().filter(member => member.capabilities().logging !== undefined)
          .map(member => member.request(method, params, options)))
        return {}
    }
    throw new CallError('PROTOCOL_ERROR', `Method not found: ${method}`, JsonRpcCode.MethodNotFound)
  }

  #up (): McpConnection[] { return this.#members.filter(member => member.state === 'up') }

  async #promptIndex (options: RelayOptions): Promise<Map<string, Entry<Prompt>>> {
    const lists = await Promise.all(this.#up().filter(member => member.capabilities().prompts !== undefined)
      .map(async member => ({ member, items: await listAll<Prompt>(member, 'prompts/list', 'prompts', options) })))
    this.#prompts = this.#index(lists, 'prompt')
    return this.#prompts
  }

  /**
   * One list from every member that offers it, one after another in config order. An item
   * (by `id`) that several members list is listed once, for the first of them, which then
   * answers for it, as for a tool name two servers share.
   */
  async #gather<T> (method: string, key: string, options: RelayOptions, id: (item: T) => string, seen: (member: McpConnection, item: T) => void): Promise<T[]> {
    const members = this.#up().filter(member => member.capabilities().resources !== undefined)
    const lists = await Promise.all(members.map(async member => await listAll<T>(member, method, key, options).catch(() => [] as T[])))
    const ids = new Set<string>()
    const { pipeline } = this.#options
    return lists.flatMap((items, i) => items.filter(item => {
      const member = members[i] as McpConnection
      if (ids.has(id(item))) return false
      ids.add(id(item))
      seen(member, item)
      // Routed (so the owner stays the first server) but hidden from a caller who may not read it.
      return pipeline === undefined || !pipeline.active || pipeline.allows(this.#context(member, options, { method: 'resources/read', name: id(item) }))
    }))
  }

  /** The member that listed a URI, or whose template matches it; lists are refreshed once on a miss. */
  async #owner (uri: string, options: RelayOptions): Promise<McpConnection> {
    const find = (): McpConnection | undefined => this.#resources.get(uri) ??
      this.#templates.find(candidate => candidate.template.match(uri) !== null)?.member
    let owner = find()
    if (owner === undefined) {
      await this.request('resources/list', {}, options)
      await this.request('resources/templates/list', {}, options)
      owner = find()
    }
    if (owner === undefined) throw new CallError('PROTOCOL_ERROR', `Resource ${uri} not found`, JsonRpcCode.ResourceNotFound, { uri })
    return owner
  }

  async close (): Promise<void> {
    this.#state = 'closed'
  }
}

async function listAll<T> (member: McpConnection, method: string, key: string, options: RelayOptions): Promise<T[]> {
  return await allPages<T>(async params => await member.request(method, params, { ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }) }), key)
}
