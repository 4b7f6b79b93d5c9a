import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import {
  ProtocolError,
  ProtocolErrorCode,
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
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_SEPARATOR } from '../defaults.js'
import { CallError, InvalidOptionsError, invalidParams, JsonRpcCode, PromptNotFoundError, ResourceNotFoundError, ToolNotFoundError } from '../errors.js'
import { allPages } from '../mcp/protocol.js'
import { relayServer } from '../mcp/relay-server.js'
import type { CallContext, CallGate, CallMethod, ListKind, McpConnection, RelayOptions, RelaySession, ServerScope, ServerState } from './connection.js'
import type { MountedServer, ServerRegistry } from './registry.js'

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
 * A name cut to 64 characters when it is longer: its first 55 characters, `_`, and 8 hex
 * characters of its SHA-256. Deterministic, so a name stays the same across restarts and
 * replicas, and names that share a long start stay apart.
 */
function shortened (full: string): string {
  if (full.length <= MAX_NAME) return full
  return `${full.slice(0, MAX_NAME - 9)}_${createHash('sha256').update(full).digest('hex').slice(0, 8)}`
}

/** The namespaced name of a server's tool or prompt: `<server><separator><name>`, kept to 64 characters. */
export function namespacedName (server: string, name: string, separator = DEFAULT_SEPARATOR): string {
  return shortened(`${server}${separator}${name}`)
}

/** How a member's names appear on `/mcp`: the mount's `namespace` and `rename`. */
export type Naming = Pick<MountedServer, 'name' | 'namespace' | 'rename'>

/**
 * The name `/mcp` shows for a member's tool or prompt: renamed first (`rename`), then put
 * after the namespace (the server's name unless set; none with `namespace: false`), and kept
 * to 64 characters by the same rule either way.
 */
export function exposedName (server: Naming, name: string, separator = DEFAULT_SEPARATOR): string {
  // `Object.hasOwn`: a tool named `constructor` is not renamed to a function.
  const own = server.rename !== undefined && Object.hasOwn(server.rename, name) ? server.rename[name] as string : name
  const namespace = server.namespace ?? server.name
  return namespace === false ? shortened(own) : namespacedName(namespace, own, separator)
}

/** What the aggregate lists: tools and prompts by name, resources and templates by URI. */
export type ItemKind = 'tool' | 'prompt' | 'resource' | 'resource template'

/** Two members offering one name (or URI) on `/mcp`: `kept` answers for it, `dropped` is left out. */
export interface Collision {
  kind: ItemKind
  /** The name (or URI) as `/mcp` shows it. */
  name: string
  kept: { server: string, name: string }
  dropped: { server: string, name: string }
}

/** One sentence naming both servers, for the boot error and the logs. */
export function describeCollision ({ kind, name, kept, dropped }: Collision): string {
  const side = (which: { server: string, name: string }): string => `server '${which.server}'${which.name === name ? '' : ` (its ${kind} '${which.name}')`}`
  return `the ${kind} ${kind.startsWith('resource') ? 'URI' : 'name'} '${name}' on /mcp is offered by ${side(kept)} and by ${side(dropped)}`
}

interface Entry<T> { member: McpConnection, original: string, item: T }

/**
 * Every mounted server behind one MCP endpoint (`/mcp`): tools and prompts under the names
 * each server's `namespace` and `rename` give them, resources under their own URIs, each
 * request relayed to the server that owns the name through the same seam as everything else
 * (`McpConnection.request`), so progress, cancellation and questions to the client travel as
 * they do on the server's own endpoint. The filters of the call pipeline see the member and
 * its own names; the client sees only the names it uses, in lists and in errors alike.
 *
 * A member that is down keeps its tools listed; calling one answers that it is down, as its
 * own endpoint would.
 *
 * Two members offering one tool or prompt name: a member's lists are known only once it is
 * up, and may change later (`list_changed`), so the one rule has two moments.
 * - At start (the gateway's boot), a name offered by two of the servers that are up is a
 *   config error: `start` throws `InvalidOptionsError` naming the name and both servers, and
 *   the boot stops there rather than serve a name whose server depends on the config's order.
 * - Afterwards (a list change, a server that comes up late, a config reload), nothing can be
 *   refused any more without taking away what clients already use: the server that had the
 *   name keeps it (the first in the config, if neither had it), the other's item is left out,
 *   and an error is logged naming both, once per collision.
 * A resource URI is the resource's own identity (tool results link to it), so it is never
 * rewritten: a URI two servers list is reported at start (a warning naming the URI and both
 * servers) and read from the first server in the config, as one a template matches.
 */
