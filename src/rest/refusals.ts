import {
  BadRequestError,
  BodyTooLargeError,
  ForbiddenHostError,
  InsufficientScopeError,
  InternalError,
  InvalidArgumentsError,
  InvalidAuthRequestError,
  InvalidJsonError,
  InvalidUtf8Error,
  JsonTooDeepError,
  RateLimitedError,
  ServerUnavailableError,
  ShuttingDownError,
  ToolTimeoutError,
  UnauthenticatedError,
  UnsupportedMediaTypeError,
  UpstreamError,
  UpstreamRejectedError,
  type FieldProblem,
  type GatewayError
} from '../errors.js'
import type { SecurityOptions } from '../security.js'
import { errorResponse } from './schemas.js'

// The error answers of the REST routes as the OpenAPI document shows them: each status with
// the codes the catalogue can really answer there, and for each code the body its own error
// produces (real code, message and statusCode), built from the catalogue rather than written
// out, so the document cannot drift from what the gateway says.

/** What decides a server's refusals. */
export interface RefusalOptions {
  server: string
  /** The gateway's security settings: authentication adds 400/401 (and 403 with `scopes`), rate limits 429. */
  security: SecurityOptions | undefined
  /** The scopes the server requires; without any there is no `insufficient_scope`. */
  scopes: readonly string[]
  timeoutMs: number
  bodyLimit: number
  maxJsonDepth: number
}

/** Why each code is answered, as each documented status lists it. */
const WHEN: Record<string, string> = {
  GW_ERR_INVALID_ARGUMENTS: 'arguments that do not match the schema; `details` names each bad field',
  GW_ERR_INVALID_JSON: 'the body is not valid JSON',
  GW_ERR_JSON_TOO_DEEP: 'the body nests arrays and objects deeper than the limit',
  GW_ERR_INVALID_UTF8: 'the body is not valid UTF-8',
  GW_ERR_BAD_REQUEST: 'any other malformed request (a `Content-Length` that does not match the body, say)',
  GW_ERR_UPSTREAM_REJECTED: 'the server refused the request\'s params as invalid (its own JSON-RPC error)',
  GW_ERR_INVALID_AUTH_REQUEST: 'credentials sent in a way the gateway refuses (a token in the URL, or two credentials)',
  GW_ERR_UNAUTHENTICATED: 'no credentials, or ones that are not valid here; `WWW-Authenticate` names the scheme and the protected resource metadata',
  GW_ERR_FORBIDDEN_ORIGIN: 'a `Host` or `Origin` header that is not allowed (DNS rebinding protection)',
  GW_ERR_INSUFFICIENT_SCOPE: 'the credentials lack a scope the server requires; `WWW-Authenticate` (`insufficient_scope`) names them',
  GW_ERR_TOOL_NOT_FOUND: 'no such tool now, or one the caller may not see (they answer alike)',
  GW_ERR_PROMPT_NOT_FOUND: 'no such prompt, or one the caller may not see (they answer alike)',
  GW_ERR_RESOURCE_NOT_FOUND: 'no resource with that URI, or one the caller may not see (they answer alike)',
  GW_ERR_NOT_SUPPORTED: 'the server offers no prompts (or no resources)',
  GW_ERR_BODY_TOO_LARGE: 'the body is over the size limit',
  GW_ERR_UNSUPPORTED_MEDIA_TYPE: 'the body is not `application/json`',
  GW_ERR_RATE_LIMITED: 'over one of the caller\'s rate limits; `Retry-After` and the `RateLimit-*` headers say when to retry',
  GW_ERR_INTERNAL: 'a fault in the gateway (the rate-limit store failed, say); no message or stack reaches the client',
  GW_ERR_UPSTREAM: 'the server failed while handling the request (it died mid-call, say)',
  GW_ERR_SERVER_UNAVAILABLE: 'the server is down; `Retry-After` says when it is next tried',
  GW_ERR_SHUTTING_DOWN: 'the gateway is draining for shutdown (`Connection: close`): retry on another instance',
  GW_ERR_TOOL_TIMEOUT: 'the server did not answer within the timeout; the call is cancelled'
}

const RETRY_AFTER = { 'Retry-After': { type: 'integer', description: 'Seconds until a retry may succeed' } }

/**
 * The refusals each route can answer, as the catalogue's own errors (so each documented
 * status lists the codes it can carry, with the body each one really has): those of every
 * route of the server (the Host and Origin check, a server down, the drain, authentication
 * when it is on), those of a call (rate limits only for calls: lists pass no admission), and
 * those of a JSON body.
 */
