/**
 * The gateway of bench/targets/gateway.ts with metrics turned off, so the bench measures what
 * metrics (on by default: a call pipeline observer, an `onResponse` hook) cost against the
 * same gateway without them.
 */
import { startGatewayTarget } from './gateway-target.js'

await startGatewayTarget({ observability: { metrics: { enabled: false } } })
