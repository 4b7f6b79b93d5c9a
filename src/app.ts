import { pathToFileURL } from 'node:url'
import { isAbsolute } from 'node:path'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import auth from '../plugins/auth.js'
import core from '../plugins/core.js'
import cors from '../plugins/cors.js'
import filters from '../plugins/filters.js'
import mcpServer, { type McpServerPluginOptions } from '../plugins/mcp-server.js'
import tracing from '../plugins/tracing.js'
import metrics from '../plugins/metrics.js'
import redis, { type RedisPluginOptions } from '../plugins/redis.js'
import statusPage from '../plugins/status.js'
import { builtinServers } from '../servers/index.js'
import type { GatewayConfig, ModuleServerConfig, ServerConfig } from './config.js'
import { AggregateConnection } from './connections/aggregate.js'
import type { McpConnection, ServerFactory } from './connections/connection.js'
import { InProcessConnection } from './connections/in-process.js'
import { UpstreamConnection } from './connections/upstream.js'
import { InvalidOptionsError } from './errors.js'
import { roundForwarder } from './mcp/round-forwarding.js'
import type { CallFilter } from './pipeline/pipeline.js'
import type { ObservabilityOptions } from './observability.js'
import type { SecurityOptions } from './security.js'
import type { Cluster } from './stores/cluster.js'
import type { Retained } from './http/retained.js'
import { settleHttpObjectShapes } from './http/object-shapes.js'

/** One mounted server: the mount plugin's options, its prefix defaulting to `/<name>`. */
export type ServerEntry = McpServerPluginOptions & { prefix?: string }

export interface GatewayOptions {
  /** Servers to mount. Default: the built-in servers (greet, bye, math). */
  servers?: ServerEntry[]
  /** Servers from a config file (see `src/config.ts`); replaces `servers` and `aggregate`. */
  config?: GatewayConfig
  /** Applied to every server that does not set its own: see the mount plugin's options. */
  defaults?: Omit<McpServerPluginOptions, 'name' | 'factory' | 'connection' | 'endpointOnly'>
  /**
   * The aggregated endpoint `/mcp`, every server's tools and prompts as
   * `<server><separator><name>`. Default: on, separator `_`. `false` turns it off.
   */
  aggregate?: false | { separator?: string }
  /** Title of the OpenAPI document. */
  title?: string
  /** Filters of the call pipeline that every call to a mounted server passes (see src/pipeline). */
  filters?: CallFilter[]
  /** Longest wait for calls in flight at shutdown before they are cancelled, in ms. Default 10000. */
  drainTimeoutMs?: number
  /** Authentication, policy, rate limits, CORS and TLS (see src/security.ts); a config file's `gateway` section replaces it. */
  security?: SecurityOptions
  /** Metrics, traces and the status page; a config file's `gateway` section replaces it. */
  observability?: ObservabilityOptions
  /**
   * What outlives this build of the app: given by a command that rebuilds the app when its
   * config changes (src/reload.ts), so servers a reload leaves untouched keep their
   * connections and sessions. Only with `config`.
   */
  retained?: Retained
  /**
   * Fastify's request logging is off (`logController` with `disableRequestLogging`): the gateway
   * writes one line per completed request instead, the audit line standing in for it when the
   * request made a call. The command sets it (src/logging.ts). Default `false`.
   */
  requestLines?: boolean
  /**
   * What this gateway shares with other instances serving the same clients (src/stores):
   * 2025-era sessions, resumable streams' events, the broker. Default: none, everything in
   * this process. Tests give two gateways one `memoryCluster`'s parts.
   */
  cluster?: Cluster
  /** The Redis that instances serving the same clients share (plugins/redis.ts); a config file's `gateway.redis` replaces it. Not with `cluster`. */
  redis?: Omit<RedisPluginOptions, 'cluster'>
}

/** The built-in servers as entries, so callers can tweak one and keep the rest. */
export function builtinEntries (factories: Record<string, ServerFactory> = builtinServers): ServerEntry[] {
  return Object.entries(factories).map(([name, factory]) => ({ name, factory }))
}

/**
 * The whole gateway as one plugin: the core plugin, each server under its prefix, and the
 * aggregated endpoint. It never listens; `src/server.ts` does.
 */
