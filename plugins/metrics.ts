import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { InvalidOptionsError } from '../src/errors.js'
import { GatewayMetrics } from '../src/pipeline/metrics.js'

const OptionsSchema = Type.Object({
  port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  protect: Type.Optional(Type.Boolean())
})

export interface MetricsPluginOptions {
  /**
   * Serve `/metrics` on this port of its own, on the host the gateway listens on, instead of
   * the gateway's port: a scraper then needs no route through the gateway's auth, and the
   * port can be kept off the public network. `0` picks a free port. Default: the gateway's port.
   */
  port?: number
  /**
   * `/metrics` on the gateway's port needs the gateway's credentials. Default `false`: a
   * Prometheus scrape job seldom carries a bearer token, and the numbers name no caller.
   */
  protect?: boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The gateway's metrics: its Prometheus registry, and the server of `/metrics` when it has a port of its own. */
    gatewayMetrics: { registry: GatewayMetrics['registry'], readonly server: Server | undefined }
  }
  interface FastifyContextConfig {
    /** Answers without credentials, as `/health` does (read by the auth plugin). */
    public?: boolean
  }
}

/**
 * `/metrics` in Prometheus text format (src/pipeline/metrics.ts): the call pipeline's
 * observer, an `onResponse` hook timing every HTTP request by route pattern, an `onError`
 * hook counting authentication failures, and the route itself, on the gateway's port or a
 * port of its own. Registered after authentication and before any server is mounted, so its
 * hooks see every route.
 */
async function metrics (app: FastifyInstance, options: MetricsPluginOptions): Promise<void> {
  if (!Value.Check(OptionsSchema, options)) {
    const issue = Value.Errors(OptionsSchema, options).First()
    throw new InvalidOptionsError(`metrics ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  // Across config reloads one set of metrics counts on, as a scraper expects of one process.
  const retained = app.gatewayRetained
  const gatewayMetrics = retained?.metrics ?? new GatewayMetrics(app.mcpRegistry)
  if (retained !== undefined) retained.metrics = gatewayMetrics
  app.callPipeline.add(gatewayMetrics.filter)

  // Callback hooks, not async ones: they run on every request.
  app.addHook('onResponse', (request, reply, done) => {
    gatewayMetrics.httpRequest(request.method, request.routeOptions.url, reply.statusCode, reply.elapsedTime)
    done()
  })
  // The catalogue error itself, before it is shaped into a body: its code says what failed.
  app.addHook('onError', (_request, _reply, error, done) => {
    gatewayMetrics.refused(error.code)
    done()
  })

  let server: Server | undefined
  app.decorate('gatewayMetrics', { registry: gatewayMetrics.registry, get server () { return server } })
  const scrape = async (): Promise<string> => await gatewayMetrics.text()

  if (options.port === undefined) {
    app.get('/metrics', { schema: { hide: true }, config: { public: options.protect !== true } }, async (_request, reply) => {
      return await reply.type(gatewayMetrics.contentType).send(await scrape())
    })
    return
  }

  // A port of its own: a plain node:http server, since it serves one path and must not pass
  // the gateway's hooks (auth, Host checks, draining). Opened once the gateway listens, on its
  // host; closed with it.
  const port = options.port
  // A build after a config reload keeps the server already listening on the same port.
  const held = retained?.metricsServer?.port === port ? retained.metricsServer.server : undefined
  server = held ?? createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found\n')
      return
    }
    scrape().then(text => {
      response.writeHead(200, { 'content-type': gatewayMetrics.contentType }).end(text)
    }, err => {
      app.log.error({ err }, 'metrics scrape failed')
      response.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error\n')
    })
  })
  const metricsServer = server
  const stopped = retained?.metricsServer?.server
  if (retained !== undefined) retained.metricsServer = { server: metricsServer, port }
  app.addHook('onListen', async () => {
    if (metricsServer.listening) return
    // A reload that moved `/metrics` to another port closes the old one first.
    if (stopped !== undefined && stopped !== metricsServer) await closeServer(stopped)
    const host = (app.server.address() as AddressInfo | null)?.address ?? '127.0.0.1'
    metricsServer.listen(port, host)
    await once(metricsServer, 'listening')
    app.log.info({ address: metricsServer.address() }, 'metrics listening')
  })
  app.addHook('onClose', async () => {
    if (retained !== undefined && !retained.closing) return
    await closeServer(metricsServer)
  })
}

async function closeServer (server: Server): Promise<void> {
  if (!server.listening) return
  server.closeAllConnections()
  await new Promise(resolve => server.close(resolve))
}

export default fp(metrics, { name: 'gateway-metrics', fastify: '5.x', dependencies: ['gateway-core'] })
