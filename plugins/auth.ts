import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AuthInfo } from '@modelcontextprotocol/server'
import { UpstreamConnection } from '../src/connections/upstream.js'
import type { MountedServer } from '../src/connections/registry.js'
import { InsufficientScopeError, InvalidAuthRequestError, RouteNotFoundError, UnauthenticatedError } from '../src/errors.js'
import { ApiKeys } from '../src/http/auth/api-keys.js'
import { bearerChallenge, type Challenge } from '../src/http/auth/challenge.js'
import { JwtVerifier, TokenRefused } from '../src/http/auth/jwt.js'
import { metadataUrlOf, resourceMetadata, WELL_KNOWN } from '../src/http/auth/resource-metadata.js'
import type { SecurityOptions } from '../src/security.js'

/** The gateway's security settings (src/security.ts); this plugin reads `auth` and `publicUrl`. */
export type AuthPluginOptions = Pick<SecurityOptions, 'auth' | 'publicUrl'>

/** What a protected route is: the resource its tokens must be meant for, and the scopes it needs. */
interface Protection {
  /** The resource's path on the gateway's origin: `<prefix>/mcp`, or `/mcp` for the gateway's own. */
  path: string
  /** The mounted server, for its routes; undefined for `/mcp` and the documentation. */
  server: MountedServer | undefined
}

/** Routes that answer without credentials: liveness and readiness for load balancers, and the metadata that tells a client how to get credentials. */
const PUBLIC = new Set(['/health', '/ready', '/ready/:server', WELL_KNOWN, `${WELL_KNOWN}/*`])
/** The gateway's own resource: `/mcp`, and the documentation when it is protected. */
const GATEWAY_RESOURCE = '/mcp'

/**
 * Authentication of every route of every mounted server and of `/mcp`, as an OAuth 2.1
 * resource server per the MCP authorization spec: API keys (`Authorization: Bearer` or
 * `X-API-Key`) and JWT access tokens from one issuer, each endpoint its own protected resource
 * with its RFC 9728 metadata, a `WWW-Authenticate` challenge on every refusal, and the caller
 * in `request.identity` for everything after (the call pipeline's filters, `ctx.http.authInfo`
 * of in-process tools, identity headers to HTTP upstreams). Without `auth`, or with
 * `mode: "none"`, it adds nothing at all.
 *
 * The check runs in `onRequest`, before the body is read: a caller without credentials costs
 * no body parsing (so its JSON-RPC error carries `id: null`). Registered after CORS (a
 * preflight carries no credentials) and before any server is mounted, so its hooks hold on
 * every server's routes.
 */
