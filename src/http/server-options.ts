import { STATUS_CODES, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import type { ConnectionError, FastifyError, FastifyHttpOptions, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import {
  BadRequestError,
  HeadersTooLargeError,
  RequestTimeoutError,
  RouteNotFoundError,
  type GatewayError
} from '../errors.js'

/**
 * Longest time a client may take to send a whole request (headers and body), in ms. A client
 * that dribbles its body a byte at a time holds a connection (a file descriptor) for as long
 * as it likes without it; 30 s is far beyond what a 1 MiB body needs on any real link. It
 * does not bound the answer: a long tool call or an SSE stream runs once the request is in.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000

/** Longest time a client may take to send the request's headers, in ms (capped at the request timeout). */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000

/** Largest request head (request line and headers), in bytes: Node's own default, written down. */
export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024

/**
 * Most requests on one keep-alive connection; 0 is no limit. Default 0: the bound only makes
 * benign clients reconnect, and a connection's time is bounded by the timeouts instead.
 */
export const DEFAULT_MAX_REQUESTS_PER_SOCKET = 0

/**
 * Most connections open at once; the next one is closed on accept. Well under a usual
 * `ulimit -n` of several thousand, so a flood of idle sockets leaves file descriptors for the
 * stdio upstreams' pipes and the logs rather than failing every `accept()` and `spawn()`.
 */
export const DEFAULT_MAX_CONNECTIONS = 4096

/** How the gateway's HTTP server bounds what clients may hold; every field has a default above. */
export interface HttpLimits {
  /** See `DEFAULT_REQUEST_TIMEOUT_MS`. */
  requestTimeoutMs?: number
  /** See `DEFAULT_HEADERS_TIMEOUT_MS`. */
  headersTimeoutMs?: number
  /** See `DEFAULT_MAX_HEADER_SIZE`. */
  maxHeaderSize?: number
  /** See `DEFAULT_MAX_REQUESTS_PER_SOCKET`. */
  maxRequestsPerSocket?: number
  /** See `DEFAULT_MAX_CONNECTIONS`. */
  maxConnections?: number
}

/** The Fastify options the limits set; the caller adds its logger and the rest. */
export type GatewayServerOptions = FastifyHttpOptions<Server> & Required<Pick<FastifyHttpOptions<Server>, 'requestTimeout' | 'clientErrorHandler' | 'frameworkErrors'>>

/**
 * The Fastify server options of the gateway, for the command and the tests alike: timeouts
 * and size bounds on what a client sends, and answers in the error catalogue's JSON for what
 * Node and Fastify refuse before any route (malformed HTTP, bad URLs). There is no idle
 * timeout on a socket: it would cut an SSE stream or a tool call that takes its 60 s.
 * `maxConnections` is a property of the Node server, set by `limitConnections` once Fastify
 * has created it.
 */
export function serverOptions (limits: HttpLimits = {}): GatewayServerOptions {
  const requestTimeout = limits.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  const headersTimeout = Math.min(limits.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS, requestTimeout)
  const maxHeaderSize = limits.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE
  return {
    requestIdHeader: 'x-request-id',
    // While draining the gateway answers new requests itself (503 with the catalogue's body
    // and `Connection: close`; see plugins/core.ts), so Fastify's bare 503 is off.
    return503OnClosing: false,
    requestTimeout,
    maxRequestsPerSocket: limits.maxRequestsPerSocket ?? DEFAULT_MAX_REQUESTS_PER_SOCKET,
    http: {
      maxHeaderSize,
      headersTimeout,
      // Node enforces both timeouts only when it sweeps its connections, every 30 s by
      // default, which would let a slow client hold on for up to twice the timeout.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(headersTimeout / 4))),
      // Checked against headersTimeout when the server is created; Fastify sets it again after.
      requestTimeout
    },
    clientErrorHandler (this: FastifyInstance, err: ConnectionError, socket: Socket) {
      answerClientError(this, err, socket, { requestTimeout, maxHeaderSize })
    },
    frameworkErrors: answerFrameworkError
  }
}

/** Sets the limits Fastify has no option for on its Node server. */
export function limitConnections (server: Server, limits: HttpLimits = {}): void {
  server.maxConnections = limits.maxConnections ?? DEFAULT_MAX_CONNECTIONS
}

/** The JSON body of every error answer: `{ statusCode, code, error, message, details? }`. */
export function errorBody (error: GatewayError): Record<string, unknown> {
  const statusCode = error.statusCode ?? 500
  return {
    statusCode,
    code: error.code,
    error: STATUS_CODES[statusCode] ?? 'Error',
    message: error.message,
    ...(error.details !== undefined && { details: error.details })
  }
}

/**
 * What Node refuses before there is a request (malformed HTTP, headers over the limit, a
 * request not received in time), answered as the catalogue does rather than with Node's bare
 * status line. The connection is closed after: the stream may be out of step with HTTP.
 */
function answerClientError (app: FastifyInstance, err: ConnectionError, socket: Socket, limits: { requestTimeout: number, maxHeaderSize: number }): void {
  // A reset connection has nobody to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const error: GatewayError = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? new RequestTimeoutError(limits.requestTimeout)
    : err.code === 'HPE_HEADER_OVERFLOW'
      ? new HeadersTooLargeError(limits.maxHeaderSize)
      : new BadRequestError(`Malformed HTTP request: ${err.message}`)
  app.log.info({ code: error.code, message: error.message, reason: err.code }, 'client error')
  // A response already begun on this socket (an earlier request's, when the next one is
  // malformed) must not be corrupted by a second status line: as Node's own handler does.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (!socket.writable || inFlight?.headersSent === true) {
    socket.destroy()
    return
  }
  const body = JSON.stringify(errorBody(error))
  const statusCode = error.statusCode ?? 400
  // Destroyed once the answer is flushed, rather than ended: an HTTP server socket is half
  // open, so a slow client that never ends its side would keep it.
  socket.end(`HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode] ?? 'Error'}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' + body, () => socket.destroy())
}

/**
 * Fastify's refusals before routing: a URL that cannot be decoded (`/%zz`) is a route that
 * does not exist, and a path parameter over the length limit a bad request.
 */
function answerFrameworkError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const url = request.raw.url ?? ''
  const answer: GatewayError = error.code === 'FST_ERR_BAD_URL'
    ? new RouteNotFoundError(request.raw.method ?? 'GET', url.split('?')[0])
    : badRequest(error)
  request.log.info({ code: answer.code, message: answer.message }, 'request rejected')
  void reply.code(answer.statusCode ?? 400).type('application/json; charset=utf-8').send(errorBody(answer))
}

function badRequest (error: FastifyError): GatewayError {
  const refused = new BadRequestError(error.message)
  const statusCode = error.statusCode ?? 400
  refused.statusCode = statusCode >= 400 && statusCode < 500 ? statusCode : 400
  return refused
}

/**
 * Turns V8's allocation-site pretenuring off for this process. The command calls it before
 * it builds the gateway; the bench's gateway targets do as the command does. It is
 * process-wide, so the plugin never sets it: an application that embeds the gateway can run
 * `node --no-allocation-site-pretenuring`.
 *
 * Under load V8 sees that objects from some allocation sites outlive a young-generation
 * collection (the calls in flight when one runs) and from then on allocates every object of
 * those sites in the old generation: a call's timer, its arguments' parse, its result. A
 * gateway's objects almost all die with their request, so these die in the old generation,
 * which only a full mark-compact reclaims. Measured on the REST path at c=50 (`--trace-gc`):
 * ~600 KB promoted per scavenge and 1.3–1.6 ms pauses with it, ~3 KB and 0.6–0.8 ms without,
 * and ~7 % more requests per second. V8 reads the flag at each collection, so setting it at
 * run time takes effect; `setFlagsFromString` does nothing (and does not throw) where a
 * runtime no longer allows it, which leaves V8's default.
 */
export function tuneGarbageCollection (): void {
  setFlagsFromString('--no-allocation-site-pretenuring')
}
