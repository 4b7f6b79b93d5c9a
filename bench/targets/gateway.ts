/**
 * The gateway as a user would mount it: `greet` with 2025-era sessions answered as JSON, and
 * `greet-stateless` answering each 2025-era request on its own. Logger at 'warn', so Fastify's
 * per-request 'info' logs are off while warnings and errors still show.
 */
import Fastify from 'fastify'
import gateway from '../../src/app.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { portFromArgs, serve } from './lifecycle.js'

const app = Fastify({ logger: { level: 'warn' } })
await app.register(gateway, {
  servers: [
    { name: 'greet', factory: createGreetServer, jsonResponse: true },
    { name: 'greet-stateless', factory: createGreetServer, stateless: true }
  ]
})

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
