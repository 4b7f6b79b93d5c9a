// The `WWW-Authenticate: Bearer ...` challenges of RFC 6750 §3 with the MCP authorization
// spec's `resource_metadata` (RFC 9728 §5.1). Written here rather than taken from the SDK's
// `bearerAuthChallengeResponse`: that helper builds a whole web `Response` and always names an
// error, while RFC 6750 §3.1 asks for no error code when the request carried no credentials
// at all; the quoting follows the SDK's own formatter.

export interface Challenge {
  /** `invalid_token`, `insufficient_scope` or `invalid_request`; none when no credentials came. */
  error?: 'invalid_token' | 'insufficient_scope' | 'invalid_request'
  description?: string
  /** The scopes the resource needs, all of them (RFC 6750 §3: one `scope` attribute). */
  scopes: readonly string[]
  resourceMetadataUrl: string
}

export function bearerChallenge ({ error, description, scopes, resourceMetadataUrl }: Challenge): string {
  const params = [`resource_metadata="${quoted(resourceMetadataUrl)}"`]
  if (scopes.length > 0) params.push(`scope="${quoted(scopes.join(' '))}"`)
  if (error !== undefined) params.push(`error="${error}"`)
  if (description !== undefined) params.push(`error_description="${quoted(description)}"`)
  return `Bearer ${params.join(', ')}`
}

/** An HTTP quoted-string's content: `\` and `"` escaped, anything not printable ASCII a space. */
function quoted (value: string): string {
  return value.replaceAll(/[\\"]/g, '\\$&').replaceAll(/[^\u0020-\u007E]/g, ' ')
}
