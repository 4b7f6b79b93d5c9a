import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import type { FastifyRouteSchemaDef, FastifySchemaValidationError } from 'fastify/types/schema.js'

// ajv-formats is CommonJS; under nodenext its default export arrives as the module object.
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020

type JsonSchema = Record<string, unknown>

/**
 * One Ajv for every tool route. Tool schemas are JSON Schema 2020-12 (what the SDK emits
 * and the MCP spec names as the default dialect), which Fastify's default draft-07 Ajv does
 * not compile. No type coercion: a REST body is JSON, and `"5"` is not the number 5.
 */
const ajv = new Ajv2020({ strict: false, allErrors: false, coerceTypes: false, useDefaults: true, validateSchema: false })
addFormats(ajv)

/** The schema the REST route validates with, kept apart from the one it documents. */
const originals = new WeakMap<object, JsonSchema>()

const permissive = ajv.compile({ type: 'object' })

/**
 * Route-level validator compiler for tool routes. A schema Ajv cannot compile (an upstream's
 * exotic `$ref`, say) falls back to "any object", so one bad tool never fails the boot; the
 * server behind it still validates its own arguments.
 */
export function toolValidatorCompiler ({ schema }: FastifyRouteSchemaDef<JsonSchema>): (data: unknown) => boolean | { error: Error } {
  let validate: ValidateFunction
  try {
    validate = ajv.compile(withoutDialect(originals.get(schema) ?? schema))
  } catch {
    validate = permissive
  }
  return (data: unknown) => {
    if (validate(data)) return true
    const error = new Error('invalid arguments') as Error & { validation: FastifySchemaValidationError[] }
    error.validation = (validate.errors ?? []) as FastifySchemaValidationError[]
    return { error }
  }
}

/** Tool arguments must be an object; a tool declaring no schema takes any object. */
export function validationSchema (inputSchema: JsonSchema | undefined): JsonSchema {
  return inputSchema ?? { type: 'object' }
}

/**
 * The body schema as it goes into the OpenAPI document. Local `#/$defs/...` references
 * would resolve against the document root once the schema is embedded in an operation, so
 * each definition moves to `components.schemas` under a name unique to the tool, and its
 * references follow; `collectComponents` hands those definitions to the document. The
 * route still validates with the untouched original.
 */
export function documentedSchema (schema: JsonSchema, componentPrefix: string, components: Map<string, JsonSchema>): JsonSchema {
  const defs = schema.$defs as Record<string, JsonSchema> | undefined
  const rename = (name: string): string => `${componentPrefix}.${name}`
  const rewrite = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(rewrite)
    if (node === null || typeof node !== 'object') return node
    const out: JsonSchema = {}
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string' && value.startsWith('#/$defs/')) {
        out.$ref = `#/components/schemas/${rename(decodeURIComponent(value.slice('#/$defs/'.length)))}`
      } else if (key !== '$schema' && key !== '$defs') {
        out[key] = rewrite(value)
      }
    }
    return out
  }
  for (const [name, def] of Object.entries(defs ?? {})) components.set(rename(name), rewrite(def) as JsonSchema)
  const documented = rewrite(schema) as JsonSchema
  originals.set(documented, schema)
  return documented
}

/** Ajv2020 rejects a `$schema` naming another dialect; the tool's dialect is 2020-12 by spec. */
function withoutDialect (schema: JsonSchema): JsonSchema {
  if (!('$schema' in schema)) return schema
  const { $schema: _ignored, ...rest } = schema
  return rest
}

/** Nesting followed at most when making an example: enough for real schemas, finite for recursive ones. */
const EXAMPLE_DEPTH = 8

/** Plausible strings per `format`, valid for Ajv's formats. */
const FORMAT_EXAMPLES: Record<string, string> = {
  'date-time': '2025-06-18T12:00:00Z',
  date: '2025-06-18',
  time: '12:00:00Z',
  duration: 'P1D',
  email: 'user@example.com',
  'idn-email': 'user@example.com',
  hostname: 'example.com',
  'idn-hostname': 'example.com',
  ipv4: '192.0.2.1',
  ipv6: '2001:db8::1',
  uri: 'https://example.com/',
  'uri-reference': 'https://example.com/',
  iri: 'https://example.com/',
  'iri-reference': 'https://example.com/',
  url: 'https://example.com/',
  uuid: '3fa85f64-5717-4562-b3fc-2c963f66afa6',
  regex: '^.*$',
  'json-pointer': '/a'
}

