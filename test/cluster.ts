import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { freePort, type RedisServer } from './redis.js'

// Several real gateways (the command, each its own process on its own port) behind one plain
// nginx, as an operator scales the gateway out: round-robin, no stickiness, so one client's
// consecutive requests land on different instances. Everything is started by this test and
// stopped by its PID when the test ends, whatever state the test left it in.

const ENTRY = fileURLToPath(new URL('../src/server.ts', import.meta.url))
const NGINX = process.env.NGINX ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx')

/** How long an instance or nginx may take to answer `/health` after its start: tsx compiles on the fly. */
const START_DEADLINE_MS = 30_000
/** After SIGTERM, how long a process may take to exit before it is SIGKILLed. */
const STOP_GRACE_MS = 5_000
/** Between two `/health` probes while a process starts. */
const POLL_MS = 50

export interface ClusterOptions {
  instances: 2 | 3
  /** An mcpServers config file's content; default the built-in greet and math servers. */
  config?: object
  /** Shared state: a server of `startRedis`, a URL, or none (each instance in memory). */
  redis: RedisServer | string | false
  /** Added to every instance's environment. */
  env?: Record<string, string>
}

export interface ClusterInstance {
  /** `http://127.0.0.1:<port>`: the instance itself, not through nginx. */
  readonly url: string
  readonly port: number
  /** The running process's PID; undefined once it has exited. */
  readonly pid: number | undefined
  /** Everything it wrote, stdout and stderr, across restarts. */
  output: () => string
  /** Its JSON log lines so far. */
  lines: () => Array<Record<string, unknown>>
  /** Resolves with the first log line (written already or still to come) that matches. */
  logged: (match: (line: Record<string, unknown>) => boolean) => Promise<Record<string, unknown>>
  /** Sends a signal and waits for the exit (default SIGTERM). */
  kill: (signal?: NodeJS.Signals) => Promise<void>
  /** Sends a signal that does not stop it (SIGHUP reloads the config). */
  signal: (signal: NodeJS.Signals) => void
  /** Starts it again, with the same flags on the same port, once it has exited; stops it first if not. */
  restart: () => Promise<void>
}

export interface Cluster {
  /** nginx: what clients use. */
  url: string
  instances: ClusterInstance[]
  /** The config file every instance reads; rewrite it and send SIGHUP to reload one. */
  configFile: string
  nginxPid: number | undefined
  /** Stops nginx and every instance (also done at the test's end). */
  stop: () => Promise<void>
}

export interface NginxConfigOptions {
  /** What nginx listens on: a port, or `address:port`. */
  listen: number | string
  /** The gateway instances, `host:port` each. */
  upstreams: string[]
  /**
   * A directory of its own for the pid file, the error log and the temporary files, for an
   * nginx started by an unprivileged user (the tests); without it, nginx's packaged defaults.
   */
  prefix?: string
}

/**
 * The nginx.conf in front of several gateways: the one the tests run and the README shows.
 * Plain round-robin on purpose: any instance serves any request once they share Redis, so
 * the balancer needs no affinity and any restart or scale-out needs no drain of sessions.
 */
