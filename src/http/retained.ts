import type { Server } from 'node:http'
import type { Redis } from 'ioredis'
import type { McpConnection } from '../connections/connection.js'
import { ServerRegistry, type MountedServer } from '../connections/registry.js'
import type { GatewayMetrics } from '../pipeline/metrics.js'
import { CallPipeline, type PipelineLog } from '../pipeline/pipeline.js'
import type { Cluster } from '../stores/cluster.js'
import type { StreamableHttpEndpoint } from './endpoint.js'

/** One MCP endpoint as a build of the app mounted it. */
interface Mount {
  /** The server's settings as they were when it was built: the same again means untouched. */
  readonly key: string
  readonly connection: McpConnection
  endpoint?: StreamableHttpEndpoint
  /** Whether the registry owns the connection (a mounted server) or the mount does (`/mcp`). */
  readonly registered: boolean
}

/** The shared Redis's client and cluster (plugins/redis.ts), with the settings they were made with. */
export interface RetainedRedis {
  /** The settings, as a string: another at a reload means the config asks for another Redis. */
  readonly key: string
  /** The URL with its password masked, for log lines. */
  readonly label: string | undefined
  /** Both undefined when the gateway runs without Redis. */
  readonly client: Redis | undefined
  readonly cluster: Cluster | undefined
  readonly prefix: string
}

/** How the last config reload went, for `/ready` and the status page. */
export interface ReloadStatus {
  readonly at: string
  readonly ok: boolean
  /** Why the new config was refused; the running one kept serving. */
  readonly error?: string
  readonly added?: string[]
  readonly changed?: string[]
  readonly removed?: string[]
}

/**
 * What outlives one build of the gateway's Fastify app. Fastify adds no route once it is
 * ready, so a config reload builds the app again and swaps it in (src/reload.ts, with
 * `@fastify/restartable`); what must not start over lives here instead: the servers'
 * connections (child processes, upstream sessions), their MCP endpoints (2025-era sessions,
 * GET and listen streams), the call pipeline (whose filters each build replaces) and the
 * metrics. A server the reload leaves untouched is mounted again on the same connection and
 * endpoint, so its clients see nothing; the old build's hooks leave these alone unless the
 * gateway is really closing (`closing`).
 */
export class Retained {
  readonly registry = new ServerRegistry()
  readonly pipeline: CallPipeline
  /** Set before the last close: the hooks of the app being closed then close what is kept here too. */
  closing = false
  metrics: GatewayMetrics | undefined
  /** The separate `/metrics` server, when `metrics.port` is set, and that port. */
  metricsServer: { server: Server, port: number } | undefined
  lastReload: ReloadStatus | undefined
  /**
   * The first build's Redis client and cluster, or its lack of one, kept for the process's
   * life: the endpoints kept here hold the cluster their sessions live in, so a reload that
   * changes `gateway.redis` keeps these and says so (plugins/redis.ts). Closed with the last build.
   */
  redis: RetainedRedis | undefined
  /** When the first build started: the gateway's uptime does not restart with a reload. */
  readonly startedAt = Date.now()
  /** The mounts of the build serving now, by name. */
  #current = new Map<string, Mount>()
  /** The mounts of the build under way, until `commit` or `abort`. */
  #next: Map<string, Mount> | undefined
  #snapshot: MountedServer[] = []
  /** Each connection's settings as the build that made it saw them (`key`). */
  #keys = new WeakMap<McpConnection, string>()

  constructor (log?: PipelineLog) {
    this.pipeline = new CallPipeline(log, { reloadable: true })
  }

  /** Records the settings a connection was made with, to tell at the next reload whether they changed. */
  keyed<C extends McpConnection> (connection: C, key: string): C {
    this.#keys.set(connection, key)
    return connection
  }

  /** The connection a build may mount again for `name`: the same settings (`key`) as the serving one. */
  reusable (name: string, key: string): McpConnection | undefined {
    const mount = this.#current.get(name)
    return mount !== undefined && mount.key !== '' && mount.key === key ? mount.connection : undefined
  }

  /** The endpoint serving `connection` under `name`, to mount again. */
  endpointOf (name: string, connection: McpConnection): StreamableHttpEndpoint | undefined {
    const mount = this.#current.get(name)
    return mount?.connection === connection ? mount.endpoint : undefined
  }

  /** Begins a build: what it mounts is recorded, then kept (`commit`) or undone (`abort`). */
  begin (): void {
    this.#next = new Map()
    this.#snapshot = this.registry.snapshot()
    this.pipeline.reopen()
  }

  /** A build mounted `connection` as `name`, with the endpoint that serves it. */
  mounted (name: string, connection: McpConnection, endpoint: StreamableHttpEndpoint, registered: boolean): void {
    const mounts = this.#next ?? this.#current
    mounts.set(name, { key: this.#keys.get(connection) ?? '', connection, endpoint, registered })
  }

  /** Whether a build under way mounts `connection`. */
  #kept (connection: McpConnection): boolean {
    for (const mount of this.#next?.values() ?? []) if (mount.connection === connection) return true
    return false
  }

  /**
   * The new build serves now: what only the old one mounted is closed (its sessions ended,
   * its child processes stopped), and servers it no longer mounts leave the registry.
   * Returns the names added, changed and removed.
   */
  async commit (): Promise<{ added: string[], changed: string[], removed: string[] }> {
    const next = this.#next
    if (next === undefined) return { added: [], changed: [], removed: [] }
    const previous = this.#current
    this.#current = next
    this.#next = undefined
    const added = [...next.keys()].filter(name => !previous.has(name))
    const changed: string[] = []
    const removed: string[] = []
    const closing: Array<Promise<void>> = []
    for (const [name, mount] of previous) {
      const successor = next.get(name)
      if (successor?.connection === mount.connection) continue
      if (successor === undefined) removed.push(name)
      else changed.push(name)
      closing.push(this.#close(name, mount, successor === undefined))
    }
    await Promise.allSettled(closing)
    return { added, changed, removed }
  }

  /** The build failed: the registry is put back as it was and what only the build opened is closed. */
  async abort (): Promise<void> {
    const next = this.#next
    this.#next = undefined
    if (next === undefined) return
    this.registry.restore(this.#snapshot)
    const closing: Array<Promise<void>> = []
    for (const [name, mount] of next) {
      if (this.#current.get(name)?.connection === mount.connection) continue
      closing.push((async () => {
        await mount.endpoint?.close()
        await mount.connection.close()
      })())
    }
    await Promise.allSettled(closing)
  }

  async #close (name: string, mount: Mount, gone: boolean): Promise<void> {
    await mount.endpoint?.close()
    if (mount.registered && gone && this.registry.get(name)?.connection === mount.connection) await this.registry.remove(name)
    else if (!this.#kept(mount.connection)) await mount.connection.close()
  }
}
