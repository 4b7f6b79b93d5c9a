import { AsyncLocalStorage } from 'node:async_hooks'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { context, propagation, ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api'
import type { node } from '@opentelemetry/sdk-node'
import { GATEWAY_INFO } from '../src/defaults.js'
import type { TracingOptions } from '../src/observability.js'
import { tracingFilter } from '../src/pipeline/tracing.js'

// Traces over OTLP/HTTP: the HTTP request spans of `@fastify/otel` (the official Fastify
// instrumentation) and one span per MCP operation from the call pipeline's tracing filter
// (src/pipeline/tracing.ts), exported in batches to an OpenTelemetry collector.
//
// Off unless an endpoint is configured (the option, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
// `OTEL_EXPORTER_OTLP_ENDPOINT`), and off it adds nothing: no hook, no filter, and the
// OpenTelemetry SDK is not even loaded.
//
// The gateway keeps a tracer provider of its own rather than registering the process's
// global one, so an application that embeds it with its own OpenTelemetry SDK keeps its
// tracers, and two gateways in one process (the tests) export each to its own collector.
// What only exists once per process, the context manager (which span is active across
// `await`) and the propagator `@fastify/otel` reads the `traceparent` header with, is
// registered only when nobody registered one before, and released when the last gateway
// that registered it closes.

declare module 'fastify' {
  interface FastifyInstance {
    /** The gateway's tracer provider, while tracing is on: `forceFlush()` exports what is pending. */
    tracerProvider: node.NodeTracerProvider
  }
}

/** The default `service.name`, when neither the option nor `OTEL_SERVICE_NAME` gives one. */
export const DEFAULT_SERVICE_NAME = 'fastify-mcp-gateway'

/** Where traces go: the option, else the OpenTelemetry environment variables (the signal's own, else the base one + `/v1/traces`); nothing turns tracing off. */
export function tracesEndpoint (options: TracingOptions | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const own = options?.endpoint ?? nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  if (own !== undefined) return own
  const base = nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)
  return base === undefined ? undefined : `${base.replace(/\/+$/, '')}/v1/traces`
}

function nonEmpty (value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}

/** `AsyncLocalStorage` as OpenTelemetry's context manager: what `@opentelemetry/context-async-hooks` does, which the SDK does not re-export. */
class AsyncLocalContextManager implements ContextManager {
  #storage = new AsyncLocalStorage<Context>()
  active (): Context { return this.#storage.getStore() ?? ROOT_CONTEXT }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>> (ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.call(thisArg, ...args))
  }

  bind<T> (ctx: Context, target: T): T {
    if (typeof target !== 'function') return target
    const manager = this
    return function bound (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => (target as (...a: unknown[]) => unknown).apply(this, args))
    } as T
  }

  enable (): this { return this }
  disable (): this {
    this.#storage.disable()
    return this
  }
}

/** The process-wide pieces this module registered, and how many gateways use them. */
const registered = { users: 0, contextManager: false, propagator: false }

async function tracing (app: FastifyInstance, options: TracingOptions): Promise<void> {
  const endpoint = tracesEndpoint(options)
  if (endpoint === undefined) return
  // Loaded only now: a gateway without tracing never pays for the SDK.
  const [{ node, tracing: base, core, resources }, { OTLPTraceExporter }, { FastifyOtelInstrumentation }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@fastify/otel')
  ])
  const serviceName = options.serviceName ?? nonEmpty(process.env.OTEL_SERVICE_NAME) ?? DEFAULT_SERVICE_NAME
  const provider = new node.NodeTracerProvider({
    resource: resources.defaultResource().merge(resources.resourceFromAttributes({ 'service.name': serviceName, 'service.version': GATEWAY_INFO.version })),
    spanProcessors: [new base.BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }))]
  })

  if (registered.users === 0) {
    registered.contextManager = context.setGlobalContextManager(new AsyncLocalContextManager())
    registered.propagator = propagation.setGlobalPropagator(new core.W3CTraceContextPropagator())
  }
  registered.users++

  // The HTTP request spans. Hook spans are left out (`instrumentHooks`): one per hook per
  // request would bury the request and its MCP operations under the gateway's plumbing.
  const instrumentation = new FastifyOtelInstrumentation({ instrumentHooks: false })
  instrumentation.setTracerProvider(provider)
  await app.register(instrumentation.plugin())

  // `_meta` trace context is W3C Trace Context whatever propagator the process registered.
  app.callPipeline.add(tracingFilter({ tracer: provider.getTracer(DEFAULT_SERVICE_NAME, GATEWAY_INFO.version), propagator: new core.W3CTraceContextPropagator() }))
  app.decorate('tracerProvider', provider)

  // onClose hooks run last-registered first, so the servers, registered after this plugin,
  // are closed (and their last spans ended) before the provider flushes and shuts down.
  app.addHook('onClose', async () => {
    instrumentation.disable()
    try {
      await provider.shutdown()
    } catch (err) {
      app.log.warn({ err }, 'exporting the last traces failed')
    }
    registered.users--
    if (registered.users > 0) return
    if (registered.contextManager) context.disable()
    if (registered.propagator) propagation.disable()
    registered.contextManager = false
    registered.propagator = false
  })
  app.log.info({ endpoint, serviceName }, 'tracing to an OTLP/HTTP collector')
}

export default fp(tracing, { name: 'gateway-tracing', fastify: '5.x', dependencies: ['gateway-core'] })
