import createError, { type FastifyError } from '@fastify/error'
import { ProtocolError, ProtocolErrorCode, ResourceNotFoundError as SdkResourceNotFoundError, SdkError, SdkErrorCode } from '@modelcontextprotocol/server'

// Every error the gateway answers with, defined once: the `GW_ERR_*` errors of the HTTP side
// (each with its status), the failures of a call to a mounted server (`CallError`), the
// JSON-RPC codes, and the translations between them. Grouped by area, as Fastify's own
// lib/errors.js is; the README's error table is checked against this file by a test.

/** A field of a request body that failed validation, as `details` lists it. */
export interface FieldProblem {
  /** Dotted path in the body (`a.0.b`); empty for the body itself. */
  field: string
  message: string
}

/**
 * What the one error handler (plugins/core.ts) reads off an error besides its status and
 * code: response headers of its own (`Retry-After`; `WWW-Authenticate` once authentication
 * lands) and the bad fields of a validation failure. Fastify's own handler reads
 * `error.headers` the same way.
 */
export interface GatewayError extends FastifyError {
  headers?: Record<string, string>
  details?: FieldProblem[]
}

// --- Requests the gateway refuses (4xx) ------------------------------------------------

export const RouteNotFoundError = createError<[method: string, url: string]>(
  'GW_ERR_NOT_FOUND', 'Route %s %s not found', 404)

export const ServerNotFoundError = createError<[server: string]>(
  'GW_ERR_SERVER_NOT_FOUND', "Server '%s' not found", 404)

const ToolNotFoundBase = createError<[tool: string, server: string]>(
  'GW_ERR_TOOL_NOT_FOUND', "Tool '%s' not found on server '%s'", 404)

/** An unknown tool, or one the caller may not see (they answer alike). */
export class ToolNotFoundError extends ToolNotFoundBase {
  readonly tool: string
  constructor (tool: string, server: string) {
    super(tool, server)
    this.tool = tool
  }
}

const PromptNotFoundBase = createError<[prompt: string, server: string]>(
  'GW_ERR_PROMPT_NOT_FOUND', "Prompt '%s' not found on server '%s'", 404)

/** An unknown prompt, or one the caller may not see. */
export class PromptNotFoundError extends PromptNotFoundBase {
  readonly prompt: string
  constructor (prompt: string, server: string) {
    super(prompt, server)
    this.prompt = prompt
  }
}

const ResourceNotFoundBase = createError<[uri: string, server: string]>(
  'GW_ERR_RESOURCE_NOT_FOUND', "Resource '%s' not found on server '%s'", 404)

/** An unknown resource, or one the caller may not see. */
export class ResourceNotFoundError extends ResourceNotFoundBase {
  readonly uri: string
  constructor (uri: string, server: string) {
    super(uri, server)
    this.uri = uri
  }
}

const MethodNotAllowedBase = createError<[method: string, url: string, allow: string]>(
  'GW_ERR_METHOD_NOT_ALLOWED', 'Method %s is not allowed on %s: use %s', 405)

/**
 * A route of the REST shim asked with a method it does not take (`GET` on a tool); `Allow`
 * names the ones it does (RFC 9110 §15.5.6 makes the header part of a 405).
 */
export class MethodNotAllowedError extends MethodNotAllowedBase implements GatewayError {
  headers: Record<string, string>
  constructor (method: string, url: string, allow: string) {
    super(method, url, allow)
    this.headers = { allow }
  }
}

export const CapabilityMissingError = createError<[server: string, capability: string]>(
  'GW_ERR_NOT_SUPPORTED', "Server '%s' does not offer %s", 404)

const InvalidArgumentsBase = createError<[detail: string]>(
  'GW_ERR_INVALID_ARGUMENTS', 'Invalid arguments: %s', 400)

/** Arguments that do not match the schema; `details` names each bad field. */
export class InvalidArgumentsError extends InvalidArgumentsBase implements GatewayError {
  details?: FieldProblem[]
  constructor (details: FieldProblem[] | string) {
    const list = typeof details === 'string' ? undefined : details
    super(list === undefined ? details as string : list.map(d => d.field === '' ? d.message : `'${d.field}' ${d.message}`).join('; '))
    if (list !== undefined) this.details = list
  }
}

export const InvalidJsonError = createError<[detail: string]>(
  'GW_ERR_INVALID_JSON', 'Request body is not valid JSON: %s', 400)

export const UnsupportedMediaTypeError = createError<[contentType: string]>(
  'GW_ERR_UNSUPPORTED_MEDIA_TYPE', "Unsupported content type '%s': send application/json", 415)