export class AggregateConnection implements McpConnection {
  readonly name: string
  #registry: ServerRegistry
  #separator: string
  #options: AggregateOptions
  #tools = new Map<string, Entry<Tool>>()
  /** What the tool index was built from: each member's entry and tool list, in order. */
  #builtFrom: Array<{ server: MountedServer, tools: readonly Tool[] }> = []
  /** `tools()`, built with the index: it is read on every tools/list and 2026-07-28 tools/call. */
  #toolList: Tool[] = []
  #prompts = new Map<string, Entry<Prompt>>()
  #resources = new Map<string, McpConnection>()
  #templates: Array<{ member: McpConnection, template: UriTemplate, raw: string }> = []
  #listeners = new Set<(kind: ListKind) => void>()
  #state: ServerState = 'starting'
  #failure: string | undefined
  #started: Promise<void> | undefined
  /** The collisions last logged, per kind: each is logged once, not on every list. */
  #reported = new Map<ItemKind, Set<string>>()

  constructor (name: string, registry: ServerRegistry, options: AggregateOptions = {}) {
    this.name = name
    this.#registry = registry
    this.#separator = options.separator ?? DEFAULT_SEPARATOR
    this.#options = options
    registry.onListChanged((_server, kind) => {
      // Built now rather than on the next call, so a collision the change brings is logged when it appears.
      if (kind === 'tools' && this.#state === 'up') this.#toolIndex()
      for (const listener of this.#listeners) listener(kind)
      this.#followMembers()
    })
  }

  /** Each session's attachment to each member, so members that join or leave later (a config reload) are followed. */
  #attached = new Map<RelaySession, Map<McpConnection, () => void>>()

  /**
   * After a change of members (added, replaced or removed through the registry): every
   * session is attached to the new ones and detached from those gone, and told that its
   * lists changed, which no member does for a change of members.
   */
  #followMembers (): void {
    if (this.#attached.size === 0) return
    const members = new Set(this.#members.map(server => server.connection))
    for (const [session, attached] of this.#attached) {
      let changed = false
      for (const [connection, detach] of attached) {
        if (members.has(connection)) continue
        detach()
        attached.delete(connection)
        changed = true
      }
      for (const connection of members) {
        if (attached.has(connection)) continue
        attached.set(connection, connection.attach(session))
        changed = true
      }
      if (!changed) continue
      for (const kind of ['tools', 'prompts', 'resources'] as const) session.notify({ method: `notifications/${kind}/list_changed` })
    }
  }

  /** The mounted servers, in config order: read from the registry on each use, so servers added later join. */
  get #members (): MountedServer[] { return this.#registry.servers() }

  /**
   * One request to a member through the pipeline, under the member's own names; a name the
   * caller may not see answers as an unknown name of this endpoint does. What comes back
   * names the item as the client does (`exposed`).
   */
  async #call (entry: { member: McpConnection, original: string }, method: CallMethod, exposed: string, params: Record<string, unknown>, options: RelayOptions): Promise<Record<string, unknown>> {
    const { pipeline } = this.#options
    const send = async (): Promise<Record<string, unknown>> => await entry.member.request(method, params, options)
    const kind = method === 'tools/call' ? 'tool' : method === 'prompts/get' ? 'prompt' : 'resource'
    let result: Record<string, unknown>
    try {
      result = pipeline === undefined || !pipeline.active
        ? await send()
        : await pipeline.call(this.#context(entry.member, options, { method, name: entry.original, ...(params.arguments !== undefined && { arguments: params.arguments as Record<string, unknown> }) }), send, err => {
          if (err instanceof ToolNotFoundError) return invalidParams(`Tool ${exposed} not found`)
          if (err instanceof PromptNotFoundError) return invalidParams(`Prompt ${exposed} not found`)
          if (err instanceof ResourceNotFoundError) return new CallError('PROTOCOL_ERROR', `Resource ${exposed} not found`, JsonRpcCode.InvalidParams, { uri: exposed })
          return err
        })
    } catch (err) {
      // Outside the pipeline: its observers saw the member's own failure (a timeout is a timeout).
      throw failureAsSeen(err, kind, entry.original, exposed)
    }
    return kind === 'tool' && entry.original !== exposed ? toolResultAsSeen(result, entry.original, exposed) : result
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
  get failure (): string | undefined { return this.#failure }
  get retryAfter (): undefined { return undefined }

  /**
   * The members start themselves (each mount awaits its own before this one's); this lists
   * what the ones that are up offer and refuses a name two of them offer. Idempotent.
   */
  async start (): Promise<void> {
    this.#started ??= this.#start()
    await this.#started
  }

  async #start (): Promise<void> {
    // Bounded like a connect: a member that does not answer its lists must not hold the boot.
    const options: RelayOptions = { timeoutMs: DEFAULT_CONNECT_TIMEOUT_MS }
    const tools = this.#buildTools()
    const prompts = await this.#buildPrompts(options)
    // Resource URIs two servers share are reported (logged) while they are gathered.
    await this.request('resources/list', {}, options)
    await this.request('resources/templates/list', {}, options)
    const collisions = [...tools, ...prompts]
    if (collisions.length > 0) {
      const message = `${collisions.map(describeCollision).join('; ')}: give one of the servers its own "namespace", or "rename" one of the items`
      // Shown by `/mcp` (503) should the boot go on regardless.
      this.#state = 'down'
      this.#failure = message
      throw new InvalidOptionsError(message)
    }
    this.#state = 'up'
  }

  /**
   * The tool index, built again when a member joined, left or was replaced, or lists other
   * tools, since it was built. Checked on each use rather than on list-change events alone: a
   * server that joins at run time is announced before it has started, and an in-process one
   * announces nothing when it starts. A few reference comparisons per call.
   */
  #toolIndex (): Map<string, Entry<Tool>> {
    const servers = this.#members
    const built = this.#builtFrom
    if (servers.length !== built.length || servers.some((server, i) => built[i]?.server !== server || built[i]?.tools !== server.connection.tools())) {
      this.#report('tool', this.#buildTools(servers))
    }
    return this.#tools
  }

  #buildTools (servers = this.#members): Collision[] {
    const lists = servers.map(server => ({ server, items: server.connection.tools() }))
    const { index, collisions } = this.#index(lists, 'tool', this.#tools)
    this.#builtFrom = lists.map(({ server, items }) => ({ server, tools: items }))
    this.#tools = index
    this.#toolList = [...index.values()].map(entry => entry.item)
    return collisions
  }

