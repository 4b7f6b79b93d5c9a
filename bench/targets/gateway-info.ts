/**
 * The gateway of bench/targets/gateway.ts at the logger's default level, 'info', logging as
 * the command does (src/logging.ts): one line per completed request, JSON through pino's
 * asynchronous destination. The command writes to stdout, under a service manager a pipe or a
 * file; here the same destination writes to /dev/null, so the runner need not read the lines,
 * and counts them for the runner (`logLines`).
 */
import { openSync } from 'node:fs'
import { commandLogging } from '../../src/logging.js'
import { startGatewayTarget } from './gateway-target.js'
import { countLogLine } from './meter.js'

const logging = commandLogging({ format: 'json', level: 'info', fd: openSync('/dev/null', 'w'), onLine: countLogLine })
await startGatewayTarget({ requestLines: true }, logging.fastify)