export const BodyTooLargeError = createError<[limit: number]>(
  'GW_ERR_BODY_TOO_LARGE', 'Request body is larger than the limit of %d bytes', 413)

export const ForbiddenHostError = createError<[detail: string]>(
  'GW_ERR_FORBIDDEN_ORIGIN', 'Forbidden: %s', 403)

/** A 4xx that Fastify or Node raised and the catalogue has no closer code for. */
export const BadRequestError = createError<[detail: string]>(
  'GW_ERR_BAD_REQUEST', '%s', 400)

/** A body that nests arrays and objects deeper than the limit; refused before anything recurses over it. */
export const JsonTooDeepError = createError<[maxDepth: number]>(
  'GW_ERR_JSON_TOO_DEEP', 'Request body nests JSON deeper than %d levels', 400)

/** A body whose bytes are not UTF-8 (JSON is UTF-8, RFC 8259 §8.1); refused rather than read with U+FFFD in their place. */
export const InvalidUtf8Error = createError(
  'GW_ERR_INVALID_UTF8', 'Request body is not valid UTF-8', 400)

/** Request headers over the server's `maxHeaderSize`; answered by the client error handler (src/http/server-options.ts). */
export const HeadersTooLargeError = createError<[limit: number]>(
  'GW_ERR_HEADERS_TOO_LARGE', 'Request headers are larger than the limit of %d bytes', 431)

/** A request (headers and body) not received within the server's request timeout: a slow or stalled client. */
export const RequestTimeoutError = createError<[ms: number]>(
  'GW_ERR_REQUEST_TIMEOUT', 'The request was not received within %d ms', 408)

/** The server answered the request with a JSON-RPC error of its own (bad params and the like). */
export const UpstreamRejectedError = createError<[server: string, detail: string]>(
  'GW_ERR_UPSTREAM_REJECTED', "Server '%s' rejected the request: %s", 400)

/** The `code` a REST response carries when the tool itself reported an error (`isError: true`). */
export const TOOL_ERROR_CODE = 'GW_ERR_TOOL_ERROR'
/** HTTP status for a tool's own error result: the call was valid and reached the tool, which refused it. */
export const TOOL_ERROR_STATUS = 422

// --- Failures of the gateway or of a mounted server (5xx) -------------------------------

/** A fault in the gateway itself: clients get this code and no message or stack. */
export const InternalError = createError(
  'GW_ERR_INTERNAL', 'Internal server error', 500)

export const UpstreamError = createError<[server: string]>(
  'GW_ERR_UPSTREAM', "Server '%s' failed to handle the call", 502)

const ServerUnavailableBase = createError<[server: string, reason: string]>(
  'GW_ERR_SERVER_UNAVAILABLE', "Server '%s' is unavailable: %s", 503)

/** The server is down; `Retry-After` says when the gateway next tries to bring it back. */
export class ServerUnavailableError extends ServerUnavailableBase implements GatewayError {
  headers?: Record<string, string>
  constructor (server: string, reason: string, retryAfterSeconds?: number) {
    super(server, reason)
    if (retryAfterSeconds !== undefined) this.headers = { 'retry-after': String(retryAfterSeconds) }
  }
}

const RateLimitedBase = createError<[limit: number, windowMs: number, scope: string, retryAfter: number]>(
  'GW_ERR_RATE_LIMITED', 'Rate limit of %d calls per %d ms %s exceeded: retry in %d s', 429)

/**
 * A call over one of the caller's rate limits (src/pipeline/rate-limit.ts). `Retry-After`
 * and the IETF draft's `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the
 * names `@fastify/rate-limit` uses with `enableDraftSpec`) describe the limit that refused it.
 */
export class RateLimitedError extends RateLimitedBase implements GatewayError {
  headers: Record<string, string>
  constructor (limit: number, windowMs: number, scope: string, retryAfterSeconds: number) {
    super(limit, windowMs, scope, retryAfterSeconds)
    this.headers = {
      'retry-after': String(retryAfterSeconds),
      'ratelimit-limit': String(limit),
      'ratelimit-remaining': '0',
      'ratelimit-reset': String(retryAfterSeconds)
    }
  }
}

const ShuttingDownBase = createError(
  'GW_ERR_SHUTTING_DOWN', 'The gateway is shutting down: retry on another instance', 503)

/** A request that arrives while the gateway drains: the client closes this connection and goes elsewhere. */
export class ShuttingDownError extends ShuttingDownBase implements GatewayError {
  headers = { connection: 'close', 'retry-after': '1' }
}

