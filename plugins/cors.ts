import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import cors, { type FastifyCorsOptions } from '@fastify/cors'
import { InvalidOptionsError } from '../src/errors.js'

export interface GatewayCorsOptions {
  /** Browser origins allowed (`https://app.example.com`), `*` for any. No default: the gateway registers this plugin only when `gateway.cors` is configured. */
  origins: string[]
}

/**
 * Request headers a browser MCP or REST client sends: the credentials (a bearer token or an
 * API key), the JSON body's type, and the Streamable HTTP headers of both protocol eras.
 */
export const CORS_ALLOWED_HEADERS = ['Authorization', 'Content-Type', 'Mcp-Session-Id', 'Mcp-Protocol-Version', 'Mcp-Method', 'Mcp-Name', 'Last-Event-ID', 'X-API-Key']

/**
 * Response headers a browser script may read besides the CORS-safelisted ones: the session id
 * a 2025-era client must send back, the authentication challenge (which names the protected
 * resource metadata, so a client can find where to get a token), and when to retry after a
 * 429 or 503, with the limit that refused the call.
 */
export const CORS_EXPOSED_HEADERS = ['Mcp-Session-Id', 'WWW-Authenticate', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset']

export const CORS_METHODS = ['GET', 'POST', 'DELETE', 'OPTIONS']

/** How long a browser may cache a preflight, in seconds (Chromium caps it at 2 hours). */
export const CORS_MAX_AGE_SEC = 600

/**
 * A 2026-07-28 `tools/call` may carry one `Mcp-Param-<name>` header per argument its tool
 * marks, and a preflight cannot allow header names by pattern (`*` would not cover
 * `Authorization`). So a preflight's requested `Mcp-Param-*` names are allowed one by one, as
 * the browser asks for them; only names that are valid header tokens, so nothing the client
 * sends can break the answer.
 */
const PARAM_HEADER = /^mcp-param-[!#$%&'*+.^_`|~0-9a-z-]+$/

/** A config origin as browsers send it: lower-case scheme and host, no default port. */
export function normalizeOrigin (origin: string): string {
  return origin === '*' ? origin : new URL(origin).origin
}

/**
 * CORS for browser clients, with `@fastify/cors`: the configured origins get the CORS headers,
 * and a preflight (`OPTIONS`) is answered in the `onRequest` hook, so before authentication
 * (a preflight carries no credentials) and before any MCP route hijacks its reply for SSE
 * (src/http/sse.ts copies the headers set by then onto the stream). Any other origin gets no
 * CORS header at all (its preflight is a 404), and on MCP and tool routes the Origin check
 * (plugins/mcp-server.ts), which allows these same origins, refuses it with 403.
 *
 * No credentials mode (`Access-Control-Allow-Credentials`): the gateway reads no cookies; a
 * browser sends its token or API key as a header, which the preflight allows.
 */
async function gatewayCors (app: FastifyInstance, options: GatewayCorsOptions): Promise<void> {
  let origins: Set<string>
  try {
    origins = new Set(options.origins.map(normalizeOrigin))
  } catch {
    throw new InvalidOptionsError(`cors.origins must be origins (scheme://host[:port]) or *, got ${JSON.stringify(options.origins)}`)
  }
  const any = origins.has('*')
  const base: FastifyCorsOptions = {
    methods: CORS_METHODS,
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: CORS_MAX_AGE_SEC,
    // An OPTIONS without `Access-Control-Request-Method` is answered as a preflight rather
    // than with @fastify/cors' plain-text 400, which is no answer of the catalogue.
    strictPreflight: false
  }
  const refused: FastifyCorsOptions = { ...base, origin: false }
  await app.register(cors, {
    hook: 'onRequest',
    delegator: (request: FastifyRequest, callback) => {
      const origin = request.headers.origin
      // `false` turns CORS off for this request: no header, and a preflight falls through to
      // the 404 handler. A request without Origin is not a browser's cross-origin one.
      if (origin === undefined || !(any || origins.has(origin))) {
        callback(null, refused)
        return
      }
      callback(null, { ...base, origin: any ? '*' : origin, allowedHeaders: allowedHeaders(request) })
    }
  })
}

/** The fixed headers, plus the `Mcp-Param-*` ones a preflight asks for. */
function allowedHeaders (request: FastifyRequest): string[] {
  const requested = request.raw.method === 'OPTIONS' ? request.headers['access-control-request-headers'] : undefined
  if (requested === undefined) return CORS_ALLOWED_HEADERS
  const params = requested.split(',').map(name => name.trim().toLowerCase()).filter(name => PARAM_HEADER.test(name))
  return params.length === 0 ? CORS_ALLOWED_HEADERS : [...CORS_ALLOWED_HEADERS, ...params]
}

export default fp(gatewayCors, { name: 'gateway-cors', fastify: '5.x' })