/**
 * A value that fits a tool's JSON Schema, for the OpenAPI document's examples: what the
 * schema offers itself first (`examples`, `const`, `default`, `enum`), then a plausible value
 * per type within its bounds. Every declared property is filled in (the example shows the
 * whole shape) and an open map is `{}`, never Swagger UI's `additionalProp1`. `undefined`
 * where nothing fits (an unresolvable `$ref`, `not`, too deep).
 */
export function exampleOf (schema: unknown, root: unknown = schema, depth = 0): unknown {
  if (schema === true || schema === undefined) return {}
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema) || depth > EXAMPLE_DEPTH) return undefined
  const node = schema as JsonSchema
  if (Array.isArray(node.examples) && node.examples.length > 0) return node.examples[0]
  if ('example' in node) return node.example
  if ('const' in node) return node.const
  if ('default' in node) return node.default
  if (Array.isArray(node.enum) && node.enum.length > 0) return node.enum[0]
  if (typeof node.$ref === 'string') return exampleOf(resolveLocal(node.$ref, root), root, depth + 1)
  if (Array.isArray(node.allOf)) {
    const parts = node.allOf.map(part => exampleOf(part, root, depth + 1))
    return parts.every(part => part !== null && typeof part === 'object' && !Array.isArray(part))
      ? Object.assign({}, ...parts as object[])
      : parts.find(part => part !== undefined)
  }
  for (const key of ['anyOf', 'oneOf'] as const) {
    const options = node[key]
    if (!Array.isArray(options)) continue
    const chosen = options.find(option => (option as JsonSchema | undefined)?.type !== 'null') ?? options[0]
    return exampleOf(chosen, root, depth + 1)
  }
  const types = Array.isArray(node.type) ? node.type as string[] : typeof node.type === 'string' ? [node.type] : []
  const type = types.find(candidate => candidate !== 'null') ?? types[0] ??
    (node.properties !== undefined ? 'object' : node.items !== undefined || node.prefixItems !== undefined ? 'array' : undefined)
  switch (type) {
    case 'object': {
      const out: Record<string, unknown> = {}
      for (const [name, property] of Object.entries((node.properties ?? {}) as Record<string, unknown>)) {
        const value = exampleOf(property, root, depth + 1)
        if (value !== undefined) out[name] = value
      }
      return out
    }
    case 'array': {
      if (Array.isArray(node.prefixItems)) return node.prefixItems.map(item => exampleOf(item, root, depth + 1))
      const item = exampleOf(node.items, root, depth + 1)
      if (item === undefined) return []
      return Array.from({ length: Math.min(Math.max(1, Number(node.minItems ?? 1)), 3) }, () => item)
    }
    case 'string': {
      const formatted = typeof node.format === 'string' ? FORMAT_EXAMPLES[node.format] : undefined
      if (formatted !== undefined) return formatted
      const min = typeof node.minLength === 'number' ? node.minLength : 0
      const max = typeof node.maxLength === 'number' ? node.maxLength : Infinity
      return 'string'.padEnd(min, 'x').slice(0, max)
    }
    case 'integer':
    case 'number': {
      const step = type === 'integer' ? 1 : 0.5
      let value = typeof node.minimum === 'number'
        ? node.minimum
        : typeof node.exclusiveMinimum === 'number' ? node.exclusiveMinimum + step : 0
      if (typeof node.maximum === 'number') value = Math.min(value, node.maximum)
      if (typeof node.exclusiveMaximum === 'number' && value >= node.exclusiveMaximum) value = node.exclusiveMaximum - step
      if (typeof node.multipleOf === 'number' && node.multipleOf > 0) value = Math.ceil(value / node.multipleOf) * node.multipleOf
      return type === 'integer' ? Math.ceil(value) : value
    }
    case 'boolean': return true
    case 'null': return null
    default: return undefined
  }
}

/** A local reference (`#`, `#/$defs/X`, `#/definitions/X`, any JSON pointer) in the tool's own schema. */
function resolveLocal (ref: string, root: unknown): unknown {
  if (!ref.startsWith('#')) return undefined
  let node = root
  for (const segment of ref.slice(1).split('/').filter(Boolean)) {
    if (node === null || typeof node !== 'object') return undefined
    node = (node as Record<string, unknown>)[decodeURIComponent(segment).replaceAll('~1', '/').replaceAll('~0', '~')]
  }
  return node
}