export function nginxConfig ({ listen, upstreams, prefix }: NginxConfigOptions): string {
  const own = prefix !== undefined
  return [
    ...(own
      ? [
          '# In the foreground, as one process: the test holds its PID and nothing is left behind',
          '# when it is SIGKILLed (with a master, its worker would outlive it).',
          'daemon off;',
          'master_process off;',
          `pid ${join(prefix, 'nginx.pid')};`,
          `error_log ${join(prefix, 'error.log')} warn;`
        ]
      : []),
    // One worker in the tests: round-robin is per worker, so one keeps one client's requests
    // strictly alternating. In production, one per core; the upstream's zone shares which
    // instance is down between them.
    `worker_processes ${own ? '1' : 'auto'};`,
    'events { worker_connections 1024; }',
    '',
    'http {',
    '  access_log off;',
    ...(own ? ['client_body_temp_path', 'proxy_temp_path', 'fastcgi_temp_path', 'uwsgi_temp_path', 'scgi_temp_path'].map(name => `  ${name} ${join(prefix, name.replace('_path', ''))};`) : []),
    '',
    '  # Round-robin, no ip_hash/sticky/hash: every instance serves every session through Redis.',
    '  # A refused connection marks an instance down for fail_timeout, then it is tried again.',
    '  upstream gateway {',
    '    zone gateway 64k;',
    ...upstreams.map(upstream => `    server ${upstream} max_fails=1 fail_timeout=2s;`),
    '    keepalive 32;',
    '  }',
    '',
    '  server {',
    `    listen ${typeof listen === 'number' ? `127.0.0.1:${listen}` : listen};`,
    '    # The gateway\'s own body limit (1 MiB by default) answers first, as JSON.',
    '    client_max_body_size 4m;',
    '',
    '    location / {',
    '      proxy_pass http://gateway;',
    '      # HTTP/1.1 with an empty Connection header: keep-alive to the instances, and chunked',
    '      # SSE responses streamed as they come.',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      # The client\'s Host, which the gateway checks against ALLOWED_HOSTS (DNS rebinding).',
    '      proxy_set_header Host $http_host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '      proxy_set_header X-Forwarded-Proto $scheme;',
    '      # Mcp-Session-Id, Last-Event-ID, MCP-Protocol-Version and Authorization pass through',
    '      # unchanged (nginx forwards request headers by default; no underscores in them).',
    '      # SSE: every event reaches the client when written, and a quiet stream (a GET stream, a',
    '      # subscriptions/listen, a slow tool call) is not cut after nginx\'s default 60 s.',
    '      proxy_buffering off;',
    '      proxy_cache off;',
    '      proxy_read_timeout 1h;',
    '      proxy_send_timeout 1h;',
    '      # A dead instance is noticed fast: its port refuses, or it does not accept in 1 s.',
    '      proxy_connect_timeout 1s;',
    '      # Retried on the next instance: a connection that fails or times out. Not with',
    '      # `non_idempotent`: a POST (a tools/call, an elicitation answer) that reached an',
    '      # instance which then died may have had its effect already, and MCP says nothing of',
    '      # replaying it; nginx still moves a POST whose connection was refused, since nothing',
    '      # was sent. A stream cut mid-way is resumed by the client (GET with Last-Event-ID).',
    '      proxy_next_upstream error timeout;',
    '      proxy_next_upstream_timeout 5s;',
    '    }',
    '  }',
    '}',
    ''
  ].join('\n')
}

interface Process {
  child: ChildProcess
  exited: Promise<void>
}

function running (child: ChildProcess | undefined): boolean {
  return child?.pid !== undefined && child.exitCode === null && child.signalCode === null
}

/** SIGTERM, then SIGKILL after the grace period; resolves once it has exited. */
async function stopProcess (proc: Process | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc === undefined || !running(proc.child)) return
  proc.child.kill(signal)
  const timer = setTimeout(() => { if (running(proc.child)) proc.child.kill('SIGKILL') }, STOP_GRACE_MS)
  await proc.exited
  clearTimeout(timer)
}

/** What a process wrote, for an error message: its first line (a usage error comes first) and its last ones. */
function excerpt (output: string): string {
  const first = output.split('\n', 1)[0] ?? ''
  return output.length <= 1500 ? output : `${first}\n…\n${output.slice(-1200)}`
}

