import type { GatewayConfig } from './config.js'

// What `fastify-mcp-gateway --print-config` shows: the config as the gateway will act on it
// (defaults applied, `${VAR}` filled in), safe to paste into an issue. Every value that could
// be a credential is replaced, keeping what helps a reader check the config: the names of
// headers and variables, a header's auth scheme, a URL's host and path, the query's keys.

/** What a secret is shown as. */
export const MASK = '***'

/** Names of fields, query parameters and command-line flags that hold a credential. */
const SECRET_NAME = /secret|passw(or)?d|pwd|token|credential|api[-_]?key|apikey|private[-_]?key|client[-_]?key|access[-_]?key|auth|signature|^sig$|^key$|^code$|session/i
/** A value that looks like a generated secret: long, unbroken, letters and digits mixed. */
const SECRET_LIKE = /^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9._~+/=-]{20,}$/
/** The auth schemes kept in front of a masked header value, so `Bearer ${TOKEN}` reads as `Bearer ***`. */
const SCHEME = /^(Bearer|Basic|Token|Digest|ApiKey)\s+/i

export type PrintableConfig = Omit<GatewayConfig, 'warnings'>

/** The config with every secret masked; the warnings are left out (the command prints them on stderr). */
export function printableConfig (config: GatewayConfig): PrintableConfig {
  const { warnings: _warnings, ...rest } = config
  return walk(rest, []) as PrintableConfig
}

/**
 * Masks by position where the position says it is a secret (a stdio entry's environment, a
 * remote entry's headers, an API key's hash), and by name or shape elsewhere, so a field
 * added to the config later is masked too when its name says what it holds.
 */
function walk (value: unknown, path: string[]): unknown {
  if (typeof value === 'string') return maskString(value)
  if (Array.isArray(value)) return path.at(-1) === 'args' ? maskArgs(value) : value.map((item, i) => walk(item, [...path, String(i)]))
  if (typeof value !== 'object' || value === null) return value
  const parent = path.at(-1)
  return Object.fromEntries(Object.entries(value).map(([key, item]) => {
    // An environment passed to a child holds its credentials; only the variables' names are shown.
    if (parent === 'env' && path[0] === 'servers') return [key, maskAll(item)]
    if (parent === 'headers') return [key, typeof item === 'string' ? maskHeader(item) : maskAll(item)]
    // The config keeps API keys only as SHA-256, but a hash of a short key can be guessed offline.
    if (key === 'sha256') return [key, maskAll(item)]
    // The secret that seals `requestState` (`gateway.redis`); the URL's password is masked as any URL's.
    if (key === 'requestStateKey') return [key, maskAll(item)]
    // A TLS key is a path to a file, not the key itself.
    if (parent === 'tls') return [key, item]
    // `policy[].match.apiKey` names a key's id, which is no secret.
    if (key === 'apiKey' && parent === 'match') return [key, item]
    if (SECRET_NAME.test(key) && typeof item === 'string') return [key, maskAll(item)]
    return [key, walk(item, [...path, key])]
  }))
}

function maskAll (value: unknown): unknown {
  if (typeof value === 'string') return value === '' ? '' : MASK
  return value
}

function maskHeader (value: string): string {
  if (value === '') return ''
  const scheme = SCHEME.exec(value)?.[0]
  return scheme === undefined ? MASK : `${scheme}${MASK}`
}

function maskString (value: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? maskUrl(value) : value
}

/** A URL's user, password and fragment, and the values of query parameters that look like secrets; any other URL as written. */
export function maskUrl (value: string): string {
  if (!URL.canParse(value)) return value
  const url = new URL(value)
  const params = [...url.searchParams]
  const secret = ([name, item]: [string, string]): boolean => SECRET_NAME.test(name) || SECRET_LIKE.test(item)
  if (url.username === '' && url.password === '' && url.hash === '' && !params.some(secret)) return value
  if (url.username !== '') url.username = MASK
  if (url.password !== '') url.password = MASK
  // Rebuilt by hand: URLSearchParams would percent-encode the mask.
  const query = params.map(([name, item]) => `${encodeURIComponent(name)}=${secret([name, item]) ? MASK : encodeURIComponent(item)}`)
  const hash = url.hash === '' ? '' : `#${MASK}`
  url.search = ''
  url.hash = ''
  return `${url.href}${query.length > 0 ? `?${query.join('&')}` : ''}${hash}`
}

/**
 * A child's arguments: `--token X`, `--api-key=X` and `TOKEN=X` lose their value, URLs their
 * credentials, and anything shaped like a generated key is masked. Paths, package names and
 * other flags stay, so the command line is still recognisable.
 */
function maskArgs (args: unknown[]): unknown[] {
  return args.map((arg, i) => {
    if (typeof arg !== 'string') return arg
    const previous = args[i - 1]
    if (typeof previous === 'string' && /^--?[A-Za-z]/.test(previous) && !previous.includes('=') && SECRET_NAME.test(previous)) return maskAll(arg)
    const assignment = /^(--?)?([A-Za-z0-9_.-]+)=(.*)$/s.exec(arg)
    if (assignment !== null && SECRET_NAME.test(assignment[2] as string)) return `${arg.slice(0, arg.length - (assignment[3] as string).length)}${maskAll(assignment[3])}`
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) return maskUrl(arg)
    return SECRET_LIKE.test(arg) && !arg.includes('/') ? MASK : arg
  })
}
