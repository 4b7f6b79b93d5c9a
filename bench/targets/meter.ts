/**
 * What every bench target measures in its own process for the runner: CPU time, bytes
 * allocated and garbage collections over a round, and the heap after a full collection. Not a
 * target itself: lifecycle.ts installs it in ours, external-hook.ts in supergateway.
 *
 * The runner asks over the target's stdin, one command a line, and reads one answer a line on
 * its stdout, `meter <json>`:
 * - `meter start`: begins a round (CPU time, allocation and collections counted from here);
 * - `meter stop`: ends it, answering `{ userUs, systemUs, allocatedBytes, gcs, gcUs, logLines }`;
 * - `meter heap`: collects garbage fully, then answers `{ heapUsed, rss }` in bytes.
 *
 * Bytes allocated: Node 20 has no counter of them (`total_allocated_bytes` came with later
 * V8s), so they are summed from V8's own GC statistics (`v8.GCProfiler`, Node ≥ 18.15): what
 * every collection in the round freed (used heap before it minus after it), plus the growth of
 * the used heap from start to stop. Exact for what lands on the JS heap; buffers outside it
 * (`external_memory`: sockets' and streams' Buffers) are not counted. `--trace-gc` would give
 * the same collections as text on stdout, mixed with the target's own lines; the profiler
 * hands them over as data, and costs nothing between collections.
 */
import { createInterface } from 'node:readline'
import { runInNewContext } from 'node:vm'
import { GCProfiler, getHeapStatistics, setFlagsFromString } from 'node:v8'

interface Round {
  profiler: GCProfiler
  cpu: NodeJS.CpuUsage
  heapUsed: number
  logLines: number
}

/** Lines the target's logger wrote, where it counts them (bench/targets/gateway-info.ts). */
let logLines = 0
export function countLogLine (): void { logLines++ }

let gc: (() => void) | undefined

/** A full collection, with `gc` exposed at run time: the targets run without `--expose-gc`. */
function collect (): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc')
    gc = runInNewContext('gc') as () => void
  }
  // Twice: what the first one finalised (weak references, finalization callbacks) goes in the second.
  gc()
  gc()
}

export function installMeter (): void {
  let round: Round | undefined
  const answer = (body: Record<string, unknown>): void => { process.stdout.write(`meter ${JSON.stringify(body)}\n`) }
  createInterface({ input: process.stdin }).on('line', line => {
    switch (line.trim()) {
      case 'meter start': {
        round?.profiler.stop()
        const profiler = new GCProfiler()
        profiler.start()
        round = { profiler, cpu: process.cpuUsage(), heapUsed: getHeapStatistics().used_heap_size, logLines }
        answer({ started: true })
        break
      }
      case 'meter stop': {
        if (round === undefined) {
          answer({ error: 'no round started' })
          break
        }
        const heapUsed = getHeapStatistics().used_heap_size
        const cpu = process.cpuUsage(round.cpu)
        const { statistics } = round.profiler.stop()
        let freed = 0
        let gcUs = 0
        for (const collection of statistics) {
          freed += collection.beforeGC.heapStatistics.usedHeapSize - collection.afterGC.heapStatistics.usedHeapSize
          gcUs += collection.cost
        }
        answer({ userUs: cpu.user, systemUs: cpu.system, allocatedBytes: heapUsed - round.heapUsed + freed, gcs: statistics.length, gcUs: Math.round(gcUs), logLines: logLines - round.logLines })
        round = undefined
        break
      }
      case 'meter heap':
        collect()
        answer({ heapUsed: getHeapStatistics().used_heap_size, rss: process.memoryUsage.rss() })
        break
    }
  })
}
