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
