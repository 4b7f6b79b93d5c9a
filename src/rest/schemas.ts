import { Type } from '@sinclair/typebox'

/** Every REST error body. `code` is stable: branch on it, not on `message`. */
export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'Stable machine-readable code, e.g. GW_ERR_TOOL_NOT_FOUND' }),
  error: Type.String({ description: 'HTTP reason phrase' }),
  message: Type.String({ description: 'What was wrong, for people' }),
  details: Type.Optional(Type.Array(Type.Object({
    field: Type.String({ description: 'Dotted path of the bad field in the body; empty for the body itself' }),
    message: Type.String()
  })))
}, { $id: 'GatewayError', additionalProperties: false })

export const ErrorRef = Type.Ref('GatewayError')

const ServerStatus = Type.Object({
  name: Type.String(),
  state: Type.Union([Type.Literal('starting'), Type.Literal('up'), Type.Literal('down'), Type.Literal('closed')]),
  required: Type.Optional(Type.Boolean({ description: 'The gateway is not ready while this server is down' })),
  tools: Type.Integer({ description: 'Number of tools offered now' }),
  error: Type.Optional(Type.String({ description: 'Why the server is down, in the gateway\'s words' })),
  retryAfter: Type.Optional(Type.Integer({ description: 'Seconds until the gateway next tries to bring it back' }))
})

export const ReadyBody = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('degraded'), Type.Literal('unavailable'), Type.Literal('draining')], {
    description: '`ready`: every server up; `degraded`: serving, some servers down (200); `unavailable`: a required server is down; `draining`: shutting down (both 503)'
  }),
  servers: Type.Array(ServerStatus)
})

/** One server's readiness, for a probe of that server alone. */
export const ServerReadyBody = ServerStatus

/** A content block of a tool result: text, image, audio, resource link or embedded resource. */
const ContentBlock = Type.Object({ type: Type.String() }, { additionalProperties: true })

/** The tool's `CallToolResult`, with `structuredContent` described by its `outputSchema`. */
export function callToolResultSchema (structuredContent?: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'object',
    required: ['content'],
    additionalProperties: true,
    properties: {
      content: Type.Array(ContentBlock),
      structuredContent: structuredContent ?? { type: 'object', additionalProperties: true },
      isError: { type: 'boolean' },
      ...extra
    }
  }
}

/** A list answer of the REST routes beyond tools: passed through as the server gave it. */
export function listSchema (key: string, description: string): Record<string, unknown> {
  return {
    description,
    type: 'object',
    required: ['server', key],
    properties: { server: { type: 'string' }, [key]: { type: 'array', items: { type: 'object', additionalProperties: true } } },
    additionalProperties: true
  }
}
