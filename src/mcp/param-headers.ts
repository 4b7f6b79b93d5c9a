// The `Mcp-Param-*` header check of protocol revision 2026-07-28 (SEP-2243): a tool's input
// schema marks primitive properties with `"x-mcp-header": "<Name>"`, and a `tools/call` of that
// tool must carry `Mcp-Param-<Name>` with the argument's value. The SDK performs this check only
// for its own `McpServer` and does not export it; this is a faithful copy of its
// `scanXMcpHeaderDeclarations`, `validateMcpParamHeaders` and helpers
// (@modelcontextprotocol/server, core-internal/src/shared/mcpParamHeaders.ts), reading Node's
// lower-cased header object instead of a WHATWG `Headers`.

import { JsonRpcCode } from '../errors.js'

/** JSON-RPC error code of a request whose headers and body disagree (`HeaderMismatch`). */
export const HEADER_MISMATCH = JsonRpcCode.HeaderMismatch

/** One `x-mcp-header` parameter of a tool: header name, property path, JSON Schema type. */
export interface ParamHeader {
  /** The declared name, as spelled in the schema; the header is `Mcp-Param-<header>`. */
  header: string
  /** Property names from the root of `arguments` down to the parameter. */
  path: string[]
  /** The property's JSON Schema `type`: `string`, `integer`, `boolean` or `number`. */
  type: string | undefined
}

/** The disagreement between a request's `Mcp-Param-*` headers and its arguments. */
export interface ParamHeaderMismatch {
  message: string
  data: { mismatch: { header: string, body: string } }
}

const PREFIX = 'Mcp-Param-'
const KEY = 'x-mcp-header'

/** RFC 9110 `token`: no empty name, spaces, control characters or delimiters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * The types a declaring property may have. The spec admits `string`, `integer` and `boolean`
 * only; the SDK still collects and checks `number` declarations (see {@link paramHeaders}).
 */
const CHECKED_TYPES = new Set(['string', 'integer', 'boolean', 'number'])

/**
 * Keywords whose subschemas are not reachable through a chain of `properties`: a declaration
 * under any of them makes the whole schema invalid.
 */
const UNREACHABLE_KEYWORDS = [
  'items', 'prefixItems', 'contains', 'additionalProperties', 'unevaluatedProperties',
  'unevaluatedItems', 'propertyNames', 'patternProperties', 'dependentSchemas',
  'oneOf', 'anyOf', 'allOf', 'not', 'if', 'then', 'else', '$defs', 'definitions'
]

/** Of those, the ones whose value maps names to subschemas. */
const NAMED_KEYWORDS = new Set(['patternProperties', 'dependentSchemas', '$defs', 'definitions'])

const SENTINEL_PREFIX = '=?base64?'
const SENTINEL_SUFFIX = '?='
const CANONICAL_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const CANONICAL_DECIMAL = /^-?\d+(\.\d+)?$/
/** A header value that needs no Base64: visible ASCII, inner spaces only. */
const PLAIN_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/

/** What {@link scanParamHeaders} found in a tool's input schema. */
export interface ParamHeaderScan {
  /** The declarations: all of them when the schema is valid, or when `number` types are its only fault; else []. */
  declared: ParamHeader[]
  /** Why the schema's declarations are invalid by the spec (the first fault found); undefined when they are valid. */
  fault: string | undefined
}

/**
 * The declarations of a tool's input schema, and whether they are valid.
 *
 * Declarations are found on properties reached through `properties` at any depth. Invalid,
 * as in the SDK's `scanXMcpHeaderDeclarations`: a declaration at the root or under `items`,
 * `additionalProperties`, `oneOf`/`anyOf`/`allOf`/`not`, `if`/`then`/`else`, `$defs` and the
 * like; a name that is empty, not a string or not an RFC 9110 token; two names equal but for
 * case; a property whose type is not `string`, `integer` or `boolean`.
 *
 * A tool with a fault is one a conforming client drops (see {@link paramHeaderFault}); the
 * declarations are kept only when the fault is `number` types alone, which the SDK's server
 * still checks (see {@link paramHeaders}).
 */