export class Refusals {
  readonly #every: GatewayError[]
  readonly #call: (what: string) => GatewayError[]
  readonly #body: GatewayError[]

  constructor (options: RefusalOptions) {
    const { server, security, scopes, timeoutMs } = options
    const auth = security?.auth?.mode === 'required'
    const rateLimit = security?.rateLimit
    this.#every = [
      new ForbiddenHostError('Invalid Host: evil.example'),
      new ServerUnavailableError(server, 'the server failed to start; see the log', 5),
      new ShuttingDownError(),
      ...auth
        ? [
            new InvalidAuthRequestError('send the access token in the Authorization header, never in the URL', ''),
            new UnauthenticatedError('send an access token (Authorization: Bearer) or an API key (X-API-Key)', '')
          ]
        : [],
      ...auth && scopes.length > 0 ? [new InsufficientScopeError(scopes.join(' '), '')] : []
    ]
    this.#call = what => [
      new UpstreamRejectedError(server, 'Invalid params'),
      new UpstreamError(server),
      new ToolTimeoutError(what, server, timeoutMs),
      ...rateLimit !== undefined
        ? [new RateLimitedError(rateLimit.max, rateLimit.timeWindow, 'on the gateway', Math.ceil(rateLimit.timeWindow / 1000)), new InternalError()]
        : []
    ]
    this.#body = [
      new InvalidJsonError('Body is not valid JSON but content-type is set to \'application/json\''),
      new JsonTooDeepError(options.maxJsonDepth),
      new InvalidUtf8Error(),
      new BadRequestError('Request body size did not match Content-Length'),
      new BodyTooLargeError(options.bodyLimit),
      new UnsupportedMediaTypeError('text/plain')
    ]
  }

  /** The refusals of a call of `what` (a tool, prompt or URI). */
  call (what: string): GatewayError[] { return this.#call(what) }
  /** The refusals of a prompt or resource list (`method`), which the server answers but no rate limit counts. */
  list (method: string): GatewayError[] { return this.#call(method).filter(refusal => refusal instanceof UpstreamError || refusal instanceof ToolTimeoutError) }
  get body (): GatewayError[] { return this.#body }

  /** The documented error responses of a route that can refuse with `own` besides what every route can. */
  responses (own: GatewayError[]): Record<number, Record<string, unknown>> {
    const byStatus = new Map<number, GatewayError[]>()
    for (const refusal of [...own, ...this.#every]) {
      const status = refusal.statusCode ?? 500
      byStatus.set(status, [...byStatus.get(status) ?? [], refusal])
    }
    return Object.fromEntries([...byStatus].sort(([a], [b]) => a - b).map(([status, refusals]) => {
      const codes = new Set(refusals.map(refusal => refusal.code))
      return [status, errorResponse(refusals, code => WHEN[code] ?? '', headersOf(status, codes))]
    }))
  }
}

function headersOf (status: number, codes: Set<string>): Record<string, Record<string, unknown>> | undefined {
  switch (status) {
    case 400: return codes.has('GW_ERR_INVALID_AUTH_REQUEST') ? { 'WWW-Authenticate': { type: 'string', description: 'With `GW_ERR_INVALID_AUTH_REQUEST`: the challenge, `error="invalid_request"`' } } : undefined
    case 401: return { 'WWW-Authenticate': { type: 'string', description: 'The challenge (RFC 6750 `Bearer`, with `resource_metadata`)' } }
    case 403: return codes.has('GW_ERR_INSUFFICIENT_SCOPE') ? { 'WWW-Authenticate': { type: 'string', description: 'With `GW_ERR_INSUFFICIENT_SCOPE`: the challenge, naming the scopes needed' } } : undefined
    case 429: return {
      ...RETRY_AFTER,
      'RateLimit-Limit': { type: 'integer', description: 'Calls allowed per window' },
      'RateLimit-Remaining': { type: 'integer', description: 'Calls left in the window' },
      'RateLimit-Reset': { type: 'integer', description: 'Seconds until the window resets' }
    }
    case 503: return RETRY_AFTER
    default: return undefined
  }
}

/** The 400 a body with one bad field gets, worded as the route's validation words it. */
export function invalidArguments (problem: FieldProblem): InvalidArgumentsError {
  return new InvalidArgumentsError([problem])
}