async function gateway (app: FastifyInstance, options: GatewayOptions): Promise<void> {
  const retained = options.config === undefined ? undefined : options.retained
  // Once per process, before any request: how fast Node's request and response objects stay.
  await settleHttpObjectShapes()
  await app.register(core, {
    ...(retained !== undefined && { retained }),
    ...(options.requestLines === true && { requestLines: true }),
    // Listed on `/ready` as `disabled`, so a server left out on purpose is not a mystery.
    ...(options.config !== undefined && { disabled: options.config.servers.filter(server => server.disabled === true).map(server => server.name) }),
    ...(options.title !== undefined && { title: options.title }),
    ...(options.filters !== undefined && { filters: options.filters }),
    ...(options.drainTimeoutMs !== undefined && { drainTimeoutMs: options.drainTimeoutMs })
  })
  // Read by each mount (its endpoint's sessions and streams), the rate limits' store and `/ready`.
  await app.register(redis, { ...(options.config === undefined ? options.redis : options.config.redis), ...(options.cluster !== undefined && { cluster: options.cluster }) })
  // The `input_required` rounds of the calls this instance holds, for retries that reach
  // another instance (src/mcp/round-forwarding.ts): taken from now, until the gateway closes.
  const cluster = app.gatewayCluster
  if (cluster !== undefined) {
    const rounds = roundForwarder(cluster)
    await rounds.start(err => { app.log.warn({ err }, 'taking forwarded input rounds failed; retrying') })
    app.addHook('onClose', async () => { if (retained === undefined || retained.closing) await rounds.close() })
  }
  const config = options.config
  const entries = config === undefined ? options.servers ?? builtinEntries() : await configEntries(app, config, retained)
  const aggregate = config === undefined ? options.aggregate : config.aggregate.enabled && { separator: config.aggregate.separator }
  // The security plugins read this. Registered before any server is mounted, so their hooks
  // and filters hold on every route: CORS first (a preflight carries no credentials), then
  // authentication, then the filters of the call pipeline (policy, rate limits, audit).
  const security = config === undefined ? options.security ?? {} : config.security
  // The settings as the rest of the gateway reads them: the Origin check of each mount (a CORS
  // origin is an allowed Origin), the OpenAPI document's security schemes and each REST
  // route's documented 401/403/429.
  app.decorate('gatewaySecurity', security)
  if (security.cors !== undefined) await app.register(cors, { origins: security.cors.origins })
  await app.register(auth, security)
  await app.register(filters, {
    ...(security.policy !== undefined && { policy: security.policy }),
    ...(security.rateLimit !== undefined && { rateLimit: security.rateLimit }),
    ...(options.requestLines === true && { requestLines: true })
  })
  // Observability: metrics, traces and the status page, before any server is mounted too.
  const observability = config === undefined ? options.observability ?? {} : config.observability
  // Metrics are on unless turned off: they cost one observer per call and one hook per request.
  const metricsSettings = observability.metrics ?? {}
  if (metricsSettings.enabled !== false) {
    await app.register(metrics, { ...(metricsSettings.port !== undefined && { port: metricsSettings.port }), ...(metricsSettings.protect !== undefined && { protect: metricsSettings.protect }) })
  }
  // Traces: the HTTP request spans, then a span per MCP operation from the call pipeline
  // (its `around` step); nothing at all without an OTLP endpoint.
  await app.register(tracing, observability.tracing ?? {})
  if (observability.statusPage !== false) {
    await app.register(statusPage, { ...(options.defaults?.allowedHosts !== undefined && { allowedHosts: options.defaults.allowedHosts }) })
  }
  void observability

  // Every server is reached through a connection made here; upstreams start connecting at
  // once, and each mount (which adds its server to the registry) awaits its own.
  const mounted = entries.map(entry => {
    const { factory, connection, ...rest } = entry
    return { ...rest, connection: connection ?? new InProcessConnection(entry.name, factory as ServerFactory) }
  })
  for (const { connection } of mounted) {
    if (connection instanceof UpstreamConnection) connection.start().catch(() => {})
  }
  for (const { prefix, ...serverOptions } of mounted) {
    await app.register(mcpServer, { ...options.defaults, ...serverOptions, prefix: prefix ?? `/${serverOptions.name}` })
  }
  if (aggregate !== false && mounted.length > 0) {
    // Kept across reloads while its own settings stay: its members come and go through the registry.
    const key = JSON.stringify(aggregate ?? {})
    const connection = retained?.reusable('/mcp', key) ?? keyed(retained, new AggregateConnection('gateway', app.mcpRegistry, {
      ...(aggregate?.separator !== undefined && { separator: aggregate.separator }),
      pipeline: app.callPipeline,
      log: app.log.child({ mcpServer: 'gateway' })
    }), key)
    await app.register(mcpServer, { ...options.defaults, name: 'gateway', connection, endpointOnly: true, prefix: '' })
  }
}

