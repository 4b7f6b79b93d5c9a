/**
 * The gateway as a proxy: one stdio upstream (bench/fixtures/add-server.js, the `math` server
 * in its own process), configured the way a user configures one, through an `mcpServers`
 * config. `up` serves 2025-era sessions, `up-stateless` answers each request on its own;
 * each entry has its own upstream process, shared by all of that entry's clients (the
 * default isolation). Logger at 'warn', as the other gateway target.
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import gateway from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { tuneGarbageCollection } from '../../src/http/server-options.js'
import { portFromArgs, serve } from './lifecycle.js'

const upstream = { command: process.execPath, args: [join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'add-server.js')] }
const config = parseConfig(JSON.stringify({
  mcpServers: { up: upstream, 'up-stateless': { ...upstream, stateless: true } },
  gateway: { aggregate: false }
}), 'bench-proxy.json')

// As the command does before it builds the gateway.
tuneGarbageCollection()
const app = Fastify({ logger: { level: 'warn' } })
await app.register(gateway, { config })

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
