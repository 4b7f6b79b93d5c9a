import { context, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Link, type TextMapPropagator, type Tracer } from '@opentelemetry/api'
import { toJsonRpcError } from '../errors.js'
import type { CallContext, CallFilter } from './pipeline.js'

// Traces: one span per MCP operation (a tool call, a prompt, a resource read, a list) on
// every way in, as OpenTelemetry's MCP semantic conventions describe it
// (https://opentelemetry.io/docs/specs/semconv/gen-ai/mcp/): a SERVER span named
// `{mcp.method.name} {target}`. As an `around` filter of the call pipeline it covers the
// whole call, refusals included, and the server is reached inside it, so an upstream
// request carries this span's context on (`src/connections/upstream.ts`).
//
// The parent: the W3C trace context the client put in `params._meta` (SEP-414; 2026-07-28
// clients carry it there, and it names the one MCP request where an HTTP header may carry
// several), linked to the HTTP request's span; without one, the active context, which is
// the HTTP request's span (`@fastify/otel`, itself a child of the `traceparent` header).

/** What the `_meta` trace context is read with: W3C Trace Context, whatever propagator the process registered. */
export interface TracingFilterOptions {
  tracer: Tracer
  /** Reads `traceparent`/`tracestate` from a request's `_meta`. */
  propagator: TextMapPropagator
}

/** The attribute that names the item of each method, and where it goes in the span name. */
const TARGET: Record<string, string | undefined> = {
  'tools/call': 'gen_ai.tool.name',
  'prompts/get': 'gen_ai.prompt.name',
  'resources/read': 'mcp.resource.uri',
  'resources/subscribe': 'mcp.resource.uri'
}

const GETTER = {
  get: (carrier: Record<string, string>, key: string) => carrier[key],
  keys: (carrier: Record<string, string>) => Object.keys(carrier)
}

export function tracingFilter ({ tracer, propagator }: TracingFilterOptions): CallFilter {
  return {
    name: 'tracing',
    async around (call, run) {
      const active = context.active()
      const { parent, links } = parentOf(call, active, propagator)
      const span = tracer.startSpan(spanName(call), { kind: SpanKind.SERVER, attributes: attributesOf(call), ...(links !== undefined && { links }) }, parent)
      let result: Awaited<ReturnType<typeof run>>
      try {
        result = await context.with(trace.setSpan(parent, span), run)
      } catch (err) {
        failed(span, err, call.server)
        span.end()
        throw err
      }
      // A tool's own error is an answer, not a failure of the call (semconv: `tool_error`).
      if (call.method === 'tools/call' && (result as { isError?: unknown } | undefined)?.isError === true) {
        span.setAttribute('error.type', 'tool_error')
        span.setStatus({ code: SpanStatusCode.ERROR })
      }
      span.end()
      return result
    }
  }
}

function spanName (call: CallContext): string {
  return call.name === undefined ? call.method : `${call.method} ${call.name}`
}

function attributesOf (call: CallContext): Attributes {
  const target = TARGET[call.method]
  const { mcp } = call
  return {
    'mcp.method.name': call.method,
    ...(target !== undefined && call.name !== undefined && { [target]: call.name }),
    ...(call.method === 'tools/call' && { 'gen_ai.operation.name': 'execute_tool' }),
    ...(mcp !== undefined && {
      'jsonrpc.request.id': String(mcp.id),
      'jsonrpc.protocol.version': '2.0',
      ...(mcp.protocolVersion !== undefined && { 'mcp.protocol.version': mcp.protocolVersion }),
      ...(mcp.sessionId !== undefined && { 'mcp.session.id': mcp.sessionId })
    }),
    // Every way in is HTTP: the REST routes and Streamable HTTP alike.
    'network.transport': 'tcp',
    'network.protocol.name': 'http',
    // The gateway's own: which mounted server answered, and how the call came in.
    'mcp_gateway.server': call.server,
    'mcp_gateway.way_in': call.way
  }
}

/** The span's parent, and the HTTP request's span as a link when the `_meta` context replaces it. */
function parentOf (call: CallContext, active: Context, propagator: TextMapPropagator): { parent: Context, links?: Link[] } {
  const traceparent = call.mcp?.traceparent
  if (traceparent === undefined) return { parent: active }
  const carrier: Record<string, string> = { traceparent, ...(call.mcp?.tracestate !== undefined && { tracestate: call.mcp.tracestate }) }
  const extracted = propagator.extract(active, carrier, GETTER)
  const remote = trace.getSpanContext(extracted)
  // A malformed traceparent is ignored, as a W3C header would be.
  if (remote === undefined || remote === trace.getSpanContext(active)) return { parent: active }
  const http = trace.getSpanContext(active)
  return { parent: extracted, ...(http !== undefined && { links: [{ context: http }] }) }
}

/** Records a failure as the conventions ask: the JSON-RPC error code the client is (or would be) answered with. */
function failed (span: ReturnType<Tracer['startSpan']>, err: unknown, server: string): void {
  const code = String(toJsonRpcError(err, server).code)
  span.setAttributes({ 'rpc.response.status_code': code, 'error.type': code })
  span.setStatus({ code: SpanStatusCode.ERROR, ...(err instanceof Error && { message: err.message }) })
}