/** Records a connection's settings when the app is rebuilt on reload; the connection as it is otherwise. */
function keyed<C extends McpConnection> (retained: Retained | undefined, connection: C, key: string): C {
  return retained === undefined ? connection : retained.keyed(connection, key)
}

/**
 * The mount entries of a config file's enabled servers. On a rebuild after a reload, an entry
 * whose settings are the same as before is given the connection that already serves it.
 */
async function configEntries (app: FastifyInstance, config: GatewayConfig, retained?: Retained): Promise<ServerEntry[]> {
  const entries: ServerEntry[] = []
  for (const server of config.servers) {
    if (server.disabled === true) {
      app.log.info({ mcpServer: server.name }, 'mcp server disabled in the config')
      continue
    }
    const key = JSON.stringify(server)
    const reused = retained?.reusable(server.name, key)
    entries.push({
      name: server.name,
      ...(server.prefix !== undefined && { prefix: server.prefix }),
      ...(server.stateless !== undefined && { stateless: server.stateless }),
      ...(server.required !== undefined && { required: server.required }),
      ...(server.scopes !== undefined && { scopes: server.scopes }),
      ...(server.timeoutMs !== undefined && { timeoutMs: server.timeoutMs }),
      ...(server.namespace !== undefined && { namespace: server.namespace }),
      ...(server.rename !== undefined && { rename: server.rename }),
      ...reused !== undefined ? { connection: reused } : retained === undefined ? await reach(app, server) : { connection: retained.keyed(connected(server.name, await reach(app, server)), key) }
    })
  }
  return entries
}

/** The connection of an entry, made here for in-process servers so a rebuild can keep it. */
function connected (name: string, reached: { factory: ServerFactory } | { connection: McpConnection }): McpConnection {
  return 'connection' in reached ? reached.connection : new InProcessConnection(name, reached.factory)
}

/**
 * The factory a `module` entry names, imported as the gateway imports it (also by the
 * command's --check); a module that does not load, or lacks the export, is an options error.
 */
export async function moduleFactory (server: ModuleServerConfig): Promise<ServerFactory> {
  const specifier = isAbsolute(server.module) ? pathToFileURL(server.module).href : server.module
  let loaded: Record<string, unknown>
  try {
    loaded = await import(specifier) as Record<string, unknown>
  } catch (err) {
    throw new InvalidOptionsError(`mcpServers.${server.name}.module: cannot load '${server.module}': ${(err as Error).message}`)
  }
  const exported = loaded[server.export]
  if (typeof exported !== 'function') throw new InvalidOptionsError(`mcpServers.${server.name}: '${server.module}' has no function export '${server.export}'`)
  return exported as ServerFactory
}

async function reach (app: FastifyInstance, server: ServerConfig): Promise<{ factory: ServerFactory } | { connection: McpConnection }> {
  switch (server.kind) {
    case 'builtin': {
      const factory = builtinServers[server.builtin]
      if (factory === undefined) throw new InvalidOptionsError(`mcpServers.${server.name}.builtin: no built-in server '${server.builtin}' (there are ${Object.keys(builtinServers).join(', ')})`)
      return { factory }
    }
    case 'module':
      return { factory: await moduleFactory(server) }
    default:
      return {
        connection: new UpstreamConnection(server.name, {
          transport: server.kind === 'stdio'
            ? { kind: 'stdio', command: server.command, args: server.args, env: server.env, ...(server.cwd !== undefined && { cwd: server.cwd }) }
            : { kind: server.kind, url: server.url, headers: server.headers },
          ...(server.isolation !== undefined && { isolation: server.isolation }),
          ...(server.tools !== undefined && { tools: server.tools }),
          ...(server.timeoutMs !== undefined && { timeoutMs: server.timeoutMs }),
          ...(server.connectTimeoutMs !== undefined && { connectTimeoutMs: server.connectTimeoutMs }),
          ...(server.retry !== undefined && { retry: server.retry }),
          ...(server.maxIsolated !== undefined && { maxIsolated: server.maxIsolated }),
          ...(server.isolatedIdleMs !== undefined && { isolatedIdleMs: server.isolatedIdleMs }),
          log: app.log.child({ mcpServer: server.name })
        })
      }
  }
}

export default fp(gateway, { name: 'gateway', fastify: '5.x' })
