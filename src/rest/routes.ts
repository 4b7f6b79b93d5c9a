import type { Socket } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AuthInfo, CallToolResult, Prompt, Resource, Tool } from '@modelcontextprotocol/server'
import type { McpConnection } from '../connections/connection.js'
import {
  CapabilityMissingError,
  InternalError,
  InvalidArgumentsError,
  JsonRpcCode,
  MethodNotAllowedError,
  PromptNotFoundError,
  ResourceNotFoundError,
  ShuttingDownError,
  TOOL_ERROR_CODE,
  TOOL_ERROR_STATUS,
  toHttpError,
  ToolNotFoundError,
  type CallError,
  type CallTarget,
  type GatewayError
} from '../errors.js'
import { allPages } from '../mcp/protocol.js'
import type { CallContext, CallMethod, CallPipeline, ListMethod } from '../pipeline/pipeline.js'
import { invalidArguments, Refusals } from './refusals.js'
import {
  callToolResultSchema,
  listSchema,
  PromptItem,
  PromptResult,
  ResourceItem,
  ResourceResult,
  ToolItem,
  withExample
} from './schemas.js'
import { documentedSchema, exampleOf, toolValidatorCompiler, validationSchema } from './tool-schemas.js'

/** Tool and prompt names that can be a static route segment as they are. */
const ROUTE_SAFE_NAME = /^[A-Za-z0-9_.-]+$/

/** Items of a list shown in its documented example, and resource URIs offered as examples of `?uri=`: a sample, not the whole list. */
const EXAMPLE_ITEMS = 3
const EXAMPLE_URIS = 20
/** Longest wait for a server's prompt and resource lists at start (the boot waits for them); past it they are documented generically. */
const LIST_AT_START_TIMEOUT_MS = 5000

/** The answers of these routes pass through as the server gave them; the response schemas document them. */
const passThrough = (): (data: unknown) => string => data => JSON.stringify(data)

export interface RestOptions {
  /** The mounted server's name: tags, operation ids and error messages. */
  name: string
  connection: McpConnection
  pipeline: CallPipeline
  timeoutMs: number
  bodyLimit: number
}

/**
 * The REST face of one mounted server, registered under its prefix:
 *
 * - `GET /tools` and `POST /tools/<name>`: each tool a REST operation, its arguments
 *   validated by Fastify against the tool's `inputSchema` before the tool runs;
 * - `GET /prompts` and `POST /prompts/<name>`: each prompt an operation, its arguments
 *   strings (as MCP prompt arguments are), validated as strings;
 * - `GET /resources` and `GET /resources/read?uri=`.
 *
 * Any other method on these URLs is a 405 naming the one they take. Every call and list
 * passes the call pipeline, as the MCP paths do.
 *
 * Tools and prompts are routed while the server's plugin registers, because Fastify cannot
 * add routes after boot and each needs its own route to be its own OpenAPI operation. A
 * parametric route behind them (`/tools/:tool`, `/prompts/:prompt`) serves those that appear
 * later, and answers unknown names with a 404 that names them.
 */
