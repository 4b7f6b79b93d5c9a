import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import { restartable } from '@fastify/restartable'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import gateway, { type GatewayOptions } from './app.js'
import type { GatewayConfig } from './config.js'
import { Retained, type ReloadStatus } from './http/retained.js'

// Config reload (`--watch`, SIGHUP). Fastify adds no route once it is ready, so a reload builds
// the whole app again from the new config and swaps it in on the same listening server
// (`@fastify/restartable`): each MCP server stays its own plugin under its prefix, the OpenAPI
// document, `/mcp`, authentication, policy, limits and CORS all follow the new config, and
// there is no second routing layer to keep in step. What must not start over (the servers'
// connections and child processes, their sessions and streams, the metrics) is kept outside
// the app, in `Retained`, and handed to each build: a server whose entry is unchanged is
// mounted again on the same connection and endpoint; an added one starts; a changed one is
// started anew and its old connection closed once the new build serves; a removed one is
// closed (its sessions ended, its child stopped).

/** Debounce of file change events: an editor's save is a burst of them (write, rename, chmod). */
const WATCH_SETTLE_MS = 100
/** Debounce of tool list changes before the app is rebuilt for them: a server often adds several tools at once. */
const TOOLS_SETTLE_MS = 250

export interface ReloadingOptions {
  /** Options of each build's Fastify instance (logger, timeouts, HTTPS). */
  fastify: FastifyServerOptions
  /** Gateway options besides the config. */
  gateway: Omit<GatewayOptions, 'config' | 'retained' | 'servers'>
  /** The config to start with, already validated. */
  config: GatewayConfig
  /** Reads the config file again and validates it; throws a `ConfigError` naming every problem. */
  load: () => Promise<GatewayConfig>
  /** Reload when the config file changes. */
  watch?: boolean
}

export type ReloadingGateway = FastifyInstance & {
  /** Reads the config again and applies it; an invalid one is refused and the running one kept. */
  reload: () => Promise<ReloadStatus>
  /** Closes the app for good (the gateway's shutdown), with everything kept across builds. */
  shutdown: () => Promise<void>
}

/** The gateway app, rebuilt from its config file on `reload()`. */
export async function reloadingGateway (options: ReloadingOptions): Promise<ReloadingGateway> {
  let config = options.config
  let retained: Retained | undefined
  const app = await restartable(async (createApplication, _opts, restartOptions) => {
    const instance = createApplication(options.fastify) as unknown as FastifyInstance
    retained ??= new Retained(instance.log)
    retained.begin()
    const next = (restartOptions as { config?: GatewayConfig } | undefined)?.config ?? config
    await instance.register(gateway, { ...options.gateway, config: next, retained })
    return instance as never
  }, {}) as unknown as FastifyInstance & { restart: (options: { config: GatewayConfig }) => Promise<void> }
  const kept = retained as unknown as Retained
  // The first build serves once it is ready; whatever it opened is the baseline.
  app.addHook('onReady', async () => {
    await kept.commit()
    serving = true
  })

  let running: Promise<ReloadStatus> | undefined
  /** What the next run does: read the file again, or only rebuild (a server's tools changed). */
  let queued: 'file' | 'tools' | undefined
  let serving = false
  const reloadOnce = async (reread: boolean): Promise<ReloadStatus> => {
    const at = new Date().toISOString()
    let next: GatewayConfig = config
    if (reread) {
      try {
        next = await options.load()
      } catch (err) {
        const status: ReloadStatus = { at, ok: false, error: (err as Error).message }
        kept.lastReload = status
        app.log.error({ err: { message: status.error } }, 'config reload refused: the running config keeps serving')
        return status
      }
      for (const warning of next.warnings) app.log.warn({ file: next.file }, warning)
    }
    try {
      await app.restart({ config: next })
    } catch (err) {
      await kept.abort()
      const status: ReloadStatus = { at, ok: false, error: (err as Error).message }
      kept.lastReload = status
      app.log.error({ err }, 'config reload failed: the running config keeps serving')
      return status
    }
    config = next
    const { added, changed, removed } = await kept.commit()
    // `/metrics` moved back to the gateway's port (or off): its own port closes.
    const metrics = next.observability.metrics
    if (kept.metricsServer !== undefined && (metrics?.enabled === false || metrics?.port === undefined)) {
      const { server } = kept.metricsServer
      kept.metricsServer = undefined
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
    if (!reread) {
      app.log.info('the OpenAPI document and REST routes follow the servers\' new tools')
      return kept.lastReload ?? { at, ok: true }
    }
    const status: ReloadStatus = { at, ok: true, added, changed, removed }
    kept.lastReload = status
    app.log.info({ added, changed, removed }, 'config reloaded')
    return status
  }
  // One run at a time; what is asked for while one runs is done by one more after it (a
  // reread of the file covers a rebuild).
  const run = async (what: 'file' | 'tools'): Promise<ReloadStatus> => {
    if (running !== undefined) {
      queued = queued === 'file' || what === 'file' ? 'file' : 'tools'
      return await running
    }
    running = (async () => {
      let status = await reloadOnce(what === 'file')
      while (queued !== undefined) {
        const next = queued
        queued = undefined
        status = await reloadOnce(next === 'file')
      }
      return status
    })().finally(() => { running = undefined })
    return await running
  }
  const reload = async (): Promise<ReloadStatus> => await run('file')

  // A server whose tools change after boot (an upstream's `list_changed`) gets routes and
  // documentation for them: the app is rebuilt on the same config, every server untouched.
  // Changes during a rebuild are the rebuild's own (servers joining the registry).
  let rebuild: NodeJS.Timeout | undefined
  kept.registry.onListChanged((_server, kind) => {
    if (kind !== 'tools' || !serving || running !== undefined) return
    clearTimeout(rebuild)
    rebuild = setTimeout(() => { run('tools').catch(err => { app.log.error({ err }, 'rebuilding for new tools failed') }) }, TOOLS_SETTLE_MS)
  })

  let watcher: FSWatcher | undefined
  let stopWatching = (): void => {}
  if (options.watch === true) {
    // The directory, not the file: editors save by writing a new file and renaming it over
    // the old one, which ends a watch on the file itself.
    const file = basename(config.file)
    let settle: NodeJS.Timeout | undefined
    watcher = watch(dirname(config.file), (_event, name) => {
      if (name !== file) return
      clearTimeout(settle)
      settle = setTimeout(() => { reload().catch(err => { app.log.error({ err }, 'config reload failed') }) }, WATCH_SETTLE_MS)
    })
    watcher.on('error', err => { app.log.error({ err }, 'watching the config file failed; reload with SIGHUP') })
    stopWatching = () => {
      clearTimeout(settle)
      watcher?.close()
    }
  }

  const shutdown = async (): Promise<void> => {
    stopWatching()
    clearTimeout(rebuild)
    serving = false
    await running?.catch(() => {})
    kept.closing = true
    await app.close()
  }
  return Object.assign(app, { reload, shutdown }) as ReloadingGateway
}
