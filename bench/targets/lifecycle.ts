/**
 * What the bench targets share: where the port comes from, how the runner learns it, how a
 * target ends, and what it measures in itself for the runner (meter.ts). Not a target itself.
 */
import { installMeter } from './meter.js'

/** `argv[2]`, else `PORT`, else 0: the OS picks a free port and the runner reads it from stdout. */
export function portFromArgs (): number {
  const raw = process.argv[2] ?? process.env.PORT ?? '0'
  const port = Number(raw)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`invalid port '${raw}'\n`)
    process.exit(2)
  }
  return port
}

/**
 * Announces the port (`port <n>`, the line bench/run.ts waits for) and ends the process on
 * SIGTERM or SIGINT. Under the runner (BENCH_PARENT_GUARD=stdin) it also ends when its stdin
 * closes, which happens however the runner dies, even by SIGKILL: the targets run in their
 * own process group, so nothing else would stop them. BENCH_TARGET_MAX_MS caps the lifetime
 * as a last resort.
 */
export function serve (port: number, close: () => Promise<void>): void {
  let closing = false
  const stop = (code: number): void => {
    if (closing) return
    closing = true
    // A close stuck on a lingering connection must not keep a target alive.
    setTimeout(() => process.exit(code), 2000).unref()
    close().then(() => process.exit(code), () => process.exit(code))
  }
  process.on('SIGTERM', () => { stop(0) })
  process.on('SIGINT', () => { stop(0) })

  if (process.env.BENCH_PARENT_GUARD === 'stdin') {
    process.stdin.on('end', () => { stop(0) })
    process.stdin.on('error', () => { stop(0) })
    process.stdin.resume()
    // The same stdin carries the runner's questions to the meter.
    installMeter()
  }
  const maxMs = Number(process.env.BENCH_TARGET_MAX_MS)
  if (Number.isFinite(maxMs) && maxMs > 0) {
    setTimeout(() => {
      process.stderr.write(`lifetime cap of ${maxMs} ms reached, exiting\n`)
      stop(1)
    }, maxMs).unref()
  }

  process.stdout.write(`port ${port}\n`)
}
