import {
  isInputRequiredResult,
  McpServer,
  ProtocolError,
  ProtocolErrorCode,
  type CallToolResult,
  type JSONRPCRequest,
  type RegisteredTool,
  type Server,
  type ServerContext,
  type StandardSchemaV1
} from '@modelcontextprotocol/server'
import type { Handler } from '../mcp/handlers.js'

/**
 * The registered tools of an `McpServer` instance, run the way its own `tools/call` handler
 * runs them, without the SDK's per-call work that a REST call has made redundant: the wire
 * schema's parse of a request the gateway built itself, and the chain of nested async
 * wrappers around the tool (five awaits deep, each a promise and a tick). What the tool sees
 * and what the caller gets are the SDK's, step for step (SDK v2.4, `McpServer`'s
 * `setToolRequestHandlers` and `Server._wrapHandler('tools/call')`):
 *
 * - the arguments go through the tool's own `inputSchema` (its Standard Schema `validate`), so
 *   the tool gets zod's output: defaults and transforms applied, unknown keys stripped, and
 *   refinements a JSON Schema cannot say (Fastify's Ajv check said nothing of those) refused
 *   as the SDK refuses them, as an `isError` result;
 * - the tool runs through its `executor` (its handler with `(args, ctx)`, or `(ctx)` without
 *   an input schema);
 * - `structuredContent` is checked against the `outputSchema`, a throw becomes an `isError`
 *   result with the error's message, a `UrlElicitationRequiredError` stays a -32042 error;
 * - the result is projected (`projectCallToolResult`), given `content: []` when it has none,
 *   and parsed by the connection's wire schema (which refuses a malformed result and strips
 *   what the era does not carry);
 * - an input-required result goes to the SDK's own multi-round-trip seam, as it would.
 *
 * `run` answers `undefined` where it could not answer exactly so, and the caller takes the
 * stored chain: a tool that is unknown, disabled or task-based (the chain's own errors, and a
 * family this copy does not carry), arguments that are not a plain object, a server with a
 * `maxToolInputElements` limit, a subclass of `McpServer` (it may override the steps), and a
 * connection not in the 2025 era.
 *
 * Relies on SDK internals with no public equivalent, each checked once here (and by
 * test/src/connections/in-process-fast.test.ts, 'the SDK internals the direct tool call
 * relies on'); should an upgrade move any, `directTools` answers `undefined` and every call
 * takes the stored chain again (slower, not wrong):
 * `McpServer._registeredTools` (private: the tools by name), `RegisteredTool.executor`
 * (`@hidden`), `McpServer._toolHandlersInitialized` and `_maxToolInputElements` (private),
 * `Server._wireCodec()` (protected: `era` and `validateResult`), and
 * `Server._invokeInputRequiredCapableHandler` (private: the multi-round-trip seam).
 */
export interface DirectTools {
  run (name: string, args: Record<string, unknown>, request: JSONRPCRequest, ctx: ServerContext): Promise<unknown> | undefined
}

/** The parts of a tool the copy reads; `executor` is `@hidden` in the SDK's `RegisteredTool`. */
type Tool = RegisteredTool & { executor: (args: unknown, ctx: ServerContext) => Promise<unknown> }

interface WireCodec {
  era: string
  validateResult (method: string, raw: unknown): { ok: true, value: unknown } | { ok: false, reason: 'not-in-era' | 'invalid', message?: string }
}

/** The internals of `McpServer` and its `Server` this copy reads (SDK v2.4). */
interface McpServerInternals {
  _registeredTools: Record<string, Tool>
  _toolHandlersInitialized: boolean
  _maxToolInputElements: number | undefined
}
interface ServerInternals {
  _wireCodec (): WireCodec
  _invokeInputRequiredCapableHandler (method: string, handler: Handler, request: JSONRPCRequest, ctx: ServerContext): Promise<unknown>
}

/**
 * Result keys that keep a result without `content` from being given `content: []` (the SDK's
 * `TOOL_RESULT_FOREIGN_FAMILY_KEYS`, not exported: `normalizeContentlessToolResult`).
 */
const FOREIGN_FAMILY_KEYS = ['task', 'inputRequests', 'requestState']

/** The direct way into `instance`'s tools, or `undefined` when it cannot have one (see `DirectTools`). */
export function directTools (instance: McpServer | Server): DirectTools | undefined {
  // A subclass may override the steps copied here (`validateToolInput`, `executeToolHandler`, ...).
  if (!(instance instanceof McpServer) || Object.getPrototypeOf(instance) !== McpServer.prototype) return undefined
  const mcp = instance as unknown as McpServerInternals
  const server = instance.server as unknown as ServerInternals
  if (typeof mcp._registeredTools !== 'object' || mcp._registeredTools === null || !('_toolHandlersInitialized' in mcp) ||
    !('_maxToolInputElements' in mcp) || typeof server._wireCodec !== 'function' || typeof server._invokeInputRequiredCapableHandler !== 'function') return undefined
  if (mcp._maxToolInputElements !== undefined) return undefined
  return {
    run (name, args, request, ctx) {
      // McpServer installs its `tools/call` handler with its first tool; until then the chain answers.
      if (!mcp._toolHandlersInitialized || !Object.hasOwn(mcp._registeredTools, name)) return undefined
      const tool = mcp._registeredTools[name] as Tool
      if (tool.enabled !== true || tool.execution !== undefined || typeof tool.executor !== 'function') return undefined
      if (typeof args !== 'object' || args === null || Array.isArray(args)) return undefined
      const codec = server._wireCodec()
      if (!codec.era.startsWith('2025-')) return undefined
      return call(instance, server, codec, tool, name, args, request, ctx)
    }
  }
}

