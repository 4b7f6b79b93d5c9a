import { getOAuthProtectedResourceMetadataUrl, type OAuthProtectedResourceMetadata } from '@modelcontextprotocol/server'

// RFC 9728 Protected Resource Metadata, as the MCP authorization spec asks of a resource
// server. Each mounted server's endpoint is its own protected resource (`<origin>/<prefix>/mcp`,
// which its REST routes share), and `/mcp` is the gateway's; a token is bound to one of them
// by its audience.
//
// The document is built here rather than with the SDK's `buildOAuthProtectedResourceMetadata`:
// that helper wants the authorization server's whole RFC 8414 metadata (the gateway knows only
// its issuer), names exactly one authorization server (the config may list several), and
// leaves out `bearer_methods_supported`, which the gateway states (header only: no query, no
// form body). The well-known URL is the SDK's `getOAuthProtectedResourceMetadataUrl`.

/** The well-known path prefix (RFC 9728 §3). */
export const WELL_KNOWN = '/.well-known/oauth-protected-resource'

/** Where the metadata of a resource is: the well-known prefix ahead of the resource's path. */
export function metadataUrlOf (resource: string): string {
  return getOAuthProtectedResourceMetadataUrl(new URL(resource))
}

export function resourceMetadata (resource: string, authorizationServers: readonly string[], scopes: readonly string[]): OAuthProtectedResourceMetadata {
  return {
    resource,
    authorization_servers: [...authorizationServers],
    ...(scopes.length > 0 && { scopes_supported: [...scopes] }),
    bearer_methods_supported: ['header']
  }
}