const TooManySessionsBase = createError<[server: string, limit: number]>(
  'GW_ERR_TOO_MANY_SESSIONS', "Server '%s' is at its limit of %d sessions, each with a call in flight", 503)

/**
 * A new 2025-era session when the table is full and no session can be evicted (each has a
 * call in flight); `Retry-After` says when one is likely to be free.
 */
export class TooManySessionsError extends TooManySessionsBase implements GatewayError {
  headers: Record<string, string>
  constructor (server: string, limit: number, retryAfterSeconds: number) {
    super(server, limit)
    this.headers = { 'retry-after': String(retryAfterSeconds) }
  }
}

const StoreUnavailableBase = createError<[what: string]>(
  'GW_ERR_STORE_UNAVAILABLE', 'The shared store is unreachable (%s): retry shortly', 503)

/**
 * A request that needs what instances share (a 2025-era session, a stream to resume) while
 * Redis is unreachable; the gateway reconnects with backoff, so a retry soon may succeed.
 */
export class StoreUnavailableError extends StoreUnavailableBase implements GatewayError {
  headers = { 'retry-after': '2' }
}

export const ToolTimeoutError = createError<[tool: string, server: string, ms: number]>(
  'GW_ERR_TOOL_TIMEOUT', "Tool '%s' on server '%s' did not answer within %d ms", 504)

const TooManyIsolatedBase = createError<[server: string, limit: number]>(
  'GW_ERR_TOO_MANY_ISOLATED', "Server '%s' has its most per-session upstream connections open (%d, the entry's maxIsolated): try again later", 503)

/**
 * A session of a server with `isolation: "session"` needs its own upstream connection and the
 * server has `maxIsolated` open; `Retry-After` says when an idle one is next closed.
 */
export class TooManyIsolatedError extends TooManyIsolatedBase implements GatewayError {
  headers?: Record<string, string>
  constructor (server: string, limit: number, retryAfterSeconds?: number) {
    super(server, limit)
    if (retryAfterSeconds !== undefined) this.headers = { 'retry-after': String(retryAfterSeconds) }
  }
}

// --- Authentication (plugins/auth.ts): each carries its `WWW-Authenticate` challenge ------

const UnauthenticatedBase = createError<[detail: string]>(
  'GW_ERR_UNAUTHENTICATED', 'Authentication required: %s', 401)

/**
 * A protected route reached with no credentials, or with a token or API key that is not
 * valid here (unknown, expired, not yet valid, for another resource). The challenge names
 * the endpoint's protected resource metadata (RFC 9728), where a client finds its
 * authorization server.
 */
export class UnauthenticatedError extends UnauthenticatedBase implements GatewayError {
  headers: Record<string, string>
  constructor (detail: string, challenge: string) {
    super(detail)
    this.headers = { 'www-authenticate': challenge }
  }
}

const InsufficientScopeBase = createError<[scopes: string]>(
  'GW_ERR_INSUFFICIENT_SCOPE', 'Insufficient scope: this server needs the scopes %s', 403)

/** A caller whose token or key lacks a scope the server requires; the challenge names every scope needed. */
export class InsufficientScopeError extends InsufficientScopeBase implements GatewayError {
  headers: Record<string, string>
  constructor (scopes: string, challenge: string) {
    super(scopes)
    this.headers = { 'www-authenticate': challenge }
  }
}

const InvalidAuthRequestBase = createError<[detail: string]>(
  'GW_ERR_INVALID_AUTH_REQUEST', 'Invalid authentication request: %s', 400)

/**
 * Credentials sent in a way the gateway refuses: a token in the query string (the MCP
 * authorization spec forbids it: URLs end up in logs and histories), or two credentials at once.
 */
export class InvalidAuthRequestError extends InvalidAuthRequestBase implements GatewayError {
  headers: Record<string, string>
  constructor (detail: string, challenge: string) {
    super(detail)
    this.headers = { 'www-authenticate': challenge }
  }
}

// --- Configuration and embedding (never an HTTP answer: they stop the boot) -------------

/** A config file that cannot be read or is invalid: every problem found, one per line, each naming the file. */
export const ConfigError = createError<[problems: string]>(
  'GW_ERR_CONFIG', '%s', 500)

/** Options given to a plugin, or a config entry the gateway cannot act on (a module that does not load). */
export const InvalidOptionsError = createError<[detail: string]>(
  'GW_ERR_INVALID_OPTIONS', 'Invalid options: %s', 500)

// --- JSON-RPC ----------------------------------------------------------------------------

