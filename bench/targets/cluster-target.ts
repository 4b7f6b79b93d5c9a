/**
 * What the scale-out targets share: gateway instances run as the command (`dist/src/server.js`,
 * each its own process, started by this target so they inherit its core), behind one nginx
 * with the README's config (`nginxConfig`, round-robin, no stickiness), and with `redis` a
 * redis-server of their own that they share. The runner loads nginx's port, so a 2025 session
 * opened through it has its requests spread over every instance. Not a target itself.
 *
 * With Redis, each round's Redis cost (commands processed, redis-server CPU time) is written
 * to stderr when the runner ends the round (`meter stop`), which the runner shows as
 * `[cluster-redis] redis: …`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { nginxConfig } from '../../test/cluster.js'
import { freePort } from '../../test/redis.js'
import { serve } from './lifecycle.js'

const HERE = dirname(fileURLToPath(import.meta.url))
// dist/bench/targets → dist/src/server.js: the built command, as production runs it.
const COMMAND = join(HERE, '..', '..', 'src', 'server.js')
const NGINX = process.env.NGINX ?? '/usr/sbin/nginx'
const REDIS = process.env.REDIS_SERVER ?? 'redis-server'
const READY_MS = 20_000

/** Resolves once `url` answers 200; rejects if `child` exits first or the deadline passes. */
async function ready (url: string, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + READY_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited before it was ready`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`${what} not ready within ${READY_MS} ms`)
}

/** CPU time of a process since it started, in ms, from /proc. */
function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

export async function startClusterTarget ({ instances, redis }: { instances: number, redis: boolean }): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cluster-'))
  const children: ChildProcess[] = []
  const launch = (command: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'inherit'] })
    children.push(child)
    return child
  }
  const stop = async (): Promise<void> => {
    await Promise.all(children.map(async child => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    let redisUrl: string | undefined
    let redisPid: number | undefined
    if (redis) {
      const port = await freePort()
      const server = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] })
      children.push(server)
      await new Promise<void>((resolve, reject) => {
        let output = ''
        server.once('exit', () => { reject(new Error(`redis-server exited: ${output.slice(-300)}`)) })
        server.stdout?.on('data', (chunk: Buffer) => {
          output += chunk.toString()
          if (output.includes('Ready to accept connections')) resolve()
        })
      })
      server.stdout?.resume()
      redisUrl = `redis://127.0.0.1:${port}`
      redisPid = server.pid
    }

    const config = join(dir, 'mcp.json')
    writeFileSync(config, JSON.stringify({ mcpServers: { greet: { builtin: 'greet' } } }))
    const env = { ...process.env, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', MCP_GATEWAY_STATE_KEY: randomBytes(32).toString('hex') }
    const ports: number[] = []
    for (let i = 0; i < instances; i++) ports.push(await freePort())
    await Promise.all(ports.map(async port => {
      const child = launch(process.execPath, [COMMAND, '--config', config, '--port', String(port), ...(redisUrl !== undefined ? ['--redis', redisUrl] : [])], env)
      await ready(`http://127.0.0.1:${port}/health`, child, `gateway on port ${port}`)
    }))

    const port = await freePort()
    const conf = join(dir, 'nginx.conf')
    writeFileSync(conf, nginxConfig({ listen: port, upstreams: ports.map(p => `127.0.0.1:${p}`), prefix: dir }))
    const nginx = launch(NGINX, ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')])
    await ready(`http://127.0.0.1:${port}/health`, nginx, 'nginx')

    if (redisUrl !== undefined && redisPid !== undefined) reportRedisCost(redisUrl, redisPid)
    serve(port, stop)
  } catch (err) {
    await stop()
    throw err
  }
}

/** On each round's `meter start` and `meter stop` (the runner's, on stdin): what Redis did in between. */
function reportRedisCost (url: string, pid: number): void {
  const client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  const commands = async (): Promise<number> => Number(/total_commands_processed:(\d+)/.exec(await client.info('stats'))?.[1] ?? Number.NaN)
  let start: { commands: number, cpuMs: number, at: number } | undefined
  createInterface({ input: process.stdin }).on('line', line => {
    if (line === 'meter start') {
      void commands().then(n => { start = { commands: n, cpuMs: cpuMs(pid), at: Date.now() } }, () => {})
    } else if (line === 'meter stop' && start !== undefined) {
      const from = start
      void commands().then(n => {
        const cpu = cpuMs(pid) - from.cpuMs
        const seconds = (Date.now() - from.at) / 1000
        process.stderr.write(`redis: ${n - from.commands} commands (${Math.round((n - from.commands) / seconds)}/s), redis-server CPU ${cpu} ms (${Math.round(cpu / seconds / 10)}% of one core) this round\n`)
      }, () => {})
    }
  })
}
