import { Type } from '@sinclair/typebox'
import type { GatewayError } from '../errors.js'
import { errorBody } from '../http/server-options.js'

// The schemas of the REST answers, as Fastify serializes them and as the OpenAPI document
// shows them. Shared ones carry an `$id` (the core plugin adds them once) and appear under it
// in `components.schemas`; examples are real values, built from the tool, prompt or error
// they describe, so the docs never show `"code": "string"` or `additionalProp1`.

/** Every REST error body. `code` is stable: branch on it, not on `message`. */
export const ErrorBody = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status, repeated' }),
  code: Type.String({ description: 'Stable machine-readable code from the README\'s error table, e.g. GW_ERR_TOOL_NOT_FOUND' }),
  error: Type.String({ description: 'HTTP reason phrase' }),
  message: Type.String({ description: 'What was wrong, for people; a 5xx says nothing of the gateway\'s internals' }),
  details: Type.Optional(Type.Array(Type.Object({
    field: Type.String({ description: 'Dotted path of the bad field in the body; empty for the body itself' }),
    message: Type.String()
  }), { description: 'With `GW_ERR_INVALID_ARGUMENTS`: each bad field' }))
}, {
  $id: 'GatewayError',
  additionalProperties: false,
  description: 'The body of every error the gateway answers on REST routes and probes (MCP routes answer JSON-RPC errors instead, with the same `code` in `error.data.code`). A tool\'s own error result (422) is its `CallToolResult` plus `code`.'
})

export const ErrorRef = Type.Ref('GatewayError')

/** What a server's state is in `/ready`; `disabled` only for servers the config turns off. */
const ServerState = Type.Unsafe<'starting' | 'up' | 'down' | 'closed' | 'disabled'>({
  type: 'string',
  enum: ['starting', 'up', 'down', 'closed', 'disabled'],
  description: '`up` serves; `starting` and `down` answer 503 (a `down` upstream is retried); `closed` after shutdown; `disabled`: turned off in the config (`"disabled": true`), never mounted, never making the gateway unready'
})

export const ServerReadyBody = Type.Object({
  name: Type.String(),
  state: ServerState,
  required: Type.Optional(Type.Boolean({ description: 'The gateway is not ready while this server is down' })),
  tools: Type.Integer({ description: 'Number of tools offered now' }),
  error: Type.Optional(Type.String({ description: 'Why the server is down, in the gateway\'s words' })),
  retryAfter: Type.Optional(Type.Integer({ description: 'Seconds until the gateway next tries to bring it back' }))
}, { $id: 'ServerReadiness', description: 'One mounted (or disabled) server in `/ready`' })

export const ReadyBody = Type.Object({
  status: Type.Unsafe<'ready' | 'degraded' | 'unavailable' | 'draining'>({
    type: 'string',
    enum: ['ready', 'degraded', 'unavailable', 'draining'],
    description: '`ready`: every enabled server up; `degraded`: serving, some servers down (both 200); `unavailable`: a required server is down; `draining`: shutting down (both 503)'
  }),
  servers: Type.Array(Type.Ref('ServerReadiness'), { description: 'Every mounted server in the config\'s order, then the disabled ones' }),
  reload: Type.Optional(Type.Object({
    at: Type.String({ format: 'date-time' }),
    ok: Type.Boolean({ description: 'Whether the new config was applied; when not, the running one kept serving' }),
    error: Type.Optional(Type.String({ description: 'Why the new config was refused' })),
    added: Type.Optional(Type.Array(Type.String())),
    changed: Type.Optional(Type.Array(Type.String())),
    removed: Type.Optional(Type.Array(Type.String()))
  }, { description: 'The last config reload, once there was one' })),
  redis: Type.Optional(Type.Object({
    status: Type.Union([Type.Literal('up'), Type.Literal('down')], { description: '`down`: Redis is unreachable; the gateway still serves (`degraded`) and reconnects' })
  }, { description: 'The shared Redis (`gateway.redis`), when there is one' }))
}, { $id: 'Readiness' })

export const HealthBody = Type.Object({ status: Type.Literal('ok') })

/** A content block of a tool result or prompt message: text, image, audio, resource link or embedded resource. */
const ContentBlock = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string', enum: ['text', 'image', 'audio', 'resource_link', 'resource'] } },
  description: 'A content block (`text`, base64 `data` with `mimeType`, or a resource); see the MCP spec\'s ContentBlock'
}

/**
 * The tool's `CallToolResult`, with `structuredContent` described by its `outputSchema`.
 * On a 200 `isError` is never true: a tool's own error result is a 422.
 */
