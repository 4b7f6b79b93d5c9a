/**
 * Two gateway instances sharing a redis-server, behind nginx (round-robin): a 2025 session's
 * requests alternate between them, each re-creating the session from Redis as needed.
 */
import { startClusterTarget } from './cluster-target.js'

await startClusterTarget({ instances: 2, redis: true })
