/**
 * The gateway as a user would mount it: `greet` with 2025-era sessions answered as JSON, and
 * `greet-stateless` answering each 2025-era request on its own, with the command's server
 * options (`serverOptions`). Logger at 'warn', so Fastify's per-request 'info' logs are off
 * while warnings and errors still show; gateway-info.ts is the same at the default 'info'.
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
  ]
})

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
