/**
 * The gateway of bench/targets/gateway.ts at the logger's default level, 'info', logging as
 * the command does (src/logging.ts): one line per completed request, JSON through pino's
 * asynchronous destination. The command writes to stdout, under a service manager a pipe or a
 * file; here the same destination writes to /dev/null, so the runner need not read the lines,
 * and counts them for the runner (`logLines`).
 */
import { openSync } from 'node:fs'
import Fastify from 'fastify'
import gateway from '../../src/app.js'
import { limitConnections, serverOptions } from '../../src/http/server-options.js'
import { commandLogging } from '../../src/logging.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { portFromArgs, serve } from './lifecycle.js'
import { countLogLine } from './meter.js'

const logging = commandLogging({ format: 'json', level: 'info', fd: openSync('/dev/null', 'w'), onLine: countLogLine })
const app = Fastify({ ...serverOptions(), ...logging.fastify })
limitConnections(app.server)
await app.register(gateway, {
  requestLines: true,
  servers: [
    { name: 'greet', factory: createGreetServer, jsonResponse: true },
    { name: 'greet-stateless', factory: createGreetServer, stateless: true }
  ]
})

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
