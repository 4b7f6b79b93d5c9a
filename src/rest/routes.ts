import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { CallToolResult, Prompt, Tool } from '@modelcontextprotocol/server'
import type { McpConnection } from '../connections/connection.js'
import {
  CapabilityMissingError,
  InvalidArgumentsError,
  JsonRpcCode,
  PromptNotFoundError,
  ResourceNotFoundError,
  ShuttingDownError,
  TOOL_ERROR_CODE,
  TOOL_ERROR_STATUS,
  toHttpError,
  ToolNotFoundError,
  type CallTarget
} from '../errors.js'
import { allPages } from '../mcp/protocol.js'
import type { CallContext, CallMethod, CallPipeline, ListMethod } from '../pipeline/pipeline.js'
import type { SecurityOptions } from '../security.js'
import { callToolResultSchema, ErrorRef, listSchema } from './schemas.js'
import { documentedSchema, toolValidatorCompiler, validationSchema } from './tool-schemas.js'

/** Tool names that can be a static route segment as they are. */
const ROUTE_SAFE_NAME = /^[A-Za-z0-9_.-]+$/

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
 * - `GET /prompts`, `POST /prompts/:prompt`, `GET /resources`, `GET /resources/read?uri=`.
 *
 * Every call and list passes the call pipeline, as the MCP paths do.
 *
 * Tools are routed while the server's plugin registers, because Fastify cannot add routes
 * after boot and each tool needs its own route to be its own OpenAPI operation. A parametric
 * `/tools/:tool` route behind them serves tools that appear later, and answers unknown
 * tools with a 404 that names the tool.
 */