/**
 * The JSON-RPC error codes the gateway sends or reads, by name: the spec's own (the SDK's
 * `ProtocolErrorCode`) and the server-defined ones the Streamable HTTP transport uses.
 */
export const JsonRpcCode = {
  ParseError: ProtocolErrorCode.ParseError,
  InvalidRequest: ProtocolErrorCode.InvalidRequest,
  MethodNotFound: ProtocolErrorCode.MethodNotFound,
  InvalidParams: ProtocolErrorCode.InvalidParams,
  InternalError: ProtocolErrorCode.InternalError,
  /** Transport-level refusals (bad headers, shutting down, too many sessions), as the SDK's transports answer them. */
  ServerError: -32000,
  /** An unknown or expired `Mcp-Session-Id`, as the SDK's session transport answers it. */
  SessionNotFound: -32001,
  /** Resource not found, from servers built before SEP-2164 (which answer InvalidParams now). */
  ResourceNotFound: ProtocolErrorCode.ResourceNotFound,
  /** An `Mcp-Param-*` header that disagrees with the arguments (2026-07-28). */
  HeaderMismatch: -32020,
  MissingRequiredClientCapability: ProtocolErrorCode.MissingRequiredClientCapability
} as const

// --- Calls to a mounted server --------------------------------------------------------

/** How a call to a mounted server failed, whatever its transport. */
export type CallFailure = 'NOT_CONNECTED' | 'CONNECTION_CLOSED' | 'REQUEST_TIMEOUT' | 'ABORTED' | 'PROTOCOL_ERROR'

/** A failed call, in the same terms for every connection (in-process, upstream, aggregate). */
export class CallError extends Error {
  readonly code: CallFailure
  /** The JSON-RPC error code, for protocol errors. */
  readonly rpcCode: number | undefined
  readonly data: unknown
  constructor (code: CallFailure, message: string, rpcCode?: number, data?: unknown) {
    super(message)
    this.name = 'CallError'
    this.code = code
    this.rpcCode = rpcCode
    this.data = data
  }
}

/** The server's own refusal of a request as invalid, in its JSON-RPC terms. */
export function invalidParams (message: string, data?: unknown): CallError {
  return new CallError('PROTOCOL_ERROR', message, JsonRpcCode.InvalidParams, data)
}

/** The SDK client's failures in the gateway's terms, so every connection fails alike. */
export function fromSdkError (err: unknown): CallError {
  if (err instanceof CallError) return err
  if (err instanceof ProtocolError) return new CallError('PROTOCOL_ERROR', err.message, err.code, err.data)
  if (err instanceof SdkError) {
    const [code, rpcCode] = SDK_ERRORS[err.code] ?? ['CONNECTION_CLOSED']
    return new CallError(code, err.message, rpcCode)
  }
  if (err instanceof Error && err.name === 'AbortError') return new CallError('ABORTED', 'The call was cancelled')
  return new CallError('CONNECTION_CLOSED', err instanceof Error ? err.message : String(err))
}

/**
 * The SDK's local errors (`SdkErrorCode`: raised by the client, never on the wire), as
 * Fastify's `AVVIO_ERRORS_MAP` translates avvio's. Only a connection that is gone is
 * `CONNECTION_CLOSED`, which over HTTP takes the whole server down and starts the
 * reconnects. An answer the client refused (a result that fails its schema, of a kind it
 * cannot consume, a pagination or input round that never ends) is the server's fault on
 * that one call: an internal error, a 502 over REST. A request the client refused to send
 * (a method the server's revision or capabilities lack) is answered as the server would
 * have answered it. A `Record` over the enum, so a code a new SDK adds fails the typecheck
 * until it is placed; at run time an unknown one counts as a lost connection, as before.
 */
const SDK_ERRORS: Record<SdkErrorCode, [CallFailure, number?]> = {
  // The connection: not there, or lost; an HTTP refusal of the transport itself (a 404 for
  // a session the server forgot, a 401, an HTML page from a proxy) needs a new one too.
  [SdkErrorCode.NotConnected]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.AlreadyConnected]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.NotInitialized]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ConnectionClosed]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.SendFailed]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.EraNegotiationFailed]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpNotImplemented]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpAuthentication]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpForbidden]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpUnexpectedContent]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpFailedToOpenStream]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.ClientHttpFailedToTerminateSession]: ['CONNECTION_CLOSED'],
  [SdkErrorCode.RequestTimeout]: ['REQUEST_TIMEOUT'],
  // A bad answer to one request.
  [SdkErrorCode.InvalidResult]: ['PROTOCOL_ERROR', JsonRpcCode.InternalError],
  [SdkErrorCode.UnsupportedResultType]: ['PROTOCOL_ERROR', JsonRpcCode.InternalError],
  [SdkErrorCode.InputRequiredRoundsExceeded]: ['PROTOCOL_ERROR', JsonRpcCode.InternalError],
  [SdkErrorCode.ListPaginationExceeded]: ['PROTOCOL_ERROR', JsonRpcCode.InternalError],
  // A request this server cannot take.
  [SdkErrorCode.CapabilityNotSupported]: ['PROTOCOL_ERROR', JsonRpcCode.MethodNotFound],
  [SdkErrorCode.MethodNotSupportedByProtocolVersion]: ['PROTOCOL_ERROR', JsonRpcCode.MethodNotFound]
}

