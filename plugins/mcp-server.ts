import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import {
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  validateHostHeader,
  validateOriginHeader,
  type Prompt,
  type Tool
} from '@modelcontextprotocol/server'
import { allPages, InProcessConnection, type McpConnection, type ServerFactory } from '../src/connection.js'
import {
  CapabilityMissingError,
  ForbiddenHostError,
  InvalidArgumentsError,
  InvalidOptionsError,
  PromptNotFoundError,
  ResourceNotFoundError,
  ServerUnavailableError,
  UpstreamRejectedError,
  TOOL_ERROR_CODE,
  TOOL_ERROR_STATUS,
  ToolNotFoundError,
  ToolTimeoutError,
  UpstreamError
} from '../src/errors.js'
import { callToolResultSchema, ErrorRef, listSchema } from '../src/rest-schemas.js'
import { StreamableHttpEndpoint } from '../src/streamable-http.js'
import { documentedSchema, toolValidatorCompiler, validationSchema } from '../src/tool-schemas.js'

/** Tool names that can be a static route segment as they are. */
const ROUTE_SAFE_NAME = /^[A-Za-z0-9_.-]+$/

const OptionsSchema = Type.Object({
  /** Name in logs, tags, operation ids and `/ready`. Required: it is the server's identity. */
  name: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
  /** No 2025-era sessions, each request answered on its own (the seed's mode). Default `false`: sessions, as most clients expect. */
  stateless: Type.Optional(Type.Boolean()),
  /** Never answer a 2025-era session POST as SSE; messages the server sends mid-call go to the session's GET stream. Default `false`: a POST is answered as JSON, or as SSE once the server sends progress, a log or a request during it. */
  jsonResponse: Type.Optional(Type.Boolean()),
  /** Per-call timeout of a REST tool call, in ms. Default 60000: the SDK's own default request timeout. */
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Most 2025-era sessions at once. Default 1000: bounds memory against clients that never DELETE. */
  maxSessions: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Idle time after which a session is closed, in ms. Default 1800000 (30 min). */
  sessionIdleMs: Type.Optional(Type.Integer({ minimum: 1000 })),
  /** Largest request body in bytes. Default 1 MiB, Fastify's default. */
  bodyLimit: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Host header names accepted (DNS rebinding protection); `*` accepts any. Default: localhost, 127.0.0.1, [::1]. */
  allowedHosts: Type.Optional(Type.Array(Type.String())),
  /** Origin hostnames accepted from browsers; `*` accepts any. Requests without Origin pass. Default: localhost-class. */
  allowedOrigins: Type.Optional(Type.Array(Type.String())),
  /** Serve only `/mcp`: no REST routes, not listed in `/ready`. Default `false`; the aggregated endpoint sets it, its servers being listed themselves. */
  endpointOnly: Type.Optional(Type.Boolean())
})

export type McpServerPluginOptions = Static<typeof OptionsSchema> & {
  /** Builds an in-process server (see `servers/`). Give this or `connection`. */
  factory?: ServerFactory
  /** A connection to the server, for servers not built in process. */
  connection?: McpConnection
}

/**
 * Mounts one MCP server under the plugin's prefix:
 *
 * - `/mcp`: Streamable HTTP for MCP clients of both protocol eras;
 * - `POST /tools/<name>`: each tool as a REST operation, arguments validated by Fastify
 *   against the tool's `inputSchema` before the tool runs;
 * - `GET /tools`: the tools with their schemas.
 *
 * Not wrapped in fastify-plugin: the prefix and the hooks stay with this server.
 *
 * Tools are discovered while the plugin registers, because Fastify cannot add routes after
 * boot and each tool needs its own route to be its own OpenAPI operation. A parametric
 * `/tools/:name` route behind them answers unknown tools with a 404 that names the tool.
 */