/** Polls `url` until it answers 200, the process exits, or the deadline passes. */
async function waitHealthy (url: string, child: ChildProcess, what: string, output: () => string): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS
  let last = 'no answer yet'
  while (Date.now() < deadline) {
    if (!running(child)) throw new Error(`${what} exited (${String(child.exitCode ?? child.signalCode)}) before it answered: ${excerpt(output())}`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return
      last = `status ${res.status}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
  throw new Error(`${what} did not answer ${url} within ${START_DEADLINE_MS} ms (${last}): ${excerpt(output())}`)
}

/**
 * Every process the harness has started and not yet seen exit. A test process ended before
 * its teardown runs (tap's file timeout, an uncaught error) would otherwise leave them running
 * with no parent: they are SIGKILLed, by PID, as it exits.
 */
const live = new Set<ChildProcess>()
let guarded = false
function guardExit (): void {
  if (guarded) return
  guarded = true
  const killAll = (): void => { for (const child of live) if (running(child)) child.kill('SIGKILL') }
  process.on('exit', killAll)
  // The default action of SIGTERM runs no 'exit' listener: kill, then die of the signal as before.
  process.once('SIGTERM', () => {
    killAll()
    process.kill(process.pid, 'SIGTERM')
  })
}

function spawnWatched (command: string, args: string[], env: NodeJS.ProcessEnv, onOutput: (chunk: string) => void): Process {
  guardExit()
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  child.once('exit', () => { live.delete(child) })
  child.stdout?.setEncoding('utf8').on('data', onOutput)
  child.stderr?.setEncoding('utf8').on('data', onOutput)
  const exited = once(child, 'exit').then(() => {}, () => {})
  return { child, exited }
}

function startInstance (configFile: string, redisUrl: string | undefined, env: Record<string, string>, port: number): ClusterInstance {
  let proc: Process | undefined
  let output = ''
  const waiters = new Set<() => void>()
  const args = ['--import', 'tsx', ENTRY, '--config', configFile, '--port', String(port), '--host', '127.0.0.1', ...(redisUrl !== undefined ? ['--redis', redisUrl] : [])]
  const lines = (): Array<Record<string, unknown>> => output.split('\n').filter(line => line.startsWith('{')).flatMap(line => {
    try { return [JSON.parse(line) as Record<string, unknown>] } catch { return [] }
  })
  const url = `http://127.0.0.1:${port}`
  const launch = async (): Promise<void> => {
    proc = spawnWatched(process.execPath, args, { ...process.env, LOG_LEVEL: 'info', LOG_FORMAT: 'json', DRAIN_TIMEOUT_MS: '500', ...env }, chunk => {
      output += chunk
      for (const wake of waiters) wake()
    })
    await waitHealthy(`${url}/health`, proc.child, `gateway instance on port ${port}`, () => output)
  }
  const instance: ClusterInstance & { launch: () => Promise<void>, stop: () => Promise<void> } = {
    url,
    port,
    get pid () { return running(proc?.child) ? proc?.child.pid : undefined },
    output: () => output,
    lines,
    logged: async match => {
      for (;;) {
        const found = lines().find(match)
        if (found !== undefined) return found
        if (!running(proc?.child)) throw new Error(`instance on port ${port} exited without logging the line: ${output.slice(-2000)}`)
        await new Promise<void>(resolve => {
          const wake = (): void => { waiters.delete(wake); resolve() }
          waiters.add(wake)
          proc?.exited.then(wake, wake)
        })
      }
    },
    kill: async (signal = 'SIGTERM') => { await stopProcess(proc, signal) },
    signal: signal => { if (running(proc?.child)) proc?.child.kill(signal) },
    restart: async () => {
      await stopProcess(proc)
      await launch()
    },
    launch,
    stop: async () => { await stopProcess(proc) }
  }
  return instance
}

/**
 * Starts `instances` gateways on a config file of their own, sharing `redis` when given, and
 * one nginx in front; every process is stopped by its PID at the test's end.
 */
export async function startCluster (t: Test, options: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-cluster-'))
  const configFile = join(dir, 'mcp.json')
  writeFileSync(configFile, JSON.stringify(options.config ?? { mcpServers: { greet: { builtin: 'greet' }, math: { builtin: 'math' } } }))
  const redisUrl = options.redis === false ? undefined : typeof options.redis === 'string' ? options.redis : options.redis.url

  const ports: number[] = []
  while (ports.length < options.instances + 1) {
    const port = await freePort()
    if (!ports.includes(port)) ports.push(port)
  }
  const nginxPort = ports.pop() as number
  // Instances sharing Redis must seal `requestState` with one key (src/server.ts, --redis).
  const env = { ...(redisUrl !== undefined && { MCP_GATEWAY_STATE_KEY: randomBytes(32).toString('hex') }), ...options.env }
  const instances = ports.map(port => startInstance(configFile, redisUrl, env, port) as ReturnType<typeof startInstance> & { launch: () => Promise<void>, stop: () => Promise<void> })

  let nginx: Process | undefined
  let nginxOutput = ''
  const stop = async (): Promise<void> => {
    await Promise.all([stopProcess(nginx), ...instances.map(async instance => { await instance.stop() })])
  }
  // Registered before anything starts, so a start that fails half-way leaves nothing behind.
  t.teardown(async () => {
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })

  await Promise.all(instances.map(async instance => { await instance.launch() }))

  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, nginxConfig({ listen: nginxPort, upstreams: ports.map(port => `127.0.0.1:${port}`), prefix: dir }))
  // -e (nginx ≥ 1.19.5): the error log before the config is read, which is otherwise
  // /var/log/nginx/error.log or stderr, as the package was built.
  nginx = spawnWatched(NGINX, ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], process.env, chunk => { nginxOutput += chunk })
  const nginxLog = (): string => {
    let log = ''
    try { log = readFileSync(join(dir, 'error.log'), 'utf8') } catch {}
    return `${nginxOutput}${log}`.slice(-2000)
  }
  await waitHealthy(`http://127.0.0.1:${nginxPort}/health`, nginx.child, 'nginx', nginxLog)
  const started = nginx

  return {
    url: `http://127.0.0.1:${nginxPort}`,
    instances,
    configFile,
    get nginxPid () { return running(started.child) ? started.child.pid : undefined },
    stop
  }
}