  /**
   * The exposed names of `lists`' items, each owned by one member. A name that had an owner
   * (`previous`) keeps it, so a list change never hands a name a client already uses to
   * another server's item; otherwise the first server in the config gets it. The index keeps
   * the config's order either way.
   */
  #index<T extends { name: string }> (lists: Array<{ server: MountedServer, items: readonly T[] }>, kind: ItemKind, previous: ReadonlyMap<string, Entry<T>>): { index: Map<string, Entry<T>>, collisions: Collision[] } {
    const candidates = lists.flatMap(({ server, items }) => items.map(item => ({ server, item, exposed: exposedName(server, item.name, this.#separator) })))
    const incumbent = (candidate: typeof candidates[number]): boolean => {
      const before = previous.get(candidate.exposed)
      return before !== undefined && before.member === candidate.server.connection && before.original === candidate.item.name
    }
    const owners = new Map<string, typeof candidates[number]>()
    const collisions: Collision[] = []
    for (const candidate of [...candidates.filter(incumbent), ...candidates.filter(candidate => !incumbent(candidate))]) {
      const owner = owners.get(candidate.exposed)
      if (owner === undefined) owners.set(candidate.exposed, candidate)
      else collisions.push({ kind, name: candidate.exposed, kept: { server: owner.server.name, name: owner.item.name }, dropped: { server: candidate.server.name, name: candidate.item.name } })
    }
    const index = new Map<string, Entry<T>>()
    for (const candidate of candidates) {
      if (owners.get(candidate.exposed) !== candidate) continue
      index.set(candidate.exposed, { member: candidate.server.connection, original: candidate.item.name, item: { ...candidate.item, name: candidate.exposed } })
    }
    return { index, collisions }
  }

  /** Logs the collisions of `kind` not logged before: tool and prompt names at `error` (an item is left out), resource URIs at `warn`. */
  #report (kind: ItemKind, collisions: Collision[]): void {
    const before = this.#reported.get(kind)
    const now = new Set<string>()
    for (const collision of collisions) {
      const key = `${collision.name}\0${collision.kept.server}\0${collision.dropped.server}\0${collision.dropped.name}`
      now.add(key)
      if (before?.has(key) === true) continue
      const context = { kind, name: collision.name, servers: [collision.kept.server, collision.dropped.server], kept: `${collision.kept.server}/${collision.kept.name}`, dropped: `${collision.dropped.server}/${collision.dropped.name}` }
      if (kind === 'tool' || kind === 'prompt') this.#options.log?.error(context, 'name collision on the aggregated endpoint: the server that had the name keeps it, the other item is left out')
      else this.#options.log?.warn(context, 'resource URI offered by two servers on the aggregated endpoint: the first server in the config answers for it')
    }
    this.#reported.set(kind, now)
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
    const names = this.#members.map(server => {
      const namespace = server.namespace ?? server.name
      return namespace === false ? `${server.name} (its own names)` : `${server.name} ('${namespace}${this.#separator}')`
    })
    return `One MCP endpoint for the servers ${names.join(', ')}: each tool and prompt name starts with its server's namespace and '${this.#separator}', shown here beside each server.`
  }

  onListChanged (listener: (kind: ListKind) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  attach (session: RelaySession): () => void {
    const attached = new Map(this.#members.map(server => [server.connection, server.connection.attach(session)]))
    this.#attached.set(session, attached)
    return () => {
      this.#attached.delete(session)
      for (const undo of attached.values()) undo()
    }
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
          resources: await this.#gather<Resource>('resources/list', 'resources', 'resource', options, resource => resource.uri, (member, resource) => { this.#resources.set(resource.uri, member) })
        }
      case 'resources/templates/list':
        this.#templates = []
        return {
          resourceTemplates: await this.#gather<ResourceTemplateType>('resources/templates/list', 'resourceTemplates', 'resource template', options, template => template.uriTemplate, (member, template) => {
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

  #up (): McpConnection[] { return this.#upServers().map(server => server.connection) }
  #upServers (): MountedServer[] { return this.#members.filter(server => server.connection.state === 'up') }

  /** Prompts are listed afresh each time: members announce no prompt list the gateway keeps. */
  async #promptIndex (options: RelayOptions): Promise<Map<string, Entry<Prompt>>> {
    this.#report('prompt', await this.#buildPrompts(options))
    return this.#prompts
  }

  async #buildPrompts (options: RelayOptions): Promise<Collision[]> {
    // A member that fails to list loses its prompts from this list only, not the others theirs.
    const lists = await Promise.all(this.#upServers().filter(server => server.connection.capabilities().prompts !== undefined)
      .map(async server => ({ server, items: await listAll<Prompt>(server.connection, 'prompts/list', 'prompts', options).catch(() => [] as Prompt[]) })))
    const { index, collisions } = this.#index(lists, 'prompt', this.#prompts)
    this.#prompts = index
    return collisions
  }

  /**
   * One list from every member that offers it, one after another in config order. An item
   * (by `id`) that several members list is listed once, for the first of them, which then
   * answers for it; the others are reported.
   */
  async #gather<T> (method: string, key: string, kind: ItemKind, options: RelayOptions, id: (item: T) => string, seen: (member: McpConnection, item: T) => void): Promise<T[]> {
    const members = this.#up().filter(member => member.capabilities().resources !== undefined)
    const lists = await Promise.all(members.map(async member => await listAll<T>(member, method, key, options).catch(() => [] as T[])))
    const owners = new Map<string, string>()
    const collisions: Collision[] = []
    const { pipeline } = this.#options
    const gathered = lists.flatMap((items, i) => items.filter(item => {
      const member = members[i] as McpConnection
      const owner = owners.get(id(item))
      if (owner !== undefined) {
        if (owner !== member.name) collisions.push({ kind, name: id(item), kept: { server: owner, name: id(item) }, dropped: { server: member.name, name: id(item) } })
        return false
      }
      owners.set(id(item), member.name)
      seen(member, item)
      // Routed (so the owner stays the first server) but hidden from a caller who may not read it.
      return pipeline === undefined || !pipeline.active || pipeline.allows(this.#context(member, options, { method: 'resources/read', name: id(item) }))
    }))
    this.#report(kind, collisions)
    return gathered
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

/**
 * `tool add` (or `Tool add`, `prompt …`) in a member's message, as `tool math_add`: how the
 * SDK's servers name the item in their errors ("Tool add not found", "Input validation error:
 * Invalid arguments for tool add: …") and Python's FastMCP too ("Error executing tool add: …").
 */
function renamedIn (text: string, kind: 'tool' | 'prompt', original: string, exposed: string): string {
  const escaped = original.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  // Not followed by more of a name: `tool add` is not `tool add_all`.
  return text.replace(new RegExp(`\\b(${kind}|${kind[0]?.toUpperCase() ?? ''}${kind.slice(1)}) ${escaped}(?![A-Za-z0-9_-]|\\.[A-Za-z0-9_-])`, 'g'), (_match, word: string) => `${word} ${exposed}`)
}

/**
 * A member's failure as the client of `/mcp` sees it. Its own JSON-RPC error keeps its code
 * and data, the item renamed in its message; a failure of the gateway's (timed out, down,
 * crashed) names the item the client called, since the member's name for it means nothing
 * there. The catalogue's errors (down, rate limited) name servers, not items, and pass.
 */
function failureAsSeen (err: unknown, kind: 'tool' | 'prompt' | 'resource', original: string, exposed: string): unknown {
  if (!(err instanceof CallError)) return err
  const label = `${kind[0]?.toUpperCase() ?? ''}${kind.slice(1)}`
  if (err.code === 'PROTOCOL_ERROR') {
    if (kind === 'resource' || original === exposed) return err
    const message = renamedIn(err.message, kind, original, exposed)
    return message === err.message ? err : new CallError(err.code, message, err.rpcCode, err.data)
  }
  return new ProtocolError(ProtocolErrorCode.InternalError, `${label} ${exposed}: ${err.message}`)
}

/**
 * A tool's error result (`isError`) with the tool renamed in its text: the SDK's servers
 * answer bad arguments so, not as a JSON-RPC error (SEP-1303), and the model reading it
 * must retry under the name it knows. Other results pass untouched.
 */
function toolResultAsSeen (result: Record<string, unknown>, original: string, exposed: string): Record<string, unknown> {
  if (result.isError !== true || !Array.isArray(result.content)) return result
  let changed = false
  const content = (result.content as Array<Record<string, unknown>>).map(block => {
    if (block?.type !== 'text' || typeof block.text !== 'string') return block
    const text = renamedIn(block.text, 'tool', original, exposed)
    if (text === block.text) return block
    changed = true
    return { ...block, text }
  })
  return changed ? { ...result, content } : result
}
