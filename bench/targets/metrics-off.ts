/**
 * The gateway of bench/targets/gateway.ts with metrics turned off, so the bench measures what
 * metrics (on by default: a call pipeline observer, an `onResponse` hook) cost against the
 * same gateway without them.
 */
import Fastify from 'fastify'
import gateway from '../../src/app.js'
import { limitConnections, serverOptions } from '../../src/http/server-options.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { portFromArgs, serve } from './lifecycle.js'

const app = Fastify({ ...serverOptions(), logger: { level: 'warn' } })
limitConnections(app.server)
await app.register(gateway, {
  servers: [
    { name: 'greet', factory: createGreetServer, jsonResponse: true },
    { name: 'greet-stateless', factory: createGreetServer, stateless: true }
  ],
  observability: { metrics: { enabled: false } }
})

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