export function registerRestRoutes (app: FastifyInstance, options: RestOptions): { cancelInFlight: () => void } {
  const rest = new RestCalls(options)
  const refusals = new Refusals({
    server: options.name,
    security: app.gatewaySecurity,
    scopes: app.mcpRegistry.get(options.name)?.scopes ?? [],
    timeoutMs: options.timeoutMs,
    bodyLimit: options.bodyLimit,
    maxJsonDepth: app.maxJsonDepth
  })
  const { name, connection } = options

  const tools = connection.tools()
  // Tools whose schemas hold a `$ref` are left out of the example: OpenAPI tooling (swagger-parser,
  // the viewers) resolves every `$ref` in the document, examples included, and a tool's
  // `#/$defs/...` means nothing there.
  const sample = tools.filter(tool => !JSON.stringify(tool).includes('"$ref"')).slice(0, EXAMPLE_ITEMS)
  app.get('/tools', {
    serializerCompiler: passThrough,
    schema: {
      tags: [name],
      operationId: `${name}__listTools`,
      summary: `The tools of '${name}' with their JSON Schemas`,
      response: {
        200: withExample(listSchema('tools', 'The tools offered now', ToolItem), 'The tools offered now, those the caller may see', {
          tools: { summary: sample.length < tools.length ? `${sample.length} of the ${tools.length} tools at start` : 'The tools at start', value: { server: name, tools: sample } }
        }),
        ...refusals.responses([])
      }
    }
  }, async (request) => ({ server: name, tools: rest.visible(request, 'tools/list', { tools: connection.tools() }).tools }))
  refuseOtherMethods(app, '/tools', 'GET')

  // A name that is not a plain path segment (`a/b`, `x:y`, spaces) would break or
  // parametrize a static route; such tools are reached through the parametric route below.
  const routed = new Set<string>()
  const unroutable = new Set<string>()
  for (const tool of tools) {
    if (ROUTE_SAFE_NAME.test(tool.name) && !routed.has(tool.name)) {
      registerToolRoute(app, rest, tool, options, refusals)
      routed.add(tool.name)
    } else {
      unroutable.add(tool.name)
    }
  }
  if (unroutable.size > 0) app.log.warn({ tools: [...unroutable] }, 'tools with names that are not plain path segments are served undocumented at /tools/<url-encoded name>')

  // Routes are fixed at boot, so a tool that appears later (an upstream that was down at
  // boot, a list change) is served here, validated against its schema as a routed tool is.
  const validators = new WeakMap<Tool, ReturnType<typeof toolValidatorCompiler>>()
  app.post('/tools/:tool', { bodyLimit: options.bodyLimit, schema: { hide: true } }, async (request, reply) => {
    const toolName = (request.params as { tool: string }).tool
    const tool = routed.has(toolName) ? undefined : connection.tools().find(candidate => candidate.name === toolName)
    if (tool === undefined) throw new ToolNotFoundError(toolName, name)
    let validate = validators.get(tool)
    if (validate === undefined) {
      validate = toolValidatorCompiler({ schema: validationSchema(tool.inputSchema as Record<string, unknown> | undefined) } as Parameters<typeof toolValidatorCompiler>[0])
      validators.set(tool, validate)
    }
    request.body ??= {}
    const outcome = validate(request.body)
    if (outcome !== true) throw outcome === false ? new InvalidArgumentsError('the body is invalid') : outcome.error
    return await rest.callTool(toolName, request, reply)
  })
  refuseOtherMethods(app, '/tools/:tool', 'POST')

  registerPromptAndResourceRoutes(app, rest, options, refusals)
  return { cancelInFlight: () => { rest.cancelInFlight() } }
}

/** Each client connection's signal for its tool calls, aborted when the client goes away. */
const socketSignals = new WeakMap<Socket, AbortController>()

/**
 * The signal of the tool calls made over `socket`. One `AbortController` per keep-alive
 * connection rather than per call: each is an `EventTarget` (a kilobyte, microseconds to
 * build, and work for the collector), and it is the REST shim's largest per-call cost after
 * the call itself. Over HTTP/1.1 (the gateway serves nothing else) a response closes before
 * it is finished only when its socket closes, so the socket's `close` is the client going
 * away, for every call in flight on it. One aborted (the client went away, or shutdown) is
 * replaced for the next call.
 */
function cancellationOf (socket: Socket): AbortController {
  const current = socketSignals.get(socket)
  if (current !== undefined && !current.signal.aborted) return current
  const controller = new AbortController()
  socketSignals.set(socket, controller)
  socket.once('close', () => { controller.abort() })
  return controller
}

/** The calls the REST routes make, each through the pipeline with the caller's context. */
class RestCalls {
  #options: RestOptions
  /**
   * The signals of the client connections that called tools here, to cancel their calls at
   * shutdown; each leaves when its connection closes. Kept per connection, not counted per
   * call: adding and deleting a call's entry in a long-lived `Map` on every call reallocates
   * its table now and then in the old generation, which only a full collection reclaims.
   */
  #signals = new Set<AbortController>()
  #target: CallTarget