async function auth (app: FastifyInstance, options: AuthPluginOptions): Promise<void> {
  const settings = options.auth
  if (settings === undefined || settings.mode === 'none') return
  const apiKeys = new ApiKeys(settings.apiKeys)
  const jwt = settings.jwt === undefined ? undefined : new JwtVerifier(settings.jwt)
  const { publicUrl } = options
  const registry = app.mcpRegistry
  const originOf = (request: FastifyRequest): string => publicUrl ?? `${request.protocol}://${request.host}`

  // Which resource each route is, decided once per route (routes are a fixed set after boot):
  // a server's routes are under its prefix; anything else that is not public (the docs when
  // `protectDocs`, routes other plugins add) is the gateway's own resource, so a route nobody
  // thought of is protected rather than open.
  const protections = new Map<string, Protection | null>()
  const protectionOf = (url: string): Protection | null => {
    let protection = protections.get(url)
    if (protection !== undefined) return protection
    const server = registry.servers()
      .filter(candidate => url.startsWith(`${candidate.prefix}/`))
      .sort((a, b) => b.prefix.length - a.prefix.length)[0]
    const docs = url === '/docs' || url.startsWith('/docs/') || url === '/redoc' || url.startsWith('/redoc/')
    protection = PUBLIC.has(url) || (docs && !settings.protectDocs)
      ? null
      : server === undefined ? { path: GATEWAY_RESOURCE, server: undefined } : { path: `${server.prefix}/mcp`, server }
    protections.set(url, protection)
    return protection
  }

  // The refusals' challenge, built only when a request is refused.
  const challengeOf = (protection: Protection, resource: string, refusal: Omit<Challenge, 'scopes' | 'resourceMetadataUrl'> = {}): string =>
    bearerChallenge({ ...refusal, scopes: protection.server?.scopes ?? [], resourceMetadataUrl: metadataUrlOf(resource) })

  app.addHook('onRequest', async (request) => {
    // Read once: Fastify builds the object on each read.
    const route = request.routeOptions
    const url = route.url
    // An unknown route answers 404 whoever asks; a CORS preflight carries no credentials; a
    // route may declare itself public (`/metrics` unless `metrics.protect`).
    if (url === undefined || request.method === 'OPTIONS' || route.config.public === true) return
    const protection = protectionOf(url)
    if (protection === null) return
    const resource = originOf(request) + protection.path

    // The MCP authorization spec: access tokens MUST NOT be in the query string.
    const query = request.query as Record<string, unknown> | undefined
    if (query?.access_token !== undefined) {
      throw new InvalidAuthRequestError('send the access token in the Authorization header, never in the URL', challengeOf(protection, resource, { error: 'invalid_request', description: 'Access tokens are not accepted in the query string' }))
    }
    const authorization = request.headers.authorization
    const bearer = authorization === undefined ? undefined : /^Bearer +([^\s,]+) *$/i.exec(authorization)?.[1]
    const apiKey = request.headers['x-api-key']
    if (bearer !== undefined && apiKey !== undefined) {
      throw new InvalidAuthRequestError('send one credential, not both Authorization and X-API-Key', challengeOf(protection, resource, { error: 'invalid_request', description: 'More than one credential' }))
    }
    let identity: AuthInfo | undefined
    if (typeof apiKey === 'string') {
      identity = apiKeys.verify(apiKey)
      if (identity === undefined) throw new UnauthenticatedError('the API key is not valid', challengeOf(protection, resource, { error: 'invalid_token', description: 'The API key is not valid' }))
    } else if (bearer !== undefined) {
      // A bearer credential is one of the API keys, or else a JWT access token.
      identity = apiKeys.verify(bearer)
      if (identity === undefined) {
        if (jwt === undefined || !isCompactJws(bearer)) throw new UnauthenticatedError('the bearer token is not valid', challengeOf(protection, resource, { error: 'invalid_token', description: 'The token is not valid' }))
        try {
          // A token verified before answers at once, without a promise to wait for.
          const verified = jwt.verify(bearer, resource)
          identity = verified instanceof Promise ? await verified : verified
        } catch (err) {
          if (!(err instanceof TokenRefused)) throw err
          throw new UnauthenticatedError(err.message.charAt(0).toLowerCase() + err.message.slice(1), challengeOf(protection, resource, { error: 'invalid_token', description: err.message }))
        }
      }
    } else {
      // RFC 6750 §3.1: a request without credentials gets a challenge with no error code.
      throw new UnauthenticatedError('send an access token (Authorization: Bearer) or an API key (X-API-Key)', challengeOf(protection, resource))
    }
    const scopes = protection.server?.scopes
    if (scopes !== undefined && !scopes.every(scope => identity.scopes.includes(scope))) {
      throw new InsufficientScopeError(scopes.join(' '), challengeOf(protection, resource, { error: 'insufficient_scope', description: `This server needs the scopes ${scopes.join(' ')}` }))
    }
    request.identity = identity
  })

  // `/mcp` serves every server's tools, and refusing it whole to a caller who lacks one
  // member's scopes would be too coarse: there, the members whose scopes the caller lacks
  // are hidden, through the call pipeline's one decision for listing and calling. Added only
  // when some mounted server requires scopes (seen as its routes are added), so the pipeline
  // stays empty, and free, otherwise.
  let scopeFilter = false
  app.addHook('onRoute', (route) => {
    if (scopeFilter || !route.url.endsWith('/mcp')) return
    const server = registry.servers().find(candidate => route.url === `${candidate.prefix}/mcp`)
    if (server?.scopes === undefined || server.scopes.length === 0) return
    scopeFilter = true
    app.callPipeline.add({
      name: 'gateway-auth-scopes',
      allows: call => {
        const needed = registry.get(call.server)?.scopes ?? []
        return needed.every(scope => call.identity?.scopes.includes(scope) === true)
      }
    })
  })

  // RFC 9728 metadata of each protected resource, at the well-known path ahead of the
  // resource's own (`/.well-known/oauth-protected-resource/math/mcp`), and the root form,
  // which describes the gateway's origin as one resource for clients that look only there.
  // Tokens minted for the origin are not accepted anywhere unless `jwt.audience` lists it.
  const everyScope = (): string[] => [...new Set(registry.servers().flatMap(server => server.scopes ?? []))]
  const metadataRoute = { schema: { hide: true } }
  app.get(WELL_KNOWN, metadataRoute, async (request) => {
    return resourceMetadata(originOf(request), settings.authorizationServers, everyScope())
  })
  app.get(`${WELL_KNOWN}/*`, metadataRoute, async (request) => {
    const path = `/${(request.params as { '*': string })['*']}`
    const server = registry.servers().find(candidate => path === `${candidate.prefix}/mcp`)
    if (server !== undefined) return resourceMetadata(originOf(request) + path, settings.authorizationServers, server.scopes ?? [])
    if (path === GATEWAY_RESOURCE) return resourceMetadata(originOf(request) + path, settings.authorizationServers, everyScope())
    throw new RouteNotFoundError(request.method, request.url.split('?')[0])
  })

  // Identity headers (never a credential) for HTTP upstreams, once every server is mounted.
  const forward = settings.forwardIdentity
  if (Object.keys(forward).length > 0) {
    app.addHook('onReady', async () => {
      for (const { connection } of registry.servers()) {
        if (connection instanceof UpstreamConnection) connection.forwardIdentity(forward)
      }
    })
  }
  app.log.debug({ apiKeys: apiKeys.size, jwt: settings.jwt?.issuer }, 'authentication required on every mcp and tool route')
}

/** Whether a bearer credential has a compact JWS's three dot-separated parts (and so may be a JWT). */
function isCompactJws (token: string): boolean {
  const first = token.indexOf('.')
  const second = first === -1 ? -1 : token.indexOf('.', first + 1)
  return second !== -1 && token.indexOf('.', second + 1) === -1
}

export default fp(auth, { name: 'gateway-auth', fastify: '5.x', dependencies: ['gateway-core'] })
