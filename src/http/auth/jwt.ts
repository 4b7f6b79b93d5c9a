import { hash } from 'node:crypto'
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload } from 'jose'
import type { AuthInfo } from '@modelcontextprotocol/server'
import type { JwtOptions } from '../../security.js'

/** Most verified tokens remembered at once; past it the oldest is forgotten (and verified again if it comes back). */
export const MAX_CACHED_TOKENS = 10_000

/** Why a token was refused, in words fit for the client (`error_description`). */
export class TokenRefused extends Error {}

/**
 * JWT access tokens of one issuer, verified with `jose` against the issuer's JWKS, which
 * `createRemoteJWKSet` caches and fetches again when a token names a `kid` it does not hold
 * (at most once per 30 s, its cooldown, so unknown `kid`s cannot make the gateway hammer the
 * issuer). `algorithms` is pinned to the configured asymmetric list: `none` and the HS family
 * never verify, so a token "signed" with the issuer's public key as an HMAC secret is refused.
 *
 * The audience is checked per request, outside `jwtVerify`, because the same token is
 * verified once and then checked against whichever endpoint it is presented to: a verified
 * token's claims are remembered by the token's SHA-256 until its `exp` (at most
 * `MAX_CACHED_TOKENS` of them), so a client's calls do not verify a signature each time.
 */
export class JwtVerifier {
  #options: JwtOptions
  #jwks: ReturnType<typeof createRemoteJWKSet>
  #audience: Set<string>
  /** Verified tokens by the token's SHA-256, in order of insertion (oldest first). */
  #verified = new Map<string, VerifiedToken>()

  constructor (options: JwtOptions) {
    this.#options = options
    this.#jwks = createRemoteJWKSet(new URL(options.jwksUri))
    this.#audience = new Set(options.audience.map(withoutTrailingSlash))
  }

  /**
   * The caller a token names, when it is valid and meant for `resource` (its `aud` holds the
   * endpoint's resource URL, or one of the configured audiences). Throws `TokenRefused`, or
   * rejects with it. A token verified before is answered at once, not through a promise: most
   * requests carry one, and this runs before each.
   */
  verify (token: string, resource: string): AuthInfo | Promise<AuthInfo> {
    const key = keyOf(token)
    const cached = this.#cached(key)
    if (cached !== undefined) return this.#meant(cached, resource)
    return this.#verifiedToken(token, key).then(verified => this.#meant(verified, resource))
  }

  /** The caller, when the token is meant for `resource`. The audience check is per endpoint; its answers are remembered with the token. */
  #meant (verified: VerifiedToken, resource: string): AuthInfo {
    let meant = verified.resources.get(resource)
    if (meant === undefined) {
      const wanted = withoutTrailingSlash(resource)
      meant = verified.audience.some(aud => aud === wanted || this.#audience.has(aud))
      // Bounded: the resource follows the request's Host when no publicUrl is set.
      if (verified.resources.size < 64) verified.resources.set(resource, meant)
    }
    if (!meant) throw new TokenRefused(`The token is not meant for this resource (${resource})`)
    return verified.identity
  }

  /** A token verified before and not expired since: every later request with it costs a hash and a lookup. */
  #cached (key: string): VerifiedToken | undefined {
    const cached = this.#verified.get(key)
    if (cached === undefined) return undefined
    if (cached.claims.exp * 1000 > Date.now()) return cached
    this.#verified.delete(key)
    return undefined
  }

  /** A token verified, its caller built once and remembered until its `exp`. */
  async #verifiedToken (token: string, key: string): Promise<VerifiedToken> {
    let payload: JWTPayload
    try {
      ({ payload } = await jwtVerify(token, this.#jwks, {
        issuer: this.#options.issuer,
        algorithms: this.#options.algorithms,
        clockTolerance: this.#options.clockToleranceSec,
        // A token without an expiry would be good for ever.
        requiredClaims: ['exp']
      }))
    } catch (err) {
      throw new TokenRefused(reasonOf(err))
    }
    const claims = payload as JWTPayload & { exp: number }
    const { scope, scp } = claims
    const verified: VerifiedToken = {
      claims,
      audience: (typeof claims.aud === 'string' ? [claims.aud] : claims.aud ?? []).map(withoutTrailingSlash),
      resources: new Map(),
      identity: {
        token,
        clientId: typeof claims.client_id === 'string' ? claims.client_id : claims.sub ?? '',
        scopes: typeof scope === 'string' ? scope.split(' ').filter(Boolean) : Array.isArray(scp) ? scp.filter(s => typeof s === 'string') : typeof scp === 'string' ? scp.split(' ').filter(Boolean) : [],
        expiresAt: claims.exp,
        extra: { kind: 'jwt', sub: claims.sub, claims }
      }
    }
    // Within the clock tolerance a token may verify after its exp: it is not remembered then.
    if (claims.exp * 1000 > Date.now()) {
      if (this.#verified.size >= MAX_CACHED_TOKENS) this.#verified.delete(this.#verified.keys().next().value as string)
      this.#verified.set(key, verified)
    }
    return verified
  }
}

/** What is remembered of a verified token. */
interface VerifiedToken {
  claims: JWTPayload & { exp: number }
  /** Its audiences, without trailing slashes. */
  audience: string[]
  /** Whether it is meant for each resource it was presented to. */
  resources: Map<string, boolean>
  identity: AuthInfo
}

function reasonOf (err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'The token has expired'
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'The token is not valid yet'
    if (err.claim === 'iss') return 'The token was not issued by the trusted issuer'
    return `The token's ${err.claim} claim is not valid`
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return 'The token is not signed with an accepted algorithm'
  if (err instanceof errors.JWKSNoMatchingKey) return 'The token is signed with a key the issuer does not publish'
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'The token\'s signature is not valid'
  return 'The token is not a valid access token'
}

/** What a verified token is remembered by: its SHA-256, so a lookup compares digests, never the token itself. */
function keyOf (token: string): string {
  return hash('sha256', token, 'base64url')
}

function withoutTrailingSlash (url: string): string {
  return url.length > 1 && url.endsWith('/') ? url.slice(0, -1) : url
}