  constructor (options: RestOptions) {
    this.#options = options
    const { connection } = options
    this.#target = {
      server: options.name,
      get state () { return connection.state },
      get failure () { return connection.failure },
      get retryAfter () { return connection.retryAfter }
    }
  }

  #context (request: FastifyRequest, method: CallMethod | ListMethod, name?: string, args?: Record<string, unknown>): CallContext {
    // Built field by field rather than with conditional spreads: this runs on every call.
    const call: CallContext = { server: this.#options.name, method, way: 'rest', requestId: request.id, ip: request.ip }
    if (name !== undefined) call.name = name
    if (args !== undefined) call.arguments = args
    const identity = request.identity
    if (identity !== undefined) call.identity = identity
    return call
  }


  /** A list without what the caller may not see. */
  visible<R extends Record<string, unknown>> (request: FastifyRequest, method: ListMethod, result: R): R {
    return this.#options.pipeline.list({ ...this.#context(request, method), method }, result)
  }

  /**
   * Calls one tool with the request body as its arguments. The tool's own error result
   * (`isError: true`) is a 422; failures of the call itself are translated by `toHttpError`.
   */
  async callTool (tool: string, request: FastifyRequest, reply: FastifyReply): Promise<CallToolResult | FastifyReply> {
    const { connection, pipeline, timeoutMs } = this.#options
    // The client went away before the answer: cancel the call rather than finish it for
    // nobody. The signal is the client connection's (one per socket, see `cancellationOf`).
    const controller = cancellationOf(request.raw.socket)
    if (!this.#signals.has(controller)) {
      this.#signals.add(controller)
      controller.signal.addEventListener('abort', () => { this.#signals.delete(controller) }, { once: true })
    }
    const args = (request.body ?? {}) as Record<string, unknown>
    request.log.debug({ tool, args }, 'tool call')
    const options: { signal: AbortSignal, timeoutMs: number, authInfo?: AuthInfo } = { signal: controller.signal, timeoutMs }
    const identity = request.identity
    if (identity !== undefined) options.authInfo = identity
    // The arguments passed the route's schema: the connection's quicker way, where it has one.
    // Not `async`: the connection's promise is the call's, with no second one wrapped around it.
    const callValidated = connection.callValidated
    const call = callValidated !== undefined
      ? () => callValidated.call(connection, tool, args, options)
      : () => connection.callTool(tool, args, options)
    try {
      // The hot path of the REST shim: no context is built while no filter would read it.
      const result = pipeline.active ? await pipeline.call(this.#context(request, 'tools/call', tool, args), call) : await call()
      if (result.isError === true) return await reply.code(TOOL_ERROR_STATUS).send({ ...result, code: TOOL_ERROR_CODE })
      return result
    } catch (err) {
      // Cancelled at shutdown, after the drain timeout: the client is told so.
      if (controller.signal.reason instanceof ShuttingDownError) throw controller.signal.reason
      if (controller.signal.aborted) {
        // Cancelled because the client went away: no failure of the server, and nobody to
        // answer, so neither a 502 nor an error line.
        request.log.debug({ tool }, 'tool call cancelled: the client went away')
        reply.hijack()
        return reply
      }
      throw toHttpError(err, this.#target, tool, timeoutMs)
    }
  }

  /**
   * Shutdown after the drain timeout: every tool call still in flight is cancelled and
   * answered 503. A connection with no call in flight has its signal aborted too, which ends
   * nothing: its next call would take a new one, and none is taken while draining.
   */
  cancelInFlight (): void {
    for (const controller of [...this.#signals]) controller.abort(new ShuttingDownError())
  }

  /** A prompt or resource request, or one of their lists, through the pipeline. */
  async request (request: FastifyRequest, method: string, params: Record<string, unknown>, what: string): Promise<Record<string, unknown>> {
    const { connection, pipeline, timeoutMs, name } = this.#options
    const capability = method.split('/')[0] as 'prompts' | 'resources'
    if (connection.capabilities()[capability] === undefined) throw new CapabilityMissingError(name, capability)
    const send = async (): Promise<Record<string, unknown>> => await connection.request(method, params, {
      timeoutMs,
      ...(request.identity !== undefined && { authInfo: request.identity })
    })
    try {
      if (method === 'prompts/get' || method === 'resources/read') return await pipeline.call(this.#context(request, method, what), send)
      return await send()
    } catch (err) {
      throw toHttpError(err, this.#target, what, timeoutMs)
    }
  }

  /** Every item of one list the server serves, without what the caller may not see. */
  async list (request: FastifyRequest, method: ListMethod, key: string): Promise<unknown[]> {
    const items = await allPages(async params => await this.request(request, method, params, method), key)
    return this.visible(request, method, { [key]: items })[key] as unknown[]
  }

  /** Renders one prompt: a prompt the caller may not see, or that is gone, answers as an unknown one. */
  async prompt (request: FastifyRequest, prompt: string): Promise<Record<string, unknown>> {
    const args = request.body as Record<string, string>
    const known = (await this.list(request, 'prompts/list', 'prompts') as Prompt[]).find(candidate => candidate.name === prompt)
    if (known === undefined) throw new PromptNotFoundError(prompt, this.#options.name)
    const missing = (known.arguments ?? []).filter(arg => arg.required === true && args[arg.name] === undefined)
    if (missing.length > 0) throw new InvalidArgumentsError(missing.map(arg => ({ field: arg.name, message: `must have required property '${arg.name}'` })))
    return await this.request(request, 'prompts/get', { name: prompt, arguments: args }, prompt)
  }

  /** Reads one resource; a URI the server does not know is a 404, however the server says so. */
  async read (request: FastifyRequest, uri: string): Promise<Record<string, unknown>> {
    try {
      return await this.request(request, 'resources/read', { uri }, uri)
    } catch (err) {
      if (isResourceNotFound(err, uri)) throw new ResourceNotFoundError(uri, this.#options.name)
      throw err
    }
  }
}

/**
 * Whether a failed read is the server's "no such resource". The spec's -32002 is what servers
 * built before SEP-2164 answer; since, it is -32602 (invalid params), the SDK's with the URI
 * in `data.uri`, other servers naming it in the message. Any other -32602 stays a 400.
 */
function isResourceNotFound (err: unknown, uri: string): boolean {
  const cause = (err as { cause?: Partial<CallError> }).cause
  if (cause?.code !== 'PROTOCOL_ERROR') return false
  if (cause.rpcCode === JsonRpcCode.ResourceNotFound) return true
  return cause.rpcCode === JsonRpcCode.InvalidParams &&
    ((cause.data as { uri?: unknown } | undefined)?.uri === uri || /not found/i.test(cause.message ?? ''))
}

/**
 * Every other method on `url` answers 405 with `Allow`, from `onRequest`, so before its body is
 * read. HEAD comes with GET; OPTIONS is left to CORS (a refused preflight stays a 404).
 */
function refuseOtherMethods (app: FastifyInstance, url: string, allow: 'GET' | 'POST'): void {
  const methods = app.supportedMethods.filter(method => method !== allow && method !== 'HEAD' && method !== 'OPTIONS')
  app.route({
    method: methods,
    url,
    schema: { hide: true },
    onRequest: async (request) => { throw new MethodNotAllowedError(request.method, request.url.split('?')[0] ?? url, allow) },
    handler: async () => { throw new InternalError() }
  })
}

function registerToolRoute (app: FastifyInstance, rest: RestCalls, tool: Tool, options: RestOptions, refusals: Refusals): void {
  const server = options.name
  const input = validationSchema(tool.inputSchema as Record<string, unknown> | undefined)
  const output = tool.outputSchema as Record<string, unknown> | undefined
  const body = documentedSchema(input, `${server}.${tool.name}.input`, app.openApiComponents)
  // Swagger UI fills "Try it out" from this: a body that passes validation, from the tool's own schema.
  const bodyExample = exampleOf(input)
  if (!Array.isArray(body.examples) && bodyExample !== undefined) body.examples = [bodyExample]
  const structured = output === undefined ? undefined : exampleOf(output)
  const result = structured === undefined
    ? { content: [{ type: 'text', text: 'The result, as text' }], isError: false }
    // A tool with an output schema returns its structured content as text too (MCP spec, "Structured Content").
    : { content: [{ type: 'text', text: JSON.stringify(structured) }], structuredContent: structured, isError: false }
  const required = Array.isArray(input.required) ? input.required as string[] : []
  app.post(`/tools/${tool.name}`, {
    bodyLimit: options.bodyLimit,
    validatorCompiler: toolValidatorCompiler,
    // `curl -X POST .../tools/<name>` with no body at all calls a tool with no arguments.
    preValidation: emptyBodyIsNoArguments,
    serializerCompiler: passThrough,
    schema: {
      tags: [server],
      operationId: `${server}__${tool.name}`,
      summary: tool.title ?? tool.description ?? tool.name,
      ...(tool.description !== undefined && { description: tool.description }),
      body,
      response: {
        200: withExample(
          callToolResultSchema(output === undefined ? undefined : documentedSchema(output, `${server}.${tool.name}.output`, app.openApiComponents)),
          "The tool's result (`CallToolResult`)",
          { result: { summary: output === undefined ? 'A text result' : 'A result with structuredContent, from the outputSchema', value: result } }
        ),
        [TOOL_ERROR_STATUS]: withExample(
          callToolResultSchema(undefined, { code: { type: 'string', const: TOOL_ERROR_CODE } }, true),
          `- \`${TOOL_ERROR_CODE}\`: the tool ran and reported an error (\`isError: true\`); the body is its result plus \`code\``,
          { toolError: { summary: TOOL_ERROR_CODE, value: { content: [{ type: 'text', text: 'What went wrong, in the tool\'s words' }], isError: true, code: TOOL_ERROR_CODE } } }
        ),
        ...refusals.responses([
          invalidArguments(required[0] === undefined ? { field: '', message: 'must be object' } : { field: required[0], message: `must have required property '${required[0]}'` }),
          ...refusals.body,
          new ToolNotFoundError(tool.name, server),
          ...refusals.call(tool.name)
        ])
      }
    }
  }, (request, reply) => rest.callTool(tool.name, request, reply)) // not `async`: the call's own promise is the answer
}

/**
 * A body left out is no arguments. A callback hook, not an async one: it runs on every REST
 * call, and an async hook costs a promise and a turn of the microtask queue.
 */
function emptyBodyIsNoArguments (request: FastifyRequest, _reply: FastifyReply, done: () => void): void {
  request.body ??= {}
  done()
}

/** A resource template as `resources/templates/list` gives it. */
interface ResourceTemplate {
  uriTemplate: string
  name: string
  title?: string
  description?: string
  mimeType?: string
}

/** What a server lists at start, for its prompt operations and the examples of its resources. */
interface Listed {
  prompts: Prompt[]
  resources: Resource[]
  templates: ResourceTemplate[]
}

/**
 * The prompt and resource routes, for servers that offer prompts or resources (or are down
 * at boot, so it is not known). Registered as a child plugin, so the server's lists can be
 * read (awaited) while the gateway still boots: each prompt then gets an operation of its own.
 */
function registerPromptAndResourceRoutes (app: FastifyInstance, rest: RestCalls, options: RestOptions, refusals: Refusals): void {
  const { connection } = options
  const unknown = connection.state !== 'up'
  const prompts = unknown || connection.capabilities().prompts !== undefined
  const resources = unknown || connection.capabilities().resources !== undefined
  if (!prompts && !resources) return
  void app.register(async (scoped) => {
    let listed: Listed | undefined
    if (!unknown) {
      try {
        listed = await listAtStart(connection, Math.min(options.timeoutMs, LIST_AT_START_TIMEOUT_MS))
      } catch (err) {
        scoped.log.warn({ err }, 'the server did not list its prompts or resources: they are documented as generic operations')
      }
    }
    // Down at boot, the server may come back without them: the routes then answer 404.
    const missing = (capability: string): GatewayError[] => unknown ? [new CapabilityMissingError(options.name, capability)] : []
    if (prompts) registerPromptRoutes(scoped, rest, options, refusals, missing('prompts'), listed?.prompts)
    if (resources) registerResourceRoutes(scoped, rest, options, refusals, missing('resources'), listed)
  })
}

async function listAtStart (connection: McpConnection, timeoutMs: number): Promise<Listed> {
  const capabilities = connection.capabilities()
  const list = async <T>(method: string, key: string): Promise<T[]> =>
    await allPages<T>(async params => await connection.request(method, params, { timeoutMs }), key)
  const [prompts, resources, templates] = await Promise.all([
    capabilities.prompts === undefined ? [] : list<Prompt>('prompts/list', 'prompts'),
    capabilities.resources === undefined ? [] : list<Resource>('resources/list', 'resources'),
    // Some servers with resources answer no template list at all: that is none, not a failure.
    capabilities.resources === undefined ? [] : list<ResourceTemplate>('resources/templates/list', 'resourceTemplates').catch(() => [])
  ])
  return { prompts, resources, templates }
}

/** A prompt's arguments as a body schema: every one a string, as MCP prompt arguments are. */
function promptBody (prompt: Prompt | undefined): Record<string, unknown> {
  const args = prompt?.arguments ?? []
  const required = args.filter(arg => arg.required === true).map(arg => arg.name)
  return {
    type: 'object',
    properties: Object.fromEntries(args.map(arg => [arg.name, { type: 'string', ...(arg.description !== undefined && { description: arg.description }) }])),
    ...(required.length > 0 && { required }),
    // Arguments the prompt does not declare pass to the server, as on MCP; strings too.
    additionalProperties: { type: 'string' },
    description: 'The prompt\'s arguments: strings, as MCP prompt arguments are',
    // An explicit example, or Swagger UI would show `additionalProp1`.
    examples: [Object.fromEntries(args.map(arg => [arg.name, 'string']))]
  }
}

function registerPromptRoutes (app: FastifyInstance, rest: RestCalls, options: RestOptions, refusals: Refusals, own: GatewayError[], listed: Prompt[] | undefined): void {
  const server = options.name
  const calls = (prompt: Prompt | undefined): GatewayError[] => {
    const name = prompt?.name ?? 'summarize'
    const first = prompt?.arguments?.[0]?.name ?? 'topic'
    return [
      // A number where a string is due: MCP prompt arguments are strings, and so is the check.
      invalidArguments({ field: first, message: 'must be string' }),
      ...refusals.body,
      new PromptNotFoundError(name, server),
      ...own,
      ...refusals.call(name)
    ]
  }
  const rendered = (prompt: Prompt | undefined): Record<string, unknown> => withExample(PromptResult, 'The rendered messages (`GetPromptResult`)', {
    rendered: {
      summary: 'The prompt, rendered',
      value: {
        ...(prompt?.description !== undefined && { description: prompt.description }),
        messages: [{ role: 'user', content: { type: 'text', text: 'The prompt\'s text, with the arguments in it' } }]
      }
    }
  })
  const route = {
    bodyLimit: options.bodyLimit,
    // Not Fastify's default Ajv, which coerces: `5` would pass as the string "5".
    validatorCompiler: toolValidatorCompiler,
    preValidation: emptyBodyIsNoArguments,
    serializerCompiler: passThrough
  }

  app.get('/prompts', {
    serializerCompiler: passThrough,
    schema: {
      tags: [server],
      operationId: `${server}__listPrompts`,
      summary: `The prompts of '${server}'`,
      response: {
        200: withExample(listSchema('prompts', 'Every prompt with its arguments', PromptItem), 'Every prompt with its arguments, those the caller may see', {
          prompts: { summary: 'The prompts at start', value: { server, prompts: (listed ?? []).slice(0, EXAMPLE_ITEMS) } }
        }),
        ...refusals.responses([...own, ...refusals.list('prompts/list')])
      }
    }
  }, async (request) => ({ server, prompts: await rest.list(request, 'prompts/list', 'prompts') }))
  refuseOtherMethods(app, '/prompts', 'GET')

  const routed = new Set<string>()
  for (const prompt of listed ?? []) {
    if (!ROUTE_SAFE_NAME.test(prompt.name) || routed.has(prompt.name)) continue
    routed.add(prompt.name)
    app.post(`/prompts/${prompt.name}`, {
      ...route,
      schema: {
        tags: [server],
        operationId: `${server}__prompt__${prompt.name}`,
        summary: prompt.title ?? prompt.description ?? `Render the prompt '${prompt.name}'`,
        description: `Renders the prompt \`${prompt.name}\` of '${server}' with the arguments in the body.${prompt.description === undefined ? '' : `\n\n${prompt.description}`}`,
        body: promptBody(prompt),
        response: { 200: rendered(prompt), ...refusals.responses(calls(prompt)) }
      }
    }, async (request) => await rest.prompt(request, prompt.name))
  }

  app.post('/prompts/:prompt', {
    ...route,
    schema: {
      tags: [server],
      operationId: `${server}__getPrompt`,
      summary: listed === undefined
        ? `Render one prompt of '${server}' with the arguments in the body`
        : 'Render a prompt by name: one added since the gateway started, or one whose name is not a plain path segment (URL-encoded)',
      params: { type: 'object', properties: { prompt: { type: 'string' } } },
      body: promptBody(undefined),
      response: { 200: rendered(undefined), ...refusals.responses(calls(undefined)) }
    }
  }, async (request) => await rest.prompt(request, (request.params as { prompt: string }).prompt))
  refuseOtherMethods(app, '/prompts/:prompt', 'POST')
}

/**
 * The resource routes. Resources are one operation, `GET /resources/read?uri=`, rather than
 * one each: a URI is no path segment (`file:///a/b`, `notes://x?y`), so per-resource routes
 * would need a second name for each; servers list hundreds of resources (every file, every
 * row) that change at run time, while the document is fixed at boot; and templates have no
 * fixed URI at all. The URIs listed at start are the examples of `uri` instead, and the
 * description names them and the templates.
 */
function registerResourceRoutes (app: FastifyInstance, rest: RestCalls, options: RestOptions, refusals: Refusals, own: GatewayError[], listed: Listed | undefined): void {
  const server = options.name
  const resources = listed?.resources ?? []
  const templates = listed?.templates ?? []

  app.get('/resources', {
    serializerCompiler: passThrough,
    schema: {
      tags: [server],
      operationId: `${server}__listResources`,
      summary: `The resources and resource templates of '${server}'`,
      response: {
        200: withExample({
          ...listSchema('resources', 'Every resource, and the templates under `resourceTemplates`', ResourceItem),
          properties: { server: { type: 'string' }, resources: { type: 'array', items: ResourceItem }, resourceTemplates: { type: 'array', items: ResourceItem } }
        }, 'Every resource, and the templates under `resourceTemplates`, those the caller may see', {
          resources: { summary: 'The resources at start', value: { server, resources: resources.slice(0, EXAMPLE_ITEMS), resourceTemplates: templates.slice(0, EXAMPLE_ITEMS) } }
        }),
        ...refusals.responses([...own, ...refusals.list('resources/list')])
      }
    }
  }, async (request) => ({
    server,
    resources: await rest.list(request, 'resources/list', 'resources'),
    resourceTemplates: await rest.list(request, 'resources/templates/list', 'resourceTemplates')
  }))
  refuseOtherMethods(app, '/resources', 'GET')

  const uris = resources.slice(0, EXAMPLE_URIS).map(resource => resource.uri)
  const named = [
    ...resources.slice(0, EXAMPLE_URIS).map(resource => `- \`${resource.uri}\`: ${resource.title ?? resource.name}${resource.mimeType === undefined ? '' : ` (${resource.mimeType})`}${resource.description === undefined ? '' : `. ${resource.description}`}`),
    ...resources.length > EXAMPLE_URIS ? [`- … and ${resources.length - EXAMPLE_URIS} more: \`GET /${server}/resources\` lists them all`] : [],
    ...templates.map(template => `- \`${template.uriTemplate}\` (template): ${template.title ?? template.name}${template.description === undefined ? '' : `. ${template.description}`}`)
  ]
  const example = resources[0]
  const uri = example?.uri ?? 'file:///notes/readme.md'
  const unknownUri = `${uri.split(':')[0]}://nowhere`
  app.get('/resources/read', {
    validatorCompiler: toolValidatorCompiler,
    serializerCompiler: passThrough,
    schema: {
      tags: [server],
      operationId: `${server}__readResource`,
      summary: `Read one resource of '${server}' by URI`,
      description: `One operation for every resource, by its URI: URIs are not path segments, and a server's resources can change while it runs.${named.length === 0 ? '' : `\n\nListed at start:\n\n${named.join('\n')}`}`,
      querystring: {
        type: 'object',
        required: ['uri'],
        properties: {
          uri: { type: 'string', minLength: 1, description: 'The resource URI, URL-encoded', ...(uris.length > 0 && { examples: uris }) }
        }
      },
      response: {
        200: withExample(ResourceResult, 'The contents (`ReadResourceResult`)', {
          contents: {
            summary: 'A text resource',
            value: { contents: [{ uri, mimeType: example?.mimeType ?? 'text/plain', text: 'The resource\'s text' }] }
          }
        }),
        ...refusals.responses([
          invalidArguments({ field: 'uri', message: 'must have required property \'uri\'' }),
          new ResourceNotFoundError(unknownUri, server),
          ...own,
          ...refusals.call(uri)
        ])
      }
    }
  }, async (request) => await rest.read(request, (request.query as { uri: string }).uri))
  refuseOtherMethods(app, '/resources/read', 'GET')
}