const mcpServer: FastifyPluginAsync<McpServerPluginOptions> = async (app, options) => {
  const { factory, connection: givenConnection, ...plain } = options
  if (!Value.Check(OptionsSchema, plain)) {
    const issue = Value.Errors(OptionsSchema, plain).First()
    throw new InvalidOptionsError(`mcpServer ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  if ((factory === undefined) === (givenConnection === undefined)) {
    throw new InvalidOptionsError(`mcpServer '${plain.name}' needs exactly one of factory or connection`)
  }
  const name = plain.name
  const timeoutMs = plain.timeoutMs ?? 60_000
  const bodyLimit = plain.bodyLimit ?? 1024 * 1024
  const allowedHosts = plain.allowedHosts ?? localhostAllowedHostnames()
  const allowedOrigins = plain.allowedOrigins ?? localhostAllowedOrigins()
  const log = app.log.child({ mcpServer: name })
  const connection = givenConnection ?? new InProcessConnection(name, factory as ServerFactory)

  const endpointOnly = plain.endpointOnly ?? false
  if (app.mcpServers === undefined) throw new InvalidOptionsError('register the core plugin before mcpServer')
  if (!endpointOnly && app.mcpServers.has(name)) throw new InvalidOptionsError(`an MCP server named '${name}' is already mounted`)
  if (!endpointOnly) app.mcpServers.set(name, connection)

  // A server that fails to start is marked down and its routes answer 503; the gateway and
  // every other server keep serving.
  try {
    await connection.start()
    log.info({ tools: connection.tools().map(tool => tool.name) }, 'mcp server started')
  } catch (err) {
    log.error({ err }, 'mcp server failed to start; serving 503 for it')
  }

  const endpoint = new StreamableHttpEndpoint(connection, {
    stateless: plain.stateless ?? false,
    jsonResponse: plain.jsonResponse ?? false,
    maxSessions: plain.maxSessions ?? 1000,
    sessionIdleMs: plain.sessionIdleMs ?? 30 * 60_000,
    bodyLimit,
    log
  })

  // Fastify parses text/plain by default; a tool's arguments and MCP messages are JSON only,
  // so anything else is a 415 rather than a string that fails validation.
  app.removeContentTypeParser('text/plain')

  // Every request log line of this server carries its name; merged into the one child
  // logger Fastify makes per request anyway, rather than a second child per request.
  app.setChildLoggerFactory((logger, bindings, childOptions) => logger.child({ ...bindings, mcpServer: name }, childOptions))

  app.addHook('onRequest', async (request) => {
    checkHostAndOrigin(request, allowedHosts, allowedOrigins)
    if (connection.state !== 'up') throw unavailable(name, connection)
  })

  // In-flight SSE streams would keep onClose waiting: end them first.
  app.addHook('preClose', async () => { await endpoint.closeStreams() })
  app.addHook('onClose', async () => {
    await endpoint.close()
    await connection.close()
  })

  const mcpRoute = { config: { mcp: true }, bodyLimit, schema: { hide: true } }
  const handleMcp = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => { await endpoint.handle(request, reply) }
  await app.register(async (mcp) => {
    // A GET or DELETE may carry `content-type: application/json` and no body; Fastify would
    // reject that as an empty JSON body. An empty POST still fails: the SDK answers it.
    const parseJson = mcp.getDefaultJsonParser('error', 'error')
    mcp.removeContentTypeParser('application/json')
    mcp.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
      if (body === '') done(null, undefined)
      else parseJson(request, body as string, done)
    })
    mcp.post('/mcp', mcpRoute, handleMcp)
    mcp.get('/mcp', mcpRoute, handleMcp)
    mcp.delete('/mcp', mcpRoute, handleMcp)
  })

  if (endpointOnly) return

  app.get('/tools', {
    schema: {
      tags: [name],
      operationId: `${name}__listTools`,
      summary: `The tools of '${name}' with their JSON Schemas`,
      response: { 200: listSchema('tools', 'The tools offered now') }
    }
  }, async () => ({ server: name, tools: connection.tools() }))

  // A name that is not a plain path segment (`a/b`, `x:y`, spaces) would break or
  // parametrize a static route; such tools are reached through the parametric route below.
  const routed = new Set<string>()
  const unroutable = new Set<string>()
  for (const tool of connection.tools()) {
    if (ROUTE_SAFE_NAME.test(tool.name)) {
      registerToolRoute(app, name, connection, tool, { timeoutMs, bodyLimit })
      routed.add(tool.name)
    } else {
      unroutable.add(tool.name)
    }
  }
  if (unroutable.size > 0) log.warn({ tools: [...unroutable] }, 'tools with names that are not plain path segments are served undocumented at /tools/<url-encoded name>')

  // Routes are fixed at boot, so a tool that appears later (an upstream that was down at
  // boot, a list change) is served here, validated against its schema as a routed tool is.
  const validators = new WeakMap<Tool, ReturnType<typeof toolValidatorCompiler>>()
  app.post('/tools/:tool', { bodyLimit, schema: { hide: true } }, async (request, reply) => {
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
    return await toolHandler(name, connection, toolName, timeoutMs)(request, reply)
  })

  registerPromptAndResourceRoutes(app, name, connection, timeoutMs)
}

/**
 * `GET /prompts`, `POST /prompts/:prompt`, `GET /resources` and `GET /resources/read?uri=`,
 * for servers that offer prompts or resources (or are down at boot, so it is not known).
 * Prompts are one parametric route rather than one route each: their arguments are all
 * strings, so a per-prompt schema would document little more than the list does.
 */
function registerPromptAndResourceRoutes (app: FastifyInstance, server: string, connection: McpConnection, timeoutMs: number): void {
  const unknown = connection.state !== 'up'
  const errors = {
    400: { description: 'Missing or invalid arguments', ...ErrorRef },
    404: { description: 'Unknown server, prompt or resource', ...ErrorRef },
    502: { description: 'The server failed while handling the request', ...ErrorRef },
    503: { description: 'The server is down', ...ErrorRef },
    504: { description: 'The server did not answer in time', ...ErrorRef }
  }
  const relay = async (method: string, params: Record<string, unknown>, what: string): Promise<Record<string, unknown>> => {
    const capability = method.split('/')[0] as 'prompts' | 'resources'
    if (connection.capabilities()[capability] === undefined) throw new CapabilityMissingError(server, capability)
    try {
      return await connection.request(method, params, { timeoutMs })
    } catch (err) {
      throw toCallError(err, server, what, timeoutMs, connection)
    }
  }

  if (unknown || connection.capabilities().prompts !== undefined) {
    app.get('/prompts', {
      schema: { tags: [server], operationId: `${server}__listPrompts`, summary: `The prompts of '${server}'`, response: { 200: listSchema('prompts', 'Every prompt with its arguments'), ...errors } }
    }, async () => ({ server, prompts: await listAll(relay, 'prompts/list', 'prompts') }))

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
      const known = (await listAll(relay, 'prompts/list', 'prompts') as Prompt[]).find(candidate => candidate.name === prompt)
      if (known === undefined) throw new PromptNotFoundError(prompt, server)
      const missing = (known.arguments ?? []).filter(arg => arg.required === true && args[arg.name] === undefined)
      if (missing.length > 0) {
        throw Object.assign(new InvalidArgumentsError(missing.map(arg => `'${arg.name}' is required`).join('; ')), {
          details: missing.map(arg => ({ field: arg.name, message: 'is required' }))
        })
      }
      return await relay('prompts/get', { name: prompt, arguments: args }, prompt)
    })
  }

  if (unknown || connection.capabilities().resources !== undefined) {
    app.get('/resources', {
      schema: { tags: [server], operationId: `${server}__listResources`, summary: `The resources and resource templates of '${server}'`, response: { 200: listSchema('resources', 'Every resource, and the templates under `resourceTemplates`'), ...errors } }
    }, async () => ({
      server,
      resources: await listAll(relay, 'resources/list', 'resources'),
      resourceTemplates: await listAll(relay, 'resources/templates/list', 'resourceTemplates')
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
        return await relay('resources/read', { uri }, uri)
      } catch (err) {
        // -32002 is the spec's resource-not-found; some servers answer invalid params instead.
        const rpcCode = ((err as { cause?: { rpcCode?: number } }).cause)?.rpcCode
        if (rpcCode === -32002) throw new ResourceNotFoundError(uri, server)
        throw err
      }
    })
  }
}

/** Every page of a list the server serves, through the route's `relay`. */
async function listAll (relay: (method: string, params: Record<string, unknown>, what: string) => Promise<Record<string, unknown>>, method: string, key: string): Promise<unknown[]> {
  return await allPages(async params => await relay(method, params, method), key)
}

function registerToolRoute (app: FastifyInstance, server: string, connection: McpConnection, tool: Tool, limits: { timeoutMs: number, bodyLimit: number }): void {
  const input = validationSchema(tool.inputSchema as Record<string, unknown> | undefined)
  const output = tool.outputSchema === undefined
    ? undefined
    : documentedSchema(tool.outputSchema as Record<string, unknown>, `${server}.${tool.name}.output`, app.openApiComponents)
  app.post(`/tools/${tool.name}`, {
    bodyLimit: limits.bodyLimit,
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
        504: { description: 'The tool did not answer in time', ...ErrorRef }
      }
    }
  }, toolHandler(server, connection, tool.name, limits.timeoutMs))
}

/**
 * Calls one tool with the request body as its arguments. The tool's own error result
 * (`isError: true`) is a 422; failures of the call itself are mapped by `toCallError`.
 */
function toolHandler (server: string, connection: McpConnection, tool: string, timeoutMs: number) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const controller = new AbortController()
    // The client went away before the answer: cancel the call rather than finish it for nobody.
    const onClose = (): void => { if (!reply.raw.writableFinished) controller.abort() }
    reply.raw.once('close', onClose)
    request.log.debug({ tool, args: request.body }, 'tool call')
    try {
      const result = await connection.callTool(tool, (request.body ?? {}) as Record<string, unknown>, { signal: controller.signal, timeoutMs })
      if (result.isError === true) return await reply.code(TOOL_ERROR_STATUS).send({ ...result, code: TOOL_ERROR_CODE })
      return result
    } catch (err) {
      throw toCallError(err, server, tool, timeoutMs, connection)
    } finally {
      reply.raw.off('close', onClose)
    }
  }
}

/** Tells a gateway-side failure (timeout, dead server) from the server's own refusal. */
function toCallError (err: unknown, server: string, what: string, timeoutMs: number, connection: McpConnection): Error {
  const { code, rpcCode, message } = err as { code?: unknown, rpcCode?: number, message?: string }
  if (code === 'REQUEST_TIMEOUT') return new ToolTimeoutError(what, server, timeoutMs)
  // The server's own JSON-RPC error: bad params are the caller's fault, a 4xx; anything
  // else the server failed at, a 502.
  const error = code === 'PROTOCOL_ERROR' && (rpcCode === -32602 || rpcCode === -32002)
    ? new UpstreamRejectedError(server, message ?? 'invalid params')
    // A call in flight when the server died is a 502; a call to a server already down, a 503.
    : code !== 'CONNECTION_CLOSED' && code !== 'PROTOCOL_ERROR' && connection.state !== 'up'
      ? unavailable(server, connection)
      : new UpstreamError(server)
  error.cause = err
  return error
}

/** A 503 for a server that is down, with `Retry-After` when it is being brought back. */
function unavailable (server: string, connection: McpConnection): Error {
  const error = new ServerUnavailableError(server, connection.failure ?? connection.state)
  const retryAfter = connection.retryAfter
  return retryAfter === undefined ? error : Object.assign(error, { retryAfter })
}

function checkHostAndOrigin (request: FastifyRequest, allowedHosts: string[], allowedOrigins: string[]): void {
  if (!allowedHosts.includes('*')) {
    const host = validateHostHeader(request.headers.host, allowedHosts)
    if (!host.ok) throw new ForbiddenHostError(host.message)
  }
  if (!allowedOrigins.includes('*')) {
    const origin = validateOriginHeader(request.headers.origin, allowedOrigins)
    if (!origin.ok) throw new ForbiddenHostError(origin.message)
  }
}

export default mcpServer