export function callToolResultSchema (structuredContent?: Record<string, unknown>, extra: Record<string, unknown> = {}, isError = false): Record<string, unknown> {
  return {
    type: 'object',
    required: ['content'],
    properties: {
      content: { type: 'array', items: ContentBlock },
      structuredContent: structuredContent ?? { type: 'object', description: 'Structured output, when the tool returns any' },
      isError: isError
        ? { type: 'boolean', const: true }
        : { type: 'boolean', const: false, description: 'Absent or false: a tool\'s error result is a 422' },
      ...extra
    }
  }
}

/** A list answer of the REST routes: `{ server, <key>: [...] }`, each item as the server gave it. */
export function listSchema (key: string, description: string, item: Record<string, unknown> = { type: 'object' }): Record<string, unknown> {
  return {
    description,
    type: 'object',
    required: ['server', key],
    properties: { server: { type: 'string' }, [key]: { type: 'array', items: item } }
  }
}

/** An item of `GET /tools` (the MCP `Tool`). */
export const ToolItem = {
  type: 'object',
  required: ['name', 'inputSchema'],
  properties: {
    name: { type: 'string' },
    title: { type: 'string' },
    description: { type: 'string' },
    inputSchema: { type: 'object', description: 'JSON Schema (2020-12) of the arguments: the body of `POST /tools/<name>`' },
    outputSchema: { type: 'object', description: 'JSON Schema of `structuredContent`, when the tool declares one' },
    annotations: { type: 'object' }
  }
}

/** An item of `GET /prompts` (the MCP `Prompt`). */
export const PromptItem = {
  type: 'object',
  required: ['name'],
  properties: {
    name: { type: 'string' },
    title: { type: 'string' },
    description: { type: 'string' },
    arguments: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name'],
        properties: { name: { type: 'string' }, description: { type: 'string' }, required: { type: 'boolean' } }
      }
    }
  }
}

/** An item of `GET /resources` (the MCP `Resource`; templates carry `uriTemplate` instead of `uri`). */
export const ResourceItem = {
  type: 'object',
  required: ['name'],
  properties: {
    uri: { type: 'string' },
    uriTemplate: { type: 'string' },
    name: { type: 'string' },
    title: { type: 'string' },
    description: { type: 'string' },
    mimeType: { type: 'string' }
  }
}

/** `GetPromptResult`: the rendered messages. */
export const PromptResult = {
  type: 'object',
  required: ['messages'],
  properties: {
    description: { type: 'string' },
    messages: {
      type: 'array',
      items: {
        type: 'object',
        required: ['role', 'content'],
        properties: { role: { type: 'string', enum: ['user', 'assistant'] }, content: ContentBlock }
      }
    }
  }
}

/** `ReadResourceResult`: the contents, text or base64 `blob`. */
export const ResourceResult = {
  type: 'object',
  required: ['contents'],
  properties: {
    contents: {
      type: 'array',
      items: {
        type: 'object',
        required: ['uri'],
        properties: { uri: { type: 'string' }, mimeType: { type: 'string' }, text: { type: 'string' }, blob: { type: 'string', contentEncoding: 'base64' } }
      }
    }
  }
}

/**
 * One documented answer with its examples. `@fastify/swagger` turns `x-examples` into the
 * media type's named `examples`, and takes `x-response-description` as the response's
 * description without repeating it in the schema.
 */
export function withExample (schema: Record<string, unknown>, description: string, examples: Record<string, { summary: string, value: unknown }>): Record<string, unknown> {
  return { ...schema, 'x-response-description': description, 'x-examples': examples }
}

/**
 * One documented error status: every code the route can answer with it (the `code` an
 * `enum` of them, `statusCode` the status itself), and one example per code, each the body
 * the catalogue's own error produces. `refusals` all have the same status.
 */
export function errorResponse (refusals: GatewayError[], when: (code: string) => string, headers?: Record<string, Record<string, unknown>>): Record<string, unknown> {
  const statusCode = refusals[0]?.statusCode ?? 500
  const codes = [...new Set(refusals.map(refusal => refusal.code))]
  return {
    'x-response-description': codes.map(code => `- \`${code}\`: ${when(code)}`).join('\n'),
    ...(headers !== undefined && { headers }),
    allOf: [
      ErrorRef,
      {
        type: 'object',
        properties: {
          statusCode: { const: statusCode },
          code: codes.length === 1 ? { const: codes[0] } : { enum: codes }
        }
      }
    ],
    'x-examples': Object.fromEntries(refusals.map(refusal => [refusal.code, { summary: refusal.code, value: errorBody(refusal) }]))
  }
}
