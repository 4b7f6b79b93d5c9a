import createError from '@fastify/error'

// Every error the gateway throws, defined once with its HTTP status. The error handler in
// plugins/core.ts shapes them into `{ statusCode, code, error, message }`.

export const ToolNotFoundError = createError<[tool: string, server: string]>(
  'GW_ERR_TOOL_NOT_FOUND', "Tool '%s' not found on server '%s'", 404)

export const ServerNotFoundError = createError<[server: string]>(
  'GW_ERR_SERVER_NOT_FOUND', "Server '%s' not found", 404)

export const RouteNotFoundError = createError<[method: string, url: string]>(
  'GW_ERR_NOT_FOUND', 'Route %s %s not found', 404)

export const InvalidArgumentsError = createError<[detail: string]>(
  'GW_ERR_INVALID_ARGUMENTS', 'Invalid arguments: %s', 400)

export const InvalidJsonError = createError<[detail: string]>(
  'GW_ERR_INVALID_JSON', 'Request body is not valid JSON: %s', 400)

export const UnsupportedMediaTypeError = createError<[contentType: string]>(
  'GW_ERR_UNSUPPORTED_MEDIA_TYPE', "Unsupported content type '%s': send application/json", 415)

export const BodyTooLargeError = createError<[limit: number]>(
  'GW_ERR_BODY_TOO_LARGE', 'Request body is larger than the limit of %d bytes', 413)

export const ServerUnavailableError = createError<[server: string, reason: string]>(
  'GW_ERR_SERVER_UNAVAILABLE', "Server '%s' is unavailable: %s", 503)

export const ToolTimeoutError = createError<[tool: string, server: string, ms: number]>(
  'GW_ERR_TOOL_TIMEOUT', "Tool '%s' on server '%s' did not answer within %d ms", 504)

export const UpstreamError = createError<[server: string]>(
  'GW_ERR_UPSTREAM', "Server '%s' failed to handle the call", 502)

export const InvalidOptionsError = createError<[detail: string]>(
  'GW_ERR_INVALID_OPTIONS', 'Invalid options: %s', 500)

/** The `code` a REST response carries when the tool itself reported an error (`isError: true`). */
export const TOOL_ERROR_CODE = 'GW_ERR_TOOL_ERROR'
/** HTTP status for a tool's own error result: the call was valid and reached the tool, which refused it. */
export const TOOL_ERROR_STATUS = 422

export const ForbiddenHostError = createError<[detail: string]>(
  'GW_ERR_FORBIDDEN_ORIGIN', 'Forbidden: %s', 403)

/** A config file that cannot be read or is invalid: every problem found, one per line, each naming the file. */
export const ConfigError = createError<[problems: string]>(
  'GW_ERR_CONFIG', '%s', 500)

export const PromptNotFoundError = createError<[prompt: string, server: string]>(
  'GW_ERR_PROMPT_NOT_FOUND', "Prompt '%s' not found on server '%s'", 404)

export const ResourceNotFoundError = createError<[uri: string, server: string]>(
  'GW_ERR_RESOURCE_NOT_FOUND', "Resource '%s' not found on server '%s'", 404)

export const CapabilityMissingError = createError<[server: string, capability: string]>(
  'GW_ERR_NOT_SUPPORTED', "Server '%s' does not offer %s", 404)

/** The server answered the request with a JSON-RPC error of its own (bad params and the like). */
export const UpstreamRejectedError = createError<[server: string, detail: string]>(
  'GW_ERR_UPSTREAM_REJECTED', "Server '%s' rejected the request: %s", 400)
