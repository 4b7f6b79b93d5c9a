import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { SUPPORTED_PROTOCOL_VERSIONS, type JSONRPCMessage, type RequestId } from '@modelcontextprotocol/server'

/**
 * Takes the response away from Fastify, for streaming. After `hijack()` Fastify sends nothing
 * on our behalf, so headers set by earlier hooks (request id, CORS) are copied over first.
 */
export function hijack (request: FastifyRequest, reply: FastifyReply): { raw: IncomingMessage, res: ServerResponse } {
  const res = reply.raw
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value)
  }
  reply.hijack()
  return { raw: request.raw, res }
}

/** Starts an SSE response on a hijacked request. */
export function startSse (res: ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', ...headers })
  res.flushHeaders()
}

export function sseFrame (message: JSONRPCMessage): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`
}

/** Whether the client accepts both answers Streamable HTTP may give: JSON and SSE. */
export function acceptsJsonAndSse (request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? ''
  return accept.includes('application/json') && accept.includes('text/event-stream')
}

/** A refusal as a JSON-RPC error object: for the request `id` when known, else `null`. */
export function rejectJsonRpc (reply: FastifyReply, status: number, code: number, message: string, id: RequestId | null = null, data?: unknown): void {
  void reply.code(status).type('application/json').send(JSON.stringify({ jsonrpc: '2.0', error: { code, message, ...(data !== undefined && { data }) }, id }))
}

/** A 2025-era `MCP-Protocol-Version` header the SDK serves; absent means 2025-03-26. */
export function isSupportedLegacyVersion (version: string | string[] | undefined): boolean {
  return version === undefined || (typeof version === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(version))
}
