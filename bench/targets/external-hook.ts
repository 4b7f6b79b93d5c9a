/**
 * Preloaded (`node --import`) into supergateway, the one bench target that is not ours, so it
 * runs like the others without a change to its code: its server binds 127.0.0.1 (supergateway
 * binds every interface and has no flag for the host), the port it was given is announced as
 * `port <n>`, the line bench/run.ts waits for, BENCH_TARGET_MAX_MS caps its lifetime, and
 * the meter answers the runner as in our targets (CPU, allocation and heap of supergateway's
 * own process; the upstreams it starts are not in them). Supergateway already exits when its
 * stdin closes, which is the runner's other guard.
 */
import { Server } from 'node:net'
import { installMeter } from './meter.js'

type Listen = (this: Server, ...args: unknown[]) => Server
const listen = Server.prototype.listen as Listen
let announced = false

Server.prototype.listen = function (this: Server, ...args: unknown[]): Server {
  // `listen(port[, callback])`, as Express calls it, means every interface: add the host.
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1')
  this.once('listening', () => {
    const address = this.address()
    if (announced || typeof address !== 'object' || address === null) return
    announced = true
    process.stdout.write(`port ${address.port}\n`)
  })
  return listen.apply(this, args)
} as typeof Server.prototype.listen

if (process.env.BENCH_PARENT_GUARD === 'stdin') installMeter()

const maxMs = Number(process.env.BENCH_TARGET_MAX_MS)
if (Number.isFinite(maxMs) && maxMs > 0) {
  setTimeout(() => {
    process.stderr.write(`lifetime cap of ${maxMs} ms reached, exiting\n`)
    process.kill(process.pid, 'SIGTERM')
  }, maxMs).unref()
}
