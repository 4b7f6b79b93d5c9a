/**
 * The gateway as a user would mount it: `greet` with 2025-era sessions answered as JSON, and
 * `greet-stateless` answering each 2025-era request on its own, with the command's server
 * options (`serverOptions`). Logger at 'warn', so Fastify's per-request 'info' logs are off
 * while warnings and errors still show; gateway-info.ts is the same at the default 'info'.
 */
import { startGatewayTarget } from './gateway-target.js'

await startGatewayTarget()