export function scanParamHeaders (inputSchema: unknown): ParamHeaderScan {
  const declared: ParamHeader[] = []
  const seen = new Set<string>()
  let numberFault: string | undefined

  // The first fault other than a `number` type, or undefined.
  const visit = (node: unknown, path: string[], reachable: boolean): string | undefined => {
    if (node === null || typeof node !== 'object') return undefined
    const schema = node as Record<string, unknown>
    if (KEY in schema) {
      if (!reachable || path.length === 0) return `${pathName(path)}: ${KEY} is only permitted on properties reached through 'properties' alone`
      const header = schema[KEY]
      if (typeof header !== 'string' || !TOKEN.test(header)) return `${pathName(path)}: ${KEY} ${JSON.stringify(header)} is not a non-empty RFC 9110 token`
      const type = typeof schema.type === 'string' ? schema.type : undefined
      if (type === undefined || !CHECKED_TYPES.has(type)) return `${pathName(path)}: ${KEY} is only permitted on string, integer and boolean properties; got ${type ?? '<none>'}`
      if (type === 'number') numberFault ??= `${pathName(path)}: ${KEY} is only permitted on string, integer and boolean properties; got number`
      if (seen.has(header.toLowerCase())) return `${KEY} '${header}' is declared twice (names are compared without case)`
      seen.add(header.toLowerCase())
      declared.push({ header, path, type })
    }
    const properties = schema.properties
    if (properties !== null && typeof properties === 'object') {
      for (const [key, child] of Object.entries(properties)) {
        const fault = visit(child, [...path, key], reachable)
        if (fault !== undefined) return fault
      }
    }
    for (const keyword of UNREACHABLE_KEYWORDS) {
      const sub = schema[keyword]
      if (sub === undefined) continue
      const branches = Array.isArray(sub)
        ? sub
        : sub !== null && typeof sub === 'object' && NAMED_KEYWORDS.has(keyword) ? Object.values(sub) : [sub]
      for (const branch of branches) {
        const fault = visit(branch, [...path, `<${keyword}>`], false)
        if (fault !== undefined) return fault
      }
    }
    return undefined
  }

  const fault = visit(inputSchema, [], true)
  if (fault !== undefined) return { declared: [], fault }
  return { declared, fault: numberFault }
}

/**
 * The declarations of a tool's input schema as the SDK's server checks them; [] when none.
 *
 * As in the SDK, a schema with an invalid declaration yields [] (the SDK's server then checks
 * no header at all, while conforming clients drop the tool), with one exception, also the
 * SDK's: when the only fault is `number`-typed declarations, the tool is invalid by the spec
 * but its declarations are still returned, `number` ones included, and checked.
 */
export function paramHeaders (inputSchema: unknown): ParamHeader[] {
  return scanParamHeaders(inputSchema).declared
}

const faultByTool = new WeakMap<object, string | null>()

/**
 * Why a tool's `x-mcp-header` declarations are invalid, or undefined when they are valid (or
 * it has none). A client of a 2026-07-28 Streamable HTTP server MUST exclude such a tool from
 * its lists (SEP-2243): it could not send the headers the server checks. Read once per tool.
 */
export function paramHeaderFault (tool: { inputSchema: unknown }): string | undefined {
  let fault = faultByTool.get(tool)
  if (fault === undefined) {
    fault = scanParamHeaders(tool.inputSchema).fault ?? null
    faultByTool.set(tool, fault)
  }
  return fault ?? undefined
}

const declaredByTool = new WeakMap<object, ParamHeader[]>()

/** {@link paramHeaders} of a tool, read from its schema once per tool object. */
export function toolParamHeaders (tool: { inputSchema: unknown }): ParamHeader[] {
  let declared = declaredByTool.get(tool)
  if (declared === undefined) {
    declared = paramHeaders(tool.inputSchema)
    declaredByTool.set(tool, declared)
  }
  return declared
}

