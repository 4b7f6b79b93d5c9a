// The security settings of the gateway, as the config file's `gateway` section and the
// gateway plugin's options give them: who may call (authentication), what (policy), how often
// (rate limits), from which browser origins (CORS), and over what (TLS). Types only: parsed
// in config.ts, enforced by plugins/auth.ts and the filters of src/pipeline.

/** An API key: its id names the caller; the key itself is kept only as its SHA-256. */
export interface ApiKey {
  id: string
  /** Lower-case hex SHA-256 of the key. */
  sha256: string
  /** Scopes the key grants, as a token's `scope` would. */
  scopes: string[]
}

/** JWT access tokens from one issuer, verified against its JWKS. */
export interface JwtOptions {
  /** The `iss` every token must carry, exactly. */
  issuer: string
  jwksUri: string
  /** Audiences accepted besides each endpoint's own resource URL. */
  audience: string[]
  /** Asymmetric algorithms accepted; never `none`, never an HS one. */
  algorithms: string[]
  /** Clock skew allowed on `exp` and `nbf`, in seconds. */
  clockToleranceSec: number
}

export interface AuthOptions {
  /** `none`: no authentication, on purpose (so the gateway may listen beyond loopback without it). */
  mode: 'required' | 'none'
  apiKeys: ApiKey[]
  jwt?: JwtOptions
  /** Whether `/docs`, `/redoc` and the OpenAPI document need credentials too. */
  protectDocs: boolean
  /** The authorization servers named in the protected resource metadata; default the JWT issuer. */
  authorizationServers: string[]
  /** Headers that carry the caller's identity (never a credential) to HTTP upstreams: header name → `id`, `sub` or a claim name. */
  forwardIdentity: Record<string, string>
}

/** Who a policy rule is for: every field given must fit. */
export interface PolicyMatch {
  apiKey?: string
  sub?: string
  scope?: string
  claim?: Record<string, string>
}

/** One rule: the first whose `match` fits the caller decides, with globs over `<server>/<name>`. */
export interface PolicyRule {
  match: PolicyMatch
  allow: string[]
  deny: string[]
}

export interface Limit {
  /** Calls allowed per window. */
  max: number
  /** The window, in ms. */
  timeWindow: number
}

export interface RateLimitOptions extends Limit {
  /** Per server, each with optional per-tool limits. */
  servers: Record<string, Partial<Limit> & { tools: Record<string, Partial<Limit>> }>
}

export interface CorsOptions {
  /** Browser origins allowed (`https://app.example.com`), `*` for any. */
  origins: string[]
}

export interface TlsOptions {
  /** Paths to PEM files. */
  cert: string
  key: string
}

export interface SecurityOptions {
  /** The gateway's public origin (`https://mcp.example.com`), for resource URLs behind a proxy; default the request's own. */
  publicUrl?: string
  auth?: AuthOptions
  policy?: PolicyRule[]
  rateLimit?: RateLimitOptions
  cors?: CorsOptions
  tls?: TlsOptions
}

/** The asymmetric JWT algorithms accepted when the config names none. */
export const DEFAULT_JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']
/** Clock skew allowed on a token's `exp` and `nbf`, in seconds. */
export const DEFAULT_CLOCK_TOLERANCE_SEC = 30
