/**
 * The comparator of cluster-redis: one gateway instance with its state in memory, behind the
 * same nginx, so the ratio isolates what sharing state through Redis costs.
 */
import { startClusterTarget } from './cluster-target.js'

await startClusterTarget({ instances: 1, redis: false })