/**
 * undefined when the headers agree with the arguments, else the mismatch, shaped like the
 * SDK's -32020 rejection (to be sent with HTTP 400 and code {@link HEADER_MISMATCH}).
 *
 * For each declaration whose argument is present and not null, `Mcp-Param-<header>` must be
 * there and equal the argument: strings as they are, booleans as `true`/`false`, numbers as
 * decimals compared numerically for `integer` and `number` types (`42.0` matches 42). A value
 * `=?base64?…?=` is decoded first; an invalid one is rejected. Arguments that have no header
 * form (objects, arrays, non-finite numbers, integers past 2^53) are not checked, nor are
 * headers sent for absent arguments. `headers` is Node's object with lower-cased names.
 */
export function checkParamHeaders (
  declared: ParamHeader[],
  args: unknown,
  headers: Record<string, string | string[] | undefined>
): ParamHeaderMismatch | undefined {
  for (const { header, path, type } of declared) {
    const name = PREFIX + header
    const body = valueAt(args, path)
    if (body === undefined || body === null) continue
    const bodyString = primitiveToString(body)
    if (bodyString === undefined) continue
    const carried = `${pathName(path)}=${JSON.stringify(body)}`
    const value = headers[name.toLowerCase()]
    if (value === undefined) {
      return mismatch(name, `the body carries ${carried} but the ${name} header is absent`)
    }
    // A repeated header is a mismatch: one argument has one value. (Node joins most repeated
    // headers with ', ' itself, which is what the SDK's `Headers.get` sees, and that string
    // is compared like any other.)
    if (Array.isArray(value)) {
      return mismatch(name, `the ${name} header is repeated (${JSON.stringify(value)}) but the body carries ${carried}`)
    }
    const decoded = decode(value)
    if (decoded === undefined) {
      return mismatch(name, `the ${name} header carries an invalid Base64 sentinel value`)
    }
    const equal = (type === 'integer' || type === 'number') && CANONICAL_DECIMAL.test(decoded) && typeof body === 'number'
      ? Number(decoded) === body
      : decoded === bodyString
    if (!equal) {
      return mismatch(name, `the ${name} header decodes to ${JSON.stringify(decoded)} but the body carries ${carried}`)
    }
  }
  return undefined
}

/**
 * The `Mcp-Param-*` headers a `tools/call` with `args` carries, as a client sends them (the
 * gateway is one to an HTTP upstream). A value goes as it is when it is visible ASCII with no
 * space at either end; otherwise, or when it looks like a sentinel itself, Base64-wrapped.
 */
export function paramHeaderValues (declared: ParamHeader[], args: unknown): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const { header, path } of declared) {
    const value = primitiveToString(valueAt(args, path))
    if (value === undefined) continue
    headers[PREFIX + header] = PLAIN_VALUE.test(value) && !value.startsWith(SENTINEL_PREFIX)
      ? value
      : `${SENTINEL_PREFIX}${Buffer.from(value, 'utf8').toString('base64')}${SENTINEL_SUFFIX}`
  }
  return headers
}


/** The SDK's `-32020` rejection: `data.mismatch` names the header and what disagreed. */
function mismatch (header: string, body: string): ParamHeaderMismatch {
  return {
    message: `Bad Request: the request headers and body disagree: ${body}`,
    data: { mismatch: { header, body } }
  }
}

/** What a header carries for `value`; undefined for values that have no header form. */
function primitiveToString (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return undefined
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) return undefined
    return String(value)
  }
  return undefined
}

/** A header value with its Base64 sentinel unwrapped; undefined when the payload is invalid. */
function decode (value: string): string | undefined {
  if (!(value.startsWith(SENTINEL_PREFIX) && value.endsWith(SENTINEL_SUFFIX))) return value
  const base64 = value.slice(SENTINEL_PREFIX.length, value.length - SENTINEL_SUFFIX.length)
  if (!CANONICAL_BASE64.test(base64)) return undefined
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(base64, 'base64'))
  } catch {
    return undefined
  }
}

function valueAt (root: unknown, path: string[]): unknown {
  let node = root
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined
    node = (node as Record<string, unknown>)[key]
  }
  return node
}

function pathName (path: string[]): string {
  return path.length === 0 ? '<root>' : path.join('.')
}