/** `Server._wrapHandler('tools/call')` around `runTool`, less the parse of a request built by the gateway. */
async function call (instance: McpServer, server: ServerInternals, codec: WireCodec, tool: Tool, name: string, args: Record<string, unknown>, request: JSONRPCRequest, ctx: ServerContext): Promise<unknown> {
  let result = await runTool(instance, tool, name, args, ctx)
  if (isInputRequiredResult(result)) {
    // The SDK's seam fulfils it (on a 2025-era connection, by asking the client, or by calling
    // the tool again with the state it returned): it is handed the first round's result by a
    // handler that runs the tool as McpServer's own handler does from the second round on.
    let first: unknown = result
    const handler: Handler = async (again, againCtx) => {
      if (first !== undefined) {
        const answer = first
        first = undefined
        return answer as CallToolResult
      }
      return await lookUpAndRun(instance, again, againCtx) as CallToolResult
    }
    result = await server._invokeInputRequiredCapableHandler('tools/call', handler, request, ctx)
    if (isInputRequiredResult(result)) return result
  }
  const validated = codec.validateResult('tools/call', withContent(result))
  if (validated.ok) return validated.value
  const inEra = validated.reason !== 'not-in-era'
  throw new ProtocolError(inEra ? ProtocolErrorCode.InvalidParams : ProtocolErrorCode.InternalError, inEra ? `Invalid tools/call result: ${validated.message}` : 'No wire schema for tools/call in the resolved era')
}

/** McpServer's own `tools/call` handler: the lookup, then the tool (for the rounds after the first of a multi-round call). */
async function lookUpAndRun (instance: McpServer, request: JSONRPCRequest, ctx: ServerContext): Promise<unknown> {
  const params = request.params as { name: string, arguments?: Record<string, unknown> }
  const tool = (instance as unknown as McpServerInternals)._registeredTools[params.name]
  if (tool === undefined) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Tool ${params.name} not found`)
  if (!tool.enabled) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Tool ${params.name} disabled`)
  return await runTool(instance, tool, params.name, params.arguments, ctx)
}

/** The body of McpServer's `tools/call` handler once it has the tool: input, tool, output, projection. */
async function runTool (instance: McpServer, tool: Tool, name: string, args: Record<string, unknown> | undefined, ctx: ServerContext): Promise<unknown> {
  try {
    let input: unknown
    if (tool.inputSchema !== undefined) {
      const parsed = await tool.inputSchema['~standard'].validate(args ?? {})
      if (parsed.issues !== undefined && parsed.issues.length > 0) {
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Input validation error: Invalid arguments for tool ${name}: ${formatIssues(parsed.issues)}`)
      }
      input = (parsed as StandardSchemaV1.SuccessResult<unknown>).value
    }
    const result = await tool.executor(input, ctx) as CallToolResult
    if (tool.outputSchema !== undefined && !isInputRequiredResult(result) && result.isError !== true) {
      if (result.structuredContent === undefined) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Output validation error: Tool ${name} has an output schema but no structured content was provided`)
      const parsed = await tool.outputSchema['~standard'].validate(result.structuredContent)
      if (parsed.issues !== undefined && parsed.issues.length > 0) {
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Output validation error: Invalid structured content for tool ${name}: ${formatIssues(parsed.issues)}`)
      }
    }
    if (isInputRequiredResult(result)) return result
    return instance.server.projectCallToolResult(result, tool.outputSchemaJson)
  } catch (error) {
    if (error instanceof ProtocolError && error.code === ProtocolErrorCode.UrlElicitationRequired) throw error
    return { content: [{ type: 'text', text: error instanceof Error ? error.message : String(error) }], isError: true }
  }
}

/** The SDK's `validateStandardSchema` message: each issue as `path: message`, joined. */
function formatIssues (issues: ReadonlyArray<StandardSchemaV1.Issue>): string {
  return issues.map(issue => issue.path === undefined || issue.path.length === 0
    ? issue.message
    : `${issue.path.map(segment => String(typeof segment === 'object' ? segment.key : segment)).join('.')}: ${issue.message}`).join(', ')
}

/** The SDK's `normalizeContentlessToolResult`: a plain result without `content` gets `content: []`. */
function withContent (value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  const result = value as Record<string, unknown>
  if (result.content !== undefined || FOREIGN_FAMILY_KEYS.some(key => key in result)) return value
  return { ...result, content: [] }
}
