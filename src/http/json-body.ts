import { isUtf8 } from 'node:buffer'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { InvalidUtf8Error, JsonTooDeepError } from '../errors.js'

/**
 * Deepest nesting of arrays and objects a JSON body may have. A JSON-RPC message puts a
 * tool's arguments three levels down, which leaves them 61; no tool schema we know of comes
 * near that, while 10,000 levels (20 KB of `[`) overflow the stack of anything that recurses
 * over the parsed body (JSON.stringify, schema validation, the SDK's message conversion).
 */
export const DEFAULT_MAX_JSON_DEPTH = 64

export interface JsonBodyOptions {
  /** Deepest nesting allowed. Default `DEFAULT_MAX_JSON_DEPTH`. */
  maxDepth?: number
  /**
   * An empty body is `undefined` rather than a 400. Default `false`. The MCP routes set it:
   * a GET or DELETE may carry `content-type: application/json` and no body, and an empty
   * POST is left to the SDK, which answers it with a JSON-RPC parse error.
   */
  emptyIsUndefined?: boolean
}

type Done = (err: Error | null, body?: unknown) => void
type StringParser = (request: FastifyRequest, body: string, done: Done) => void

const OPEN_BRACKET = 0x5b
const OPEN_BRACE = 0x7b
const CLOSE_BRACKET = 0x5d
const CLOSE_BRACE = 0x7d
const QUOTE = 0x22
const BACKSLASH = 0x5c

/**
 * Whether the JSON text nests deeper than `maxDepth`, by one linear pass over its bytes that
 * counts `[` and `{` outside strings; nothing recurses, so the check itself cannot overflow.
 * Scanning the UTF-8 bytes is exact: no byte of a multi-byte character is ASCII.
 */
export function nestsDeeperThan (bytes: Uint8Array, maxDepth: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]
    if (inString) {
      if (byte === BACKSLASH) i++
      else if (byte === QUOTE) inString = false
    } else if (byte === QUOTE) {
      inString = true
    } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > maxDepth) return true
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--
    }
  }
  return false
}

/**
 * The one `application/json` body parser of the gateway (root and MCP routes): the body is
 * read as bytes, refused if it is not UTF-8 (rather than read with U+FFFD in place of the bad
 * bytes) or nests too deep, and only then parsed by Fastify's own JSON parser, which keeps
 * its prototype-poisoning protection and its error codes (mapped by the error handler).
 */
export function jsonBodyParser (app: FastifyInstance, options: JsonBodyOptions = {}): (request: FastifyRequest, body: Buffer, done: Done) => void {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH
  const emptyIsUndefined = options.emptyIsUndefined ?? false
  // Fastify's parser is typed as callback-or-promise; the one it returns takes a callback.
  const parse = app.getDefaultJsonParser('error', 'error') as StringParser
  return (request, body, done) => {
    if (body.length === 0 && emptyIsUndefined) {
      done(null, undefined)
      return
    }
    // Node's `isUtf8` (simdutf) validates without decoding, several times faster than a
    // fatal TextDecoder on the small bodies of tool calls; the decode after it cannot lose bytes.
    if (!isUtf8(body)) {
      done(new InvalidUtf8Error())
      return
    }
    // Fewer bytes than the limit cannot nest deeper than it: most bodies skip the scan.
    if (body.length > maxDepth && nestsDeeperThan(body, maxDepth)) {
      done(new JsonTooDeepError(maxDepth))
      return
    }
    parse(request, body.toString('utf8'), done)
  }
}