export function registerRestRoutes (app: FastifyInstance, options: RestOptions): { cancelInFlight: () => void } {
  const rest = new RestCalls(options)
  const { name, connection } = options

  app.get('/tools', {
    schema: {
      tags: [name],
      operationId: `${name}__listTools`,
      summary: `The tools of '${name}' with their JSON Schemas`,
      response: { 200: listSchema('tools', 'The tools offered now'), ...securityResponses(app.gatewaySecurity) }
    }
  }, async (request) => ({ server: name, tools: rest.visible(request, 'tools/list', { tools: connection.tools() }).tools }))

  // A name that is not a plain path segment (`a/b`, `x:y`, spaces) would break or
  // parametrize a static route; such tools are reached through the parametric route below.
  const routed = new Set<string>()
  const unroutable = new Set<string>()
  for (const tool of connection.tools()) {
    if (ROUTE_SAFE_NAME.test(tool.name)) {
      registerToolRoute(app, rest, tool, options)
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

  registerPromptAndResourceRoutes(app, rest, options)
  return { cancelInFlight: () => { rest.cancelInFlight() } }
}

/** The calls the REST routes make, each through the pipeline with the caller's context. */
class RestCalls {
  #options: RestOptions
  /** Tool calls in flight, to cancel at shutdown. */
  #inflight = new Set<AbortController>()
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
    const controller = new AbortController()
    this.#inflight.add(controller)
    // The client went away before the answer: cancel the call rather than finish it for nobody.
    const onClose = (): void => { if (!reply.raw.writableFinished) controller.abort() }
    reply.raw.once('close', onClose)
    const args = (request.body ?? {}) as Record<string, unknown>
    request.log.debug({ tool, args }, 'tool call')
    const identity = request.identity
    const call = async (): Promise<CallToolResult> => await connection.callTool(tool, args, {
      signal: controller.signal,
      timeoutMs,
      ...(identity !== undefined && { authInfo: identity })
    })
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
    } finally {
      this.#inflight.delete(controller)
      reply.raw.off('close', onClose)
    }
  }

  /** Shutdown after the drain timeout: every tool call still in flight is cancelled and answered 503. */
  cancelInFlight (): void {
    for (const controller of this.#inflight) controller.abort(new ShuttingDownError())
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
}

/**
 * The refusals the security settings add to every tool, prompt and resource operation,
 * documented only where they can happen: 401 and 403 when callers must authenticate, 429
 * when calls are rate limited.
 */
function securityResponses (security: SecurityOptions | undefined): Partial<Record<401 | 403 | 429, Record<string, unknown>>> {
  return {
    ...(security?.auth?.mode === 'required' && {
      401: {
        description: 'No credentials, or ones that are not valid (`GW_ERR_UNAUTHENTICATED`); `WWW-Authenticate` names the scheme and the protected resource metadata',
        headers: { 'WWW-Authenticate': { type: 'string', description: 'The challenge (RFC 6750 `Bearer`, with `resource_metadata`)' } },
        ...ErrorRef
      },
      403: {
        description: 'The credentials lack a scope the server requires (`GW_ERR_INSUFFICIENT_SCOPE`, `insufficient_scope` in `WWW-Authenticate`)',
        headers: { 'WWW-Authenticate': { type: 'string', description: 'The challenge, naming the scopes needed' } },
        ...ErrorRef
      }
    }),
    ...(security?.rateLimit !== undefined && {
      429: {
        description: 'Over one of the caller\'s rate limits (`GW_ERR_RATE_LIMITED`); `Retry-After` and the `RateLimit-*` headers say when to retry',
        headers: {
          'Retry-After': { type: 'integer', description: 'Seconds until the call may be retried' },
          'RateLimit-Limit': { type: 'integer', description: 'Calls allowed per window' },
          'RateLimit-Remaining': { type: 'integer', description: 'Calls left in the window' },
          'RateLimit-Reset': { type: 'integer', description: 'Seconds until the window resets' }
        },
        ...ErrorRef
      }
    })
  }
}

function registerToolRoute (app: FastifyInstance, rest: RestCalls, tool: Tool, options: RestOptions): void {
  const server = options.name
  const input = validationSchema(tool.inputSchema as Record<string, unknown> | undefined)
  const output = tool.outputSchema === undefined
    ? undefined
    : documentedSchema(tool.outputSchema as Record<string, unknown>, `${server}.${tool.name}.output`, app.openApiComponents)
  app.post(`/tools/${tool.name}`, {
    bodyLimit: options.bodyLimit,
    validatorCompiler: toolValidatorCompiler,
    // `curl -X POST .../tools/<name>` with no body at all calls a tool with no arguments.
    preValidation: async (request) => { request.body ??= {} },
    // The result passes through as the tool returned it; the response schemas document it.
    serializerCompiler: () => data => JSON.stringify(data),
    schema: {
      tags: [server],
      operationId: `${server}__${tool.name}`,
      summary: tool.title ?? tool.description ?? tool.name,
      ...(tool.description !== undefined && { description: tool.description }),
      body: documentedSchema(input, `${server}.${tool.name}.input`, app.openApiComponents),
      response: {
        200: { description: "The tool's result", ...callToolResultSchema(output) },
        400: { description: 'Invalid JSON or arguments; `details` names each bad field', ...ErrorRef },
        404: { description: 'Unknown server or tool', ...ErrorRef },
        413: { description: 'Body over the size limit', ...ErrorRef },
        415: { description: 'Body is not application/json', ...ErrorRef },
        [TOOL_ERROR_STATUS]: {
          description: `The tool ran and reported an error (\`isError: true\`); \`code\` is ${TOOL_ERROR_CODE}`,
          ...callToolResultSchema(undefined, { code: { type: 'string', const: TOOL_ERROR_CODE } })
        },
        502: { description: 'The server failed while handling the call', ...ErrorRef },
        503: { description: 'The server is down', ...ErrorRef },
        504: { description: 'The tool did not answer in time', ...ErrorRef },
        ...securityResponses(app.gatewaySecurity)
      }
    }
  }, async (request, reply) => await rest.callTool(tool.name, request, reply))
}

/**
 * `GET /prompts`, `POST /prompts/:prompt`, `GET /resources` and `GET /resources/read?uri=`,
 * for servers that offer prompts or resources (or are down at boot, so it is not known).
 * Prompts are one parametric route rather than one route each: their arguments are all
 * strings, so a per-prompt schema would document little more than the list does.
 */
function registerPromptAndResourceRoutes (app: FastifyInstance, rest: RestCalls, options: RestOptions): void {
  const { name: server, connection } = options
  const unknown = connection.state !== 'up'
  const errors = {
    400: { description: 'Missing or invalid arguments', ...ErrorRef },
    404: { description: 'Unknown server, prompt or resource', ...ErrorRef },
    502: { description: 'The server failed while handling the request', ...ErrorRef },
    503: { description: 'The server is down', ...ErrorRef },
    504: { description: 'The server did not answer in time', ...ErrorRef },
    ...securityResponses(app.gatewaySecurity)
  }

  if (unknown || connection.capabilities().prompts !== undefined) {
    app.get('/prompts', {
      schema: { tags: [server], operationId: `${server}__listPrompts`, summary: `The prompts of '${server}'`, response: { 200: listSchema('prompts', 'Every prompt with its arguments'), ...errors } }
    }, async (request) => ({ server, prompts: await rest.list(request, 'prompts/list', 'prompts') }))

    app.post('/prompts/:prompt', {
      schema: {
        tags: [server],
        operationId: `${server}__getPrompt`,
        summary: `Render one prompt of '${server}' with the arguments in the body`,
        params: { type: 'object', properties: { prompt: { type: 'string' } } },
        body: { type: 'object', additionalProperties: { type: 'string' }, description: 'The prompt\'s arguments, all strings' },
        response: { 200: { description: 'The rendered messages (`GetPromptResult`)', type: 'object', additionalProperties: true }, ...errors }
      },
      preValidation: async (request) => { request.body ??= {} }
    }, async (request) => {
      const prompt = (request.params as { prompt: string }).prompt
      const args = request.body as Record<string, string>
      const known = (await rest.list(request, 'prompts/list', 'prompts') as Prompt[]).find(candidate => candidate.name === prompt)
      if (known === undefined) throw new PromptNotFoundError(prompt, server)
      const missing = (known.arguments ?? []).filter(arg => arg.required === true && args[arg.name] === undefined)
      if (missing.length > 0) throw new InvalidArgumentsError(missing.map(arg => ({ field: arg.name, message: 'is required' })))
      return await rest.request(request, 'prompts/get', { name: prompt, arguments: args }, prompt)
    })
  }

  if (unknown || connection.capabilities().resources !== undefined) {
    app.get('/resources', {
      schema: { tags: [server], operationId: `${server}__listResources`, summary: `The resources and resource templates of '${server}'`, response: { 200: listSchema('resources', 'Every resource, and the templates under `resourceTemplates`'), ...errors } }
    }, async (request) => ({
      server,
      resources: await rest.list(request, 'resources/list', 'resources'),
      resourceTemplates: await rest.list(request, 'resources/templates/list', 'resourceTemplates')
    }))

    app.get('/resources/read', {
      schema: {
        tags: [server],
        operationId: `${server}__readResource`,
        summary: `Read one resource of '${server}' by URI`,
        querystring: { type: 'object', required: ['uri'], properties: { uri: { type: 'string', minLength: 1, description: 'The resource URI, URL-encoded' } } },
        response: { 200: { description: 'The contents (`ReadResourceResult`)', type: 'object', additionalProperties: true }, ...errors }
      }
    }, async (request) => {
      const uri = (request.query as { uri: string }).uri
      try {
        return await rest.request(request, 'resources/read', { uri }, uri)
      } catch (err) {
        // -32002 is the spec's resource-not-found; some servers answer invalid params instead.
        const rpcCode = ((err as { cause?: { rpcCode?: number } }).cause)?.rpcCode
        if (rpcCode === JsonRpcCode.ResourceNotFound) throw new ResourceNotFoundError(uri, server)
        throw err
      }
    })
  }
}