/** What a REST route knows of the server it called, to name it in the answer. */
export interface CallTarget {
  server: string
  /** The server's state now: a failure while it is down is a 503, not a 502. */
  readonly state: string
  readonly failure: string | undefined
  readonly retryAfter: number | undefined
}

/** A 503 for a server that is down, with `Retry-After` when it is being brought back. */
export function unavailable (target: CallTarget): ServerUnavailableError {
  return new ServerUnavailableError(target.server, target.failure ?? target.state, target.retryAfter)
}

/**
 * Translation 1: a failed call as the HTTP error a REST client gets. A timeout is a 504;
 * the server's own refusal of bad params a 400; a call to a server already down a 503; a
 * call in flight when the server died, or any other failure of the server, a 502. Errors
 * that are already the gateway's pass through.
 */
export function toHttpError (err: unknown, target: CallTarget, what: string, timeoutMs: number): Error {
  if (isGatewayError(err)) return err
  const { code, rpcCode, message } = err as Partial<CallError>
  let error: Error
  if (code === 'REQUEST_TIMEOUT') error = new ToolTimeoutError(what, target.server, timeoutMs)
  else if (code === 'PROTOCOL_ERROR' && (rpcCode === JsonRpcCode.InvalidParams || rpcCode === JsonRpcCode.ResourceNotFound)) {
    error = new UpstreamRejectedError(target.server, message ?? 'invalid params')
  } else if (code !== 'CONNECTION_CLOSED' && code !== 'PROTOCOL_ERROR' && target.state !== 'up') error = unavailable(target)
  else error = new UpstreamError(target.server)
  error.cause = err
  return error
}

/**
 * Translation 2: any error as the JSON-RPC error an MCP client gets. The server's own
 * JSON-RPC error passes as it was; a refusal of the gateway's keeps its `GW_ERR_*` code in
 * `data.code`; a gateway failure (down, timed out, crashed) is an internal error that names
 * the server and never carries a stack or an internal message.
 */
export function toJsonRpcError (err: unknown, server: string): ProtocolError {
  if (err instanceof ProtocolError) return err
  if (err instanceof CallError) {
    if (err.code === 'PROTOCOL_ERROR' && err.rpcCode !== undefined) return new ProtocolError(err.rpcCode, err.message, err.data)
    return new ProtocolError(ProtocolErrorCode.InternalError, `Server '${server}': ${err.message}`)
  }
  // An unknown name answers as the SDK's own McpServer answers it, so a name the caller may
  // not see is indistinguishable from one that does not exist.
  if (err instanceof ToolNotFoundError) return new ProtocolError(ProtocolErrorCode.InvalidParams, `Tool ${err.tool} not found`)
  if (err instanceof PromptNotFoundError) return new ProtocolError(ProtocolErrorCode.InvalidParams, `Prompt ${err.prompt} not found`)
  if (err instanceof ResourceNotFoundError) return new SdkResourceNotFoundError(err.uri)
  if (isGatewayError(err)) {
    // The catalogue's messages are written for clients, 5xx ones included.
    const status = err.statusCode ?? 500
    return new ProtocolError(jsonRpcCodeFor(status), err.message, { code: err.code })
  }
  return new ProtocolError(ProtocolErrorCode.InternalError, `Server '${server}' failed to handle the request`)
}

/** The JSON-RPC code of an MCP route's refusal with this HTTP status. */
export function jsonRpcCodeFor (status: number): number {
  switch (status) {
    case 400: case 413: case 415: return JsonRpcCode.InvalidRequest
    case 404: return JsonRpcCode.MethodNotFound
    default: return JsonRpcCode.ServerError
  }
}

/** One of the catalogue's `GW_ERR_*` errors. */
export function isGatewayError (err: unknown): err is GatewayError {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  return typeof code === 'string' && code.startsWith('GW_ERR_')
}
