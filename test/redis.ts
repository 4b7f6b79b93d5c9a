import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import type { Test } from 'tap'

// A real redis-server for a test: Debian's (scripts/ensure-redis.sh installs it), started on
// a free loopback port with nothing saved to disk, and stopped by its PID when the test ends.

export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  url: string
  port: number
  /** Stops it (the shell holding it sends SIGTERM) and waits for its exit; `start` brings it back on the same port, empty. */
  stop: () => Promise<void>
  start: () => Promise<void>
}

/** A free TCP port on 127.0.0.1, as the OS hands one out. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

/** Starts a redis-server of this test's own; stopped at the test's end. */
export async function startRedis (t: Test): Promise<RedisServer> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'gw-redis-'))
  let child: ChildProcess | undefined
  const start = async (): Promise<void> => {
    // Through a shell that holds the server while its stdin (a pipe from this process) is
    // open: if the test process dies without its teardown (a tap timeout kills it), the pipe
    // closes and the server goes with it, instead of living on as an orphan.
    const started = spawn('sh', ['-c', 'redis-server "$@" & r=$!; trap \'kill $r\' TERM; cat >/dev/null; kill $r 2>/dev/null; wait $r', 'sh',
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/bin:/usr/sbin` } })
    child = started
    await new Promise<void>((resolve, reject) => {
      let output = ''
      const onExit = (code: number | null): void => { reject(new Error(`redis-server exited with ${String(code)} before it was ready: ${output.slice(-500)}`)) }
      const onData = (chunk: Buffer): void => {
        output += chunk.toString()
        if (!output.includes('Ready to accept connections')) return
        started.stdout?.off('data', onData)
        started.off('exit', onExit)
        started.stdout?.resume()
        resolve()
      }
      started.stdout?.on('data', onData)
      started.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
      started.once('error', reject)
      started.once('exit', onExit)
    })
  }
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    await new Promise<void>(resolve => {
      running.once('exit', () => { resolve() })
      // Ending its stdin makes the shell stop the server and wait for it.
      running.stdin?.end()
    })
  }
  await start()
  t.teardown(async () => {
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })
  return { url: `redis://127.0.0.1:${port}`, port, stop, start }
}

/** A client as the redis plugin makes one: commands are refused at once while Redis is down, and it reconnects fast; quit at the test's end. */
export async function connectRedis (t: Test, url: string): Promise<Redis> {
  const client = new Redis(url, { enableOfflineQueue: false, retryStrategy: times => Math.min(times * 20, 200) })
  // A test may stop Redis on purpose: the refused reconnections are expected, and ioredis would print them.
  client.on('error', () => {})
  t.teardown(async () => {
    await client.quit().catch(() => {})
    client.disconnect()
  })
  await once(client, 'ready')
  return client
}

/** Polls `check` until it holds (Redis gone or back, a key expired); fails after `ms`, which only a broken gateway reaches. */
export async function eventually (check: () => Promise<boolean> | boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`)
    await delay(10)
  }
}
