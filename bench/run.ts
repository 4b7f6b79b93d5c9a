/**
 * `npm run bench`: the gateway against its comparators, side by side in one run.
 *
 * Each target (bare Fastify, the SDK's own stateless server, the gateway, and for the proxy
 * comparison the gateway and supergateway each in front of the same stdio upstream) is its
 * own child process pinned to core 0, which the upstream processes they start inherit; the
 * load generator, autocannon in this process, is pinned to core 1 by re-executing this
 * script under `taskset -c 1`, so every thread of it is pinned from birth. Without taskset,
 * or without cores 0 and 1, nothing is pinned and the output says so.
 *
 * Flags: --rounds N (3), --duration S (5), --warmup S (2), --connections 10,50,
 * --only rest,mcp-modern,mcp-legacy-stateless,mcp-legacy-session,info-rest,info-mcp-modern,info-mcp-legacy-stateless,
 * info-mcp-legacy-session,proxy-session,proxy-stateless,auth-rest,auth-mcp,metrics-rest,metrics-mcp
 * (a prefix such as `proxy`, `mcp` or `info` selects every scenario named `<prefix>-…`),
 * --soak (with --soak-requests N, default 1,000,000): in place of the comparisons, each
 * selected gateway path takes N requests at the largest --connections, and the heap after a
 * full collection is compared before and after.
 *
 * Besides throughput and latency, each target measures itself per round (bench/targets/
 * meter.ts): CPU time, bytes allocated and garbage collections of its process, reported per
 * request. Bare Fastify is measured at every concurrency, so its p99 stands beside each ratio.
 * The gateway runs at log level 'warn' (the `gateway` target) and at the default 'info'
 * (`gateway-info`, the `info-…` scenarios).
 * Exit code: 0 unless a request failed or a target did not start or died.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import type { Instance as LoadInstance, Result as LoadResult } from 'autocannon'

const SCRIPT = fileURLToPath(import.meta.url)
const HERE = dirname(SCRIPT)
// dist/bench/run.js → the repository root, where bench/results lives.
const ROOT = join(HERE, '..', '..')
const RESULTS_DIR = join(ROOT, 'bench', 'results')

const STARTUP_TIMEOUT_MS = 20_000
const PROBE_TIMEOUT_MS = 5_000
/** A full collection of a large heap takes a while; a round's figures take no time. */
const METER_TIMEOUT_MS = 30_000
const STOP_GRACE_MS = 3_000
const GREETING = 'Hello, Ada!'

// The speed issue's targets: REST ≥ 0.60 of bare Fastify, every MCP path ≥ 4× the SDK, the
// proxy ≥ 3× supergateway with p99 ≤ 30 ms, in-process p99 ≤ 2× bare Fastify's (all at c=50
// for p99); an in-process p99 is also held to 20 ms outright.
const GOALS = { rest: 0.60, mcp: 4.0, proxy: 3.0, auth: 0.85, metrics: 0.90, p99Ms: 20, p99ProxyMs: 30, p99AtConnections: 50, p99OverBare: 2 }
// Allowed growth of the heap after a full collection over a soak.
const SOAK_HEAP_GROWTH = 0.05
// The slowest rate a soak is expected to run at, for the run's time bound only.
const SOAK_MIN_REQ_PER_SEC = 1500
// Allowed RSS drift between the first and the last round before "flat" becomes a MISS.
const RSS_FLAT_MB = 5
const RSS_FLAT_SHARE = 0.05
// Share of a pinned core, in %, spent outside the target and the load generator worth a note.
const OTHER_WORK_NOTE = 20

// ---------------------------------------------------------------------------------------
// Pinning

const cpuSet = allowedCpus()
const hasTaskset = spawnSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' }).status === 0
// The re-executed runner sees only core 1: it trusts the decision its parent made.
const reexecuted = process.env.BENCH_LOADGEN_PINNED === '1'
const pinning = reexecuted || (hasTaskset && cpuSet.has(0) && cpuSet.has(1))

/** Runs this script again under `taskset -c 1` and mirrors its exit. */
function reexecPinned (): void {
  const child = spawn('taskset', ['-c', '1', process.execPath, ...process.execArgv, SCRIPT, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_LOADGEN_PINNED: '1' }
  })
  // A terminal's Ctrl-C reaches both processes already; a signal sent to this pid alone
  // is passed on, so the pinned runner always gets to stop its targets.
  const forward = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  child.on('error', err => {
    console.error(`FAIL cannot run taskset: ${err.message}`)
    process.exit(1)
  })
  child.on('exit', (code, signal) => { process.exit(code ?? (signal === 'SIGINT' ? 130 : 1)) })
}

// ---------------------------------------------------------------------------------------
// What is measured

type TargetName = 'bare' | 'sdk' | 'gateway' | 'gateway-info' | 'gateway-proxy' | 'supergateway' | 'supergateway-stateless' | 'auth-gateway' | 'metrics-off'
type ScenarioName = 'rest' | 'mcp-modern' | 'mcp-legacy-stateless' | 'mcp-legacy-session' |
  'info-rest' | 'info-mcp-modern' | 'info-mcp-legacy-stateless' | 'info-mcp-legacy-session' |
  'proxy-session' | 'proxy-stateless' | 'auth-rest' | 'auth-mcp' | 'metrics-rest' | 'metrics-mcp'
type PathKey = 'gateway-rest' | 'bare-rest' | 'gateway-modern' | 'sdk-modern' | 'gateway-legacy-stateless' | 'sdk-legacy' | 'gateway-legacy-session' |
  'info-rest' | 'info-modern' | 'info-legacy-stateless' | 'info-legacy-session' |
  'gateway-proxy-session' | 'supergateway-session' | 'gateway-proxy-stateless' | 'supergateway-stateless' | 'auth-gateway-rest' | 'auth-gateway-modern' |
  'metrics-off-rest' | 'metrics-off-modern'

interface PathSpec {
  target: TargetName
  /** The request as shown: method, URL and era. */
  what: string
  url: string
  headers: Record<string, string>
  body: string
  /** What every correct answer's body contains. */
  expect: string
  /**
   * A 2025-era session is opened first and every request carries its id; in a session each
   * request in flight needs its own JSON-RPC id, so the body is built per request from this.
   */
  session?: (id: number | string) => string
  /** Sent with `Authorization: Bearer` and the token its target printed (`bearer <token>`). */
  bearer?: true
}

interface Scenario {
  gateway: PathKey
  comparator: PathKey
  comparatorName: string
  note?: string
  minRatio: number
  /** Replaces --connections, --rounds and --warmup for a comparator too slow for them. */
  load?: { connections: number[], rounds: number, warmup: number }
}

const JSON_HEADERS = { 'content-type': 'application/json' }
const MCP_HEADERS = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
const MODERN_HEADERS = { ...MCP_HEADERS, 'mcp-method': 'tools/call', 'mcp-name': 'echoHai', 'mcp-protocol-version': '2026-07-28' }
const MODERN_BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'tools/call',
  params: {
    name: 'echoHai',
    arguments: { userName: 'Ada' },
    _meta: {
      'io.modelcontextprotocol/protocolVersion': '2026-07-28',
      'io.modelcontextprotocol/clientInfo': { name: 'bench', version: '1' },
      'io.modelcontextprotocol/clientCapabilities': {}
    }
  }
})
const legacyCall = (id: number | string): string => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echoHai', arguments: { userName: 'Ada' } } })
const LEGACY_BODY = legacyCall(1)
const LEGACY_PROTOCOL = '2025-06-18'
const INITIALIZE_BODY = JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: LEGACY_PROTOCOL, capabilities: {}, clientInfo: { name: 'bench', version: '1' } } })
const INITIALIZED_BODY = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })

// The proxy comparison's call: `add` on the upstream, whose answer carries the sum as text.
const ADDENDS = { a: 1234, b: 4321 }
const SUM_TEXT = `"text":"${ADDENDS.a + ADDENDS.b}"`
const addCall = (id: number | string): string => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'add', arguments: ADDENDS } })
const PROXY_HEADERS = { ...MCP_HEADERS, 'mcp-protocol-version': LEGACY_PROTOCOL }

const PATHS: Record<PathKey, PathSpec> = {
  'gateway-rest': { target: 'gateway', what: 'POST /greet/tools/echoHai', url: '/greet/tools/echoHai', headers: JSON_HEADERS, body: '{"userName":"Ada"}', expect: GREETING },
  'bare-rest': { target: 'bare', what: 'POST /echo', url: '/echo', headers: JSON_HEADERS, body: '{"userName":"Ada"}', expect: GREETING },
  'gateway-modern': { target: 'gateway', what: 'POST /greet/mcp (2026-07-28)', url: '/greet/mcp', headers: MODERN_HEADERS, body: MODERN_BODY, expect: GREETING },
  'sdk-modern': { target: 'sdk', what: 'POST /mcp (2026-07-28)', url: '/mcp', headers: MODERN_HEADERS, body: MODERN_BODY, expect: GREETING },
  'gateway-legacy-stateless': { target: 'gateway', what: 'POST /greet-stateless/mcp (2025, stateless)', url: '/greet-stateless/mcp', headers: MCP_HEADERS, body: LEGACY_BODY, expect: GREETING },
  'sdk-legacy': { target: 'sdk', what: 'POST /mcp (2025, stateless)', url: '/mcp', headers: MCP_HEADERS, body: LEGACY_BODY, expect: GREETING },
  'gateway-legacy-session': { target: 'gateway', what: 'POST /greet/mcp (2025, in a session)', url: '/greet/mcp', headers: { ...MCP_HEADERS, 'mcp-protocol-version': LEGACY_PROTOCOL }, body: LEGACY_BODY, expect: GREETING, session: legacyCall },
  'info-rest': { target: 'gateway-info', what: 'POST /greet/tools/echoHai (log info)', url: '/greet/tools/echoHai', headers: JSON_HEADERS, body: '{"userName":"Ada"}', expect: GREETING },
  'info-modern': { target: 'gateway-info', what: 'POST /greet/mcp (2026-07-28, log info)', url: '/greet/mcp', headers: MODERN_HEADERS, body: MODERN_BODY, expect: GREETING },
  'info-legacy-stateless': { target: 'gateway-info', what: 'POST /greet-stateless/mcp (2025, stateless, log info)', url: '/greet-stateless/mcp', headers: MCP_HEADERS, body: LEGACY_BODY, expect: GREETING },
  'info-legacy-session': { target: 'gateway-info', what: 'POST /greet/mcp (2025, in a session, log info)', url: '/greet/mcp', headers: { ...MCP_HEADERS, 'mcp-protocol-version': LEGACY_PROTOCOL }, body: LEGACY_BODY, expect: GREETING, session: legacyCall },
  'gateway-proxy-session': { target: 'gateway-proxy', what: 'POST /up/mcp (2025, in a session)', url: '/up/mcp', headers: PROXY_HEADERS, body: addCall(1), expect: SUM_TEXT, session: addCall },
  'supergateway-session': { target: 'supergateway', what: 'POST /mcp (2025, in a session)', url: '/mcp', headers: PROXY_HEADERS, body: addCall(1), expect: SUM_TEXT, session: addCall },
  'gateway-proxy-stateless': { target: 'gateway-proxy', what: 'POST /up-stateless/mcp (2025, stateless)', url: '/up-stateless/mcp', headers: PROXY_HEADERS, body: addCall(1), expect: SUM_TEXT },
  'supergateway-stateless': { target: 'supergateway-stateless', what: 'POST /mcp (2025, stateless)', url: '/mcp', headers: PROXY_HEADERS, body: addCall(1), expect: SUM_TEXT },
  'auth-gateway-rest': { target: 'auth-gateway', what: 'POST /greet/tools/echoHai (JWT)', url: '/greet/tools/echoHai', headers: JSON_HEADERS, body: '{"userName":"Ada"}', expect: GREETING, bearer: true },
  'auth-gateway-modern': { target: 'auth-gateway', what: 'POST /greet/mcp (2026-07-28, JWT)', url: '/greet/mcp', headers: MODERN_HEADERS, body: MODERN_BODY, expect: GREETING, bearer: true },
  'metrics-off-rest': { target: 'metrics-off', what: 'POST /greet/tools/echoHai (metrics off)', url: '/greet/tools/echoHai', headers: JSON_HEADERS, body: '{"userName":"Ada"}', expect: GREETING },
  'metrics-off-modern': { target: 'metrics-off', what: 'POST /greet/mcp (2026-07-28, metrics off)', url: '/greet/mcp', headers: MODERN_HEADERS, body: MODERN_BODY, expect: GREETING }
}

const SESSION_NOTE = "comparator is the SDK's stateless legacy figure: the SDK's stateless server has no sessions"
// The gateway as `npm start` runs it by default: what request logging costs against the same
// paths at 'warn' (the scenarios above).
const INFO_NOTE = "gateway-info: the gateway target at the logger's default level 'info', logging as the command does (one JSON line per completed request through pino's asynchronous destination), to /dev/null"

const SCENARIOS: Record<ScenarioName, Scenario> = {
  rest: { gateway: 'gateway-rest', comparator: 'bare-rest', comparatorName: 'bare Fastify `POST /echo`', minRatio: GOALS.rest },
  'mcp-modern': { gateway: 'gateway-modern', comparator: 'sdk-modern', comparatorName: 'SDK `/mcp`', minRatio: GOALS.mcp },
  'mcp-legacy-stateless': { gateway: 'gateway-legacy-stateless', comparator: 'sdk-legacy', comparatorName: 'SDK `/mcp` (stateless)', minRatio: GOALS.mcp },
  'mcp-legacy-session': { gateway: 'gateway-legacy-session', comparator: 'sdk-legacy', comparatorName: 'SDK `/mcp` (stateless legacy)', note: SESSION_NOTE, minRatio: GOALS.mcp },
  'info-rest': { gateway: 'info-rest', comparator: 'bare-rest', comparatorName: 'bare Fastify `POST /echo`', note: INFO_NOTE, minRatio: GOALS.rest },
  'info-mcp-modern': { gateway: 'info-modern', comparator: 'sdk-modern', comparatorName: 'SDK `/mcp`', note: INFO_NOTE, minRatio: GOALS.mcp },
  'info-mcp-legacy-stateless': { gateway: 'info-legacy-stateless', comparator: 'sdk-legacy', comparatorName: 'SDK `/mcp` (stateless)', note: INFO_NOTE, minRatio: GOALS.mcp },
  'info-mcp-legacy-session': { gateway: 'info-legacy-session', comparator: 'sdk-legacy', comparatorName: 'SDK `/mcp` (stateless legacy)', note: `${INFO_NOTE}; ${SESSION_NOTE}`, minRatio: GOALS.mcp },
  // Like for like: one 2025-era session opened before the load, and behind it one upstream
  // process that every call of the session goes through, on both sides.
  'proxy-session': {
    gateway: 'gateway-proxy-session',
    comparator: 'supergateway-session',
    comparatorName: 'supergateway `--stateful`',
    note: 'both proxy the same stdio upstream (the math server, `add`): supergateway --stateful starts one upstream process per session, the gateway shares one per mount; one session, opened before the load, holds every call',
    minRatio: GOALS.proxy
  },
  // Supergateway's default mode starts an upstream process for every POST (and initializes
  // it), about half a second of CPU each: at the usual concurrencies every request would time
  // out, so this pair runs one connection for one round, as a spot check.
  'proxy-stateless': {
    gateway: 'gateway-proxy-stateless',
    comparator: 'supergateway-stateless',
    comparatorName: 'supergateway stateless',
    note: 'supergateway without --stateful starts and initializes an upstream process per POST; the gateway\'s stateless mount keeps one. Spot check at c=1, one round, no warm-up. ' +
      'Supergateway\'s CPU figure misses most of those processes: it kills their shell, so they are reaped outside its process tree',
    minRatio: GOALS.proxy,
    load: { connections: [1], rounds: 1, warmup: 0 }
  },
  // What authentication costs: the same gateway and the same call, with a JWT verified on
  // every request (RS256, JWKS served by the target itself, fetched once) and a policy rule
  // every call passes, against none of that.
  'auth-rest': {
    gateway: 'auth-gateway-rest',
    comparator: 'gateway-rest',
    comparatorName: 'the gateway without auth',
    note: 'auth-gateway: JWT (RS256, Authorization: Bearer) required and a policy that allows every tool; gateway: neither, same servers and logger',
    minRatio: GOALS.auth
  },
  'auth-mcp': {
    gateway: 'auth-gateway-modern',
    comparator: 'gateway-modern',
    comparatorName: 'the gateway without auth',
    note: 'auth-gateway: JWT (RS256, Authorization: Bearer) required and a policy that allows every tool; gateway: neither, same servers and logger',
    minRatio: GOALS.auth
  },
  // What metrics cost: the gateway target has them on (the default), metrics-off is the same
  // gateway with `observability.metrics.enabled: false`.
  'metrics-rest': {
    gateway: 'gateway-rest',
    comparator: 'metrics-off-rest',
    comparatorName: 'the gateway with metrics off',
    note: 'gateway: metrics on (the default: a call pipeline observer and an onResponse hook); metrics-off: the same servers and logger without them',
    minRatio: GOALS.metrics
  },
  'metrics-mcp': {
    gateway: 'gateway-modern',
    comparator: 'metrics-off-modern',
    comparatorName: 'the gateway with metrics off',
    note: 'gateway: metrics on (the default: a call pipeline observer and an onResponse hook); metrics-off: the same servers and logger without them',
    minRatio: GOALS.metrics
  }
}

const SCENARIO_PATH: Record<ScenarioName, string> = {
  rest: 'REST `POST /greet/tools/echoHai`',
  'mcp-modern': 'MCP 2026-07-28 `/greet/mcp`',
  'mcp-legacy-stateless': 'MCP 2025 stateless `/greet-stateless/mcp`',
  'mcp-legacy-session': 'MCP 2025 session `/greet/mcp`',
  'info-rest': 'REST `POST /greet/tools/echoHai`, log level info',
  'info-mcp-modern': 'MCP 2026-07-28 `/greet/mcp`, log level info',
  'info-mcp-legacy-stateless': 'MCP 2025 stateless `/greet-stateless/mcp`, log level info',
  'info-mcp-legacy-session': 'MCP 2025 session `/greet/mcp`, log level info',
  'proxy-session': 'proxied stdio `add`, 2025 session `/up/mcp`',
  'proxy-stateless': 'proxied stdio `add`, 2025 stateless `/up-stateless/mcp`',
  'auth-rest': 'REST `POST /greet/tools/echoHai`, JWT',
  'auth-mcp': 'MCP 2026-07-28 `/greet/mcp` `tools/call`, JWT',
  'metrics-rest': 'REST `POST /greet/tools/echoHai`, metrics on vs off',
  'metrics-mcp': 'MCP 2026-07-28 `/greet/mcp` `tools/call`, metrics on vs off'
}

// The proxied upstream: the same file for both proxies, run by plain node from dist/.
const UPSTREAM = join(HERE, 'fixtures', 'add-server.js')
const SUPERGATEWAY = join(ROOT, 'node_modules', 'supergateway')
// Supergateway runs its --stdio command through a shell.
const shellQuote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`

/** What a target runs, after `node`; each prints `port <n>` once it listens on 127.0.0.1. */
function targetArgs (name: TargetName): string[] {
  if (name !== 'supergateway' && name !== 'supergateway-stateless') return [join(HERE, 'targets', `${name}.js`), '0']
  return [
    '--import', pathToFileURL(join(HERE, 'targets', 'external-hook.js')).href,
    join(SUPERGATEWAY, 'dist', 'index.js'),
    '--stdio', [process.execPath, UPSTREAM].map(shellQuote).join(' '),
    '--outputTransport', 'streamableHttp',
    ...(name === 'supergateway' ? ['--stateful'] : []),
    // Its 'info' level logs every message both ways; the gateway logs at 'warn'.
    '--logLevel', 'none',
    '--port', '0'
  ]
}

// ---------------------------------------------------------------------------------------
// Options

interface Options {
  rounds: number
  duration: number
  warmup: number
  connections: number[]
  only: ScenarioName[]
  /** Requests per gateway path of a soak, or nothing for the comparisons. */
  soak: number | undefined
}

const USAGE = `Usage: npm run bench -- [--rounds N] [--duration S] [--warmup S] [--connections 10,50] [--only ${Object.keys(SCENARIOS).join(',')}]
       npm run bench -- --soak [--soak-requests 1000000] [--warmup S] [--connections 50] [--only ...]
  (--only proxy, or any prefix before a '-', selects every scenario named <prefix>-…;
   --soak loads each selected gateway path with --soak-requests requests at the largest --connections)`

function parseOptions (): Options {
  let values
  try {
    values = parseArgs({
      options: {
        rounds: { type: 'string', default: '3' },
        duration: { type: 'string', default: '5' },
        warmup: { type: 'string', default: '2' },
        connections: { type: 'string', default: '10,50' },
        only: { type: 'string' },
        soak: { type: 'boolean' },
        'soak-requests': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      },
      strict: true
    }).values
  } catch (err) {
    throw new BenchError(`${(err as Error).message}\n${USAGE}`)
  }
  if (values.help === true) {
    console.log(USAGE)
    process.exit(0)
  }
  const positiveInt = (name: string, raw: string): number => {
    const n = Number(raw)
    if (!Number.isInteger(n) || n < 1) throw new BenchError(`--${name} must be a positive integer, got '${raw}'\n${USAGE}`)
    return n
  }
  const seconds = (name: string, raw: string): number => {
    const n = Number(raw)
    if (!Number.isFinite(n) || n <= 0 || n > 600) throw new BenchError(`--${name} must be seconds in (0, 600], got '${raw}'\n${USAGE}`)
    return n
  }
  const only = values.only === undefined
    ? Object.keys(SCENARIOS) as ScenarioName[]
    : values.only.split(',').map(s => s.trim()).filter(Boolean).flatMap(name => {
      if (name in SCENARIOS) return [name as ScenarioName]
      const group = (Object.keys(SCENARIOS) as ScenarioName[]).filter(scenario => scenario.startsWith(`${name}-`))
      if (group.length === 0) throw new BenchError(`unknown scenario '${name}'\n${USAGE}`)
      return group
    })
  if (only.length === 0) throw new BenchError(`--only names no scenario\n${USAGE}`)
  const connections = [...new Set(values.connections.split(',').map(s => positiveInt('connections', s.trim())))]
  if (values['soak-requests'] !== undefined && values.soak !== true) throw new BenchError(`--soak-requests goes with --soak\n${USAGE}`)
  return {
    rounds: positiveInt('rounds', values.rounds),
    duration: seconds('duration', values.duration),
    warmup: values.warmup === '0' ? 0 : seconds('warmup', values.warmup),
    connections,
    only: [...new Set(only)],
    soak: values.soak === true ? positiveInt('soak-requests', values['soak-requests'] ?? '1000000') : undefined
  }
}

// ---------------------------------------------------------------------------------------
// Targets

class BenchError extends Error {}

interface RunningTarget {
  name: TargetName
  child: ChildProcess
  pid: number
  port: number
  cpus: string
  startupMs: number
  /** Last lines the target printed, for the message when it dies. */
  tail: string[]
  /** The bearer token it printed, for the paths that send one. */
  bearer?: string
  /**
   * Its child processes (the proxies' upstreams) seen alive, by pid with their start time so
   * a reused pid is never signalled: any that outlive the target are killed by pid.
   */
  descendants: Map<number, string>
  /** Who waits for the meter's next answers (bench/targets/meter.ts), in the order asked. */
  meterWaiting: Array<(answer: MeterAnswer) => void>
}

/** What a target's meter answers: a round's figures (`stop`), or the heap after a full collection (`heap`). */
interface MeterAnswer {
  userUs?: number
  systemUs?: number
  allocatedBytes?: number
  gcs?: number
  gcUs?: number
  logLines?: number
  heapUsed?: number
  rss?: number
  error?: string
}

const targets = new Map<TargetName, RunningTarget>()
const children = new Set<ChildProcess>()
let stopping = false
let currentLoad: LoadInstance | undefined

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

async function startTarget (name: TargetName, lifetimeMs: number): Promise<RunningTarget> {
  const argv = [process.execPath, ...targetArgs(name)]
  const started = performance.now()
  const child = spawn(pinning ? 'taskset' : argv[0] as string, pinning ? ['-c', '0', ...argv] : argv.slice(1), {
    // Own process group: a terminal's Ctrl-C reaches the runner only, which stops the
    // targets itself rather than racing their deaths against its own shutdown.
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, BENCH_PARENT_GUARD: 'stdin', BENCH_TARGET_MAX_MS: String(lifetimeMs) }
  })
  children.add(child)
  const tail: string[] = []
  let ready: RunningTarget | undefined

  return await new Promise<RunningTarget>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new BenchError(`target '${name}' did not report its port within ${STARTUP_TIMEOUT_MS} ms${lastLines(tail)}`))
    }, STARTUP_TIMEOUT_MS)
    const echo = (line: string): void => {
      tail.push(line)
      if (tail.length > 20) tail.shift()
      // Drained and shown: a target blocked on a full stdout pipe would skew the figures.
      process.stderr.write(`  [${name}] ${line}\n`)
    }
    let bearer: string | undefined
    const meterWaiting: RunningTarget['meterWaiting'] = []
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', line => {
      if (line.startsWith('meter ')) {
        meterWaiting.shift()?.(JSON.parse(line.slice('meter '.length)) as MeterAnswer)
        return
      }
      // The token is kept, not echoed: it is a credential, if only a bench's.
      const token = /^bearer (\S+)$/.exec(line)
      if (token !== null) {
        bearer = token[1]
        return
      }
      const match = /^port (\d+)$/.exec(line)
      if (ready !== undefined || match === null) {
        echo(line)
        return
      }
      clearTimeout(timer)
      const pid = child.pid as number
      ready = { name, child, pid, port: Number(match[1]), cpus: procStatus(pid, 'Cpus_allowed_list') ?? '?', startupMs: performance.now() - started, tail, descendants: new Map(), meterWaiting, ...(bearer !== undefined && { bearer }) }
      targets.set(name, ready)
      resolve(ready)
    })
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', echo)
    child.once('error', err => {
      clearTimeout(timer)
      reject(new BenchError(`target '${name}' could not be spawned: ${err.message}`))
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      const how = signal !== null ? `signal ${signal}` : `exit code ${code}`
      if (ready === undefined) {
        reject(new BenchError(`target '${name}' exited before listening (${how})${lastLines(tail)}`))
      } else if (!stopping) {
        void shutdown(1, `\nFAIL target '${name}' (pid ${ready.pid}) died during the run (${how})${lastLines(tail)}`)
      }
    })
  })
}

/** Asks a target's meter (bench/targets/meter.ts) and waits for its answer. */
async function meter (target: RunningTarget, command: 'start' | 'stop' | 'heap'): Promise<MeterAnswer> {
  return await new Promise<MeterAnswer>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new BenchError(`target '${target.name}' did not answer 'meter ${command}' within ${METER_TIMEOUT_MS} ms${lastLines(target.tail)}`))
    }, METER_TIMEOUT_MS)
    target.meterWaiting.push(answer => {
      clearTimeout(timer)
      if (answer.error !== undefined) reject(new BenchError(`target '${target.name}' answered 'meter ${command}' with: ${answer.error}`))
      else resolve(answer)
    })
    target.child.stdin?.write(`meter ${command}\n`)
  })
}

function lastLines (tail: string[]): string {
  return tail.length === 0 ? '' : `; its last output:\n    ${tail.join('\n    ')}`
}

async function stopChild (child: ChildProcess): Promise<void> {
  if (exited(child) || child.pid === undefined) return
  const gone = new Promise<boolean>(resolve => child.once('exit', () => { resolve(true) }))
  child.kill('SIGTERM')
  if (await Promise.race([gone, sleep(STOP_GRACE_MS).then(() => false)])) return
  child.kill('SIGKILL')
  await Promise.race([gone, sleep(1000)])
}

/** Records the processes a target has started that are alive now. */
function noteDescendants (target: RunningTarget): void {
  for (const [pid, start] of target.descendants) if (startTime(pid) !== start) target.descendants.delete(pid)
  for (const pid of descendantsOf(target.pid)) {
    const start = startTime(pid)
    if (start !== undefined) target.descendants.set(pid, start)
  }
}

/** The recorded descendants of stopped targets still alive: the same pid and start time. */
function leftovers (): Array<{ target: TargetName, pid: number }> {
  return [...targets.values()].flatMap(target => [...target.descendants]
    .filter(([pid, start]) => startTime(pid) === start)
    .map(([pid]) => ({ target: target.name, pid })))
}

/**
 * Stops the load, every target and then whatever a target started and left behind (its
 * own shutdown should have stopped it), then exits. Later calls wait for the first one.
 */
async function shutdown (code: number, message?: string): Promise<never> {
  if (stopping) return await new Promise<never>(() => {})
  stopping = true
  if (message !== undefined) console.error(message)
  currentLoad?.stop()
  for (const target of targets.values()) noteDescendants(target)
  await Promise.all([...children].map(stopChild))
  const deadline = performance.now() + STOP_GRACE_MS
  while (leftovers().length > 0 && performance.now() < deadline) await sleep(50)
  const left = leftovers()
  for (const { pid } of left) {
    try { process.kill(pid, 'SIGKILL') } catch {}
  }
  if (left.length > 0) {
    console.error(`note: ${left.length} processes started by the targets outlived them by ${STOP_GRACE_MS} ms and were killed: ${left.map(l => `pid ${l.pid} (under ${l.target})`).join(', ')}`)
  }
  process.exit(code)
}

// ---------------------------------------------------------------------------------------
// Probing

interface Probe { status: number, headers: Headers, text: string }

async function post (target: RunningTarget, url: string, headers: Record<string, string>, body: string): Promise<Probe> {
  const res = await fetch(`http://127.0.0.1:${target.port}${url}`, { method: 'POST', headers, body, signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) })
  return { status: res.status, headers: res.headers, text: await res.text() }
}

/** The session a `session` path loads inside, opened the way a 2025-era client opens one. */
async function openSession (target: RunningTarget, spec: PathSpec): Promise<string> {
  const init = await post(target, spec.url, MCP_HEADERS, INITIALIZE_BODY)
  const sessionId = init.headers.get('mcp-session-id')
  if (init.status !== 200 || sessionId === null) {
    throw new BenchError(`initialize on ${labelOf(spec)} answered ${init.status}${sessionId === null ? ' without an mcp-session-id header' : ''}: ${clip(init.text)}`)
  }
  const ack = await post(target, spec.url, { ...spec.headers, 'mcp-session-id': sessionId }, INITIALIZED_BODY)
  if (ack.status !== 202) throw new BenchError(`notifications/initialized on ${labelOf(spec)} answered ${ack.status}, expected 202: ${clip(ack.text)}`)
  return sessionId
}

const sessions = new Map<PathKey, string>()

/** Headers of a path as loaded: with the session id once the session is open, and the target's token where the path sends one. */
function headersOf (key: PathKey): Record<string, string> {
  const spec = PATHS[key]
  const sessionId = sessions.get(key)
  let headers = sessionId === undefined ? spec.headers : { ...spec.headers, 'mcp-session-id': sessionId }
  if (spec.bearer === true) {
    const token = targetOf(key).bearer
    if (token === undefined) throw new BenchError(`target '${spec.target}' printed no 'bearer <token>' line`)
    headers = { ...headers, authorization: `Bearer ${token}` }
  }
  return headers
}

async function probe (key: PathKey): Promise<void> {
  const spec = PATHS[key]
  const target = targetOf(key)
  // A session's request ids must be unique; the stateless paths send the body as given.
  const body = spec.session !== undefined ? spec.session(`probe-${Date.now()}`) : spec.body
  let res: Probe
  try {
    if (spec.session !== undefined && !sessions.has(key)) sessions.set(key, await openSession(target, spec))
    res = await post(target, spec.url, headersOf(key), body)
  } catch (err) {
    if (err instanceof BenchError) throw err
    throw new BenchError(`probe of ${labelOf(spec)} failed: ${(err as Error).message}`)
  }
  if (res.status !== 200 || !res.text.includes(spec.expect)) {
    const why = res.status !== 200 ? `answered ${res.status}, expected 200` : `answered 200 without '${spec.expect}'`
    throw new BenchError(`probe of ${labelOf(spec)} ${why}: ${clip(res.text)}`)
  }
}

const labelOf = (spec: PathSpec): string => `${spec.target} ${spec.what}`

function targetOf (key: PathKey): RunningTarget {
  const target = targets.get(PATHS[key].target)
  if (target === undefined) throw new BenchError(`target '${PATHS[key].target}' is not running`)
  return target
}

// ---------------------------------------------------------------------------------------
// Loading

interface Round {
  reqPerSec: number
  p50: number
  p99: number
  requests: number
  errors: number
  timeouts: number
  non2xx: number
  /** 2xx responses without the expected answer. */
  mismatches: number
  statusCodes: Record<string, number>
  /** RSS of the target and its child processes after the round. */
  rssMB: number
  /** CPU time over wall time, in % of one core; the target's with its child processes'. */
  targetCpu: number
  loadgenCpu: number
  /** Busy share of cores 0 and 1 from /proc/stat, whoever used them (kernel included), in %. */
  core0Busy: number
  core1Busy: number
  /** From the target's meter, its own process only: CPU time (user and system), in µs. */
  processCpuUs: number
  /** Bytes allocated on its JS heap, and its garbage collections with their time in µs. */
  allocatedBytes: number
  gcs: number
  gcUs: number
  /** Log lines written, where the target counts them (gateway-info). */
  logLines: number
}

interface PathRun {
  path: PathKey
  label: string
  target: TargetName
  connections: number
  warmup: Round | undefined
  rounds: Round[]
  median: { reqPerSec: number, p50: number, p99: number }
  /** Errors (timeouts included), non-2xx and 2xx bodies without the expected answer, warm-up included. */
  failures: number
}

const runs = new Map<string, PathRun>()
let requestSeq = 0

/** One round of load: `seconds` long, or `amount` requests in all (a soak). */
async function load (key: PathKey, connections: number, seconds: number, amount?: number): Promise<Round> {
  if (stopping) return await new Promise<never>(() => {})
  const spec = PATHS[key]
  const target = targetOf(key)
  await meter(target, 'start')
  const wallStart = performance.now()
  const cpuStart = process.cpuUsage()
  noteDescendants(target)
  const targetCpuStart = treeCpuMs(target.pid)
  const coresStart = [coreTimes(0), coreTimes(1)]
  // Counted here rather than with verifyBody, which would count a non-2xx twice.
  let badBodies = 0
  const onResponse = (status: number, body: string): void => {
    if (status >= 200 && status < 300 && !body.includes(spec.expect)) badBodies++
  }
  const session = spec.session
  currentLoad = autocannon({
    url: `http://127.0.0.1:${target.port}${spec.url}`,
    method: 'POST',
    headers: headersOf(key),
    body: spec.body,
    requests: [session !== undefined
      // In a session every in-flight request needs its own JSON-RPC id. Not autocannon's
      // idReplacement: it assumes a fixed id length and sends a wrong content-length.
      ? { setupRequest: request => ({ ...request, body: session(++requestSeq) }), onResponse }
      : { onResponse }],
    connections,
    ...(amount === undefined ? { duration: seconds } : { amount })
  })
  const result: LoadResult = await currentLoad
  currentLoad = undefined
  if (stopping) return await new Promise<never>(() => {})
  const wallMs = performance.now() - wallStart
  const cpu = process.cpuUsage(cpuStart)
  const targetCpuEnd = treeCpuMs(target.pid)
  const coresEnd = [coreTimes(0), coreTimes(1)]
  noteDescendants(target)
  const own = await meter(target, 'stop')
  return {
    reqPerSec: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    mismatches: badBodies,
    statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats).map(([code, stat]) => [code, stat.count])),
    rssMB: treeRssMB(target.pid),
    targetCpu: (targetCpuEnd - targetCpuStart) / wallMs * 100,
    loadgenCpu: (cpu.user + cpu.system) / 1000 / wallMs * 100,
    core0Busy: busyShare(coresStart[0], coresEnd[0]),
    core1Busy: busyShare(coresStart[1], coresEnd[1]),
    processCpuUs: (own.userUs ?? Number.NaN) + (own.systemUs ?? Number.NaN),
    allocatedBytes: own.allocatedBytes ?? Number.NaN,
    gcs: own.gcs ?? Number.NaN,
    gcUs: own.gcUs ?? Number.NaN,
    logLines: own.logLines ?? 0
  }
}

// A round in which nothing completed failed, even though autocannon counts no error for it.
const failuresOf = (round: Round): number => round.errors + round.non2xx + round.mismatches + (round.requests === 0 ? 1 : 0)

/** How one scenario is loaded: the flags, or the scenario's own `load` where it has one. */
interface Plan { connections: number[], rounds: number, duration: number, warmup: number }

const planOf = (scenario: Scenario, options: Options): Plan => ({
  connections: options.connections,
  rounds: options.rounds,
  duration: options.duration,
  warmup: options.warmup,
  ...scenario.load
})

async function measure (key: PathKey, connections: number, plan: Plan): Promise<PathRun> {
  const id = `${key}@${connections}`
  const done = runs.get(id)
  if (done !== undefined) return done
  await probe(key)
  const warmup = plan.warmup > 0 ? await load(key, connections, plan.warmup) : undefined
  const rounds: Round[] = []
  for (let i = 0; i < plan.rounds; i++) rounds.push(await load(key, connections, plan.duration))
  // The warm-up is not in the figures, but a request failing in it fails the run all the same.
  const all = warmup === undefined ? rounds : [warmup, ...rounds]
  const run: PathRun = {
    path: key,
    label: labelOf(PATHS[key]),
    target: PATHS[key].target,
    connections,
    warmup,
    rounds,
    median: {
      reqPerSec: median(rounds.map(r => r.reqPerSec)),
      p50: median(rounds.map(r => r.p50)),
      p99: median(rounds.map(r => r.p99))
    },
    failures: all.reduce((total, r) => total + failuresOf(r), 0)
  }
  runs.set(id, run)
  if (run.failures > 0) {
    const stalled = all.filter(r => r.requests === 0).length
    console.error(`\n!!!!! FAIL ${run.label} c=${connections}: ${run.failures} failed requests ` +
      `(errors ${sum(all, 'errors')}, timeouts ${sum(all, 'timeouts')}, non-2xx ${sum(all, 'non2xx')}, ` +
      `body without '${PATHS[key].expect}' ${sum(all, 'mismatches')}; status codes ${JSON.stringify(mergeCodes(all))}` +
      `${stalled > 0 ? `; ${stalled} rounds in which no request completed` : ''}) !!!!!\n`)
  }
  return run
}

// ---------------------------------------------------------------------------------------
// Reporting

interface Comparison {
  scenario: ScenarioName
  connections: number
  plan: Plan
  gateway: PathRun
  comparator: PathRun
  /** Bare Fastify at the same concurrency: the reference for tail latency. */
  bare: PathRun
  ratio: number
}

/** What one request costs the target, medians over a path run's rounds. */
interface PerRequest {
  /** CPU time of the target's own process (its meter), and of it with the processes it started (/proc), in µs. */
  processCpuUs: number
  treeCpuUs: number
  /** Bytes allocated on the target's JS heap, in KB. */
  allocatedKB: number
  gcsPer1k: number
  gcUs: number
  logLines: number
}

function perRequest (run: PathRun): PerRequest {
  const of = (figure: (round: Round) => number): number => median(run.rounds.map(figure))
  return {
    processCpuUs: of(r => r.processCpuUs / r.requests),
    // targetCpu is % of one core over the round: core-µs per second over requests per second.
    treeCpuUs: of(r => r.targetCpu * 10_000 / r.reqPerSec),
    allocatedKB: of(r => r.allocatedBytes / r.requests / 1024),
    gcsPer1k: of(r => r.gcs * 1000 / r.requests),
    gcUs: of(r => r.gcUs / r.requests),
    logLines: of(r => r.logLines / r.requests)
  }
}

const PER_REQUEST_HEADER = `${'CPU µs proc/tree'.padStart(16)}  ${'alloc KB'.padStart(8)}  ${'GCs/1k'.padStart(6)}  ${'GC µs'.padStart(5)}  ${'log lines'.padStart(9)}`

function perRequestColumns (run: PathRun): string {
  const figures = perRequest(run)
  return `${`${fixed(figures.processCpuUs, 0)} / ${fixed(figures.treeCpuUs, 0)}`.padStart(16)}  ${fixed(figures.allocatedKB, 1).padStart(8)}  ` +
    `${fixed(figures.gcsPer1k, 2).padStart(6)}  ${fixed(figures.gcUs, 1).padStart(5)}  ${fixed(figures.logLines, 1).padStart(9)}`
}

function printComparison (c: Comparison): void {
  const scenario = SCENARIOS[c.scenario]
  const { plan } = c
  console.log(`\n── ${c.scenario} · c=${c.connections} · ${plan.rounds === 1 ? 'one' : `medians of ${plan.rounds}`} × ${plan.duration} s after ${plan.warmup} s warm-up ${'─'.repeat(8)}`)
  if (scenario.note !== undefined) console.log(`   (${scenario.note})`)
  const nameWidth = Math.max(7, c.gateway.target.length, c.comparator.target.length)
  const shown = (run: PathRun): string => `${run.target.padEnd(nameWidth)} ${PATHS[run.path].what}`
  const width = Math.max(...[c.gateway, c.comparator].map(r => shown(r).length))
  console.log(`   ${'path'.padEnd(width)}  ${'req/s'.padStart(8)}  ${'p50 ms'.padStart(6)}  ${'p99 ms'.padStart(6)}  ${'failed'.padStart(6)}  cpu srv/gen  RSS MB by round`)
  for (const run of [c.gateway, c.comparator]) {
    const cpu = `${pct(median(run.rounds.map(r => r.targetCpu)))}/${pct(median(run.rounds.map(r => r.loadgenCpu)))}`
    console.log(`   ${shown(run).padEnd(width)}  ${int(run.median.reqPerSec).padStart(8)}  ${ms(run.median.p50).padStart(6)}  ${ms(run.median.p99).padStart(6)}  ${String(run.failures).padStart(6)}  ${cpu.padStart(11)}  ${run.rounds.map(r => r.rssMB.toFixed(1)).join(' → ')}`)
  }
  // Per request, measured in the target (bench/targets/meter.ts): its process's CPU time and
  // what it allocated; the tree's CPU time counts the processes it started (a proxy's upstream).
  console.log(`   ${'per request'.padEnd(width)}  ${PER_REQUEST_HEADER}`)
  for (const run of [c.gateway, c.comparator]) console.log(`   ${shown(run).padEnd(width)}  ${perRequestColumns(run)}`)
  const verdict = c.ratio >= scenario.minRatio ? 'PASS' : 'MISS'
  // CPU per request moves less than req/s when other processes take turns on the cores.
  const cpuPerRequest = (run: PathRun): string => (median(run.rounds.map(r => r.targetCpu * 10 / r.reqPerSec))).toFixed(2)
  console.log(`   ratio ${c.gateway.target}/${c.comparator.target}: ${ratio(c.ratio, scenario)}   (target ≥ ${ratio(scenario.minRatio, scenario)}: ${verdict})` +
    `   p99 ${ms(c.gateway.median.p99)} vs ${ms(c.comparator.median.p99)} ms, bare Fastify's ${ms(c.bare.median.p99)} ms   target CPU per request ${cpuPerRequest(c.gateway)} vs ${cpuPerRequest(c.comparator)} ms`)
  const outcomes = (run: PathRun): string => {
    const all = run.warmup === undefined ? run.rounds : [run.warmup, ...run.rounds]
    return `${run.target} ${JSON.stringify(mergeCodes(all))}, errors ${sum(all, 'errors')} (timeouts ${sum(all, 'timeouts')}), wrong body ${sum(all, 'mismatches')}`
  }
  console.log(`   status codes, warm-up included: ${outcomes(c.gateway)}; ${outcomes(c.comparator)}`)
  const saturated = [c.gateway, c.comparator].filter(r => median(r.rounds.map(x => x.loadgenCpu)) >= 90)
  for (const run of saturated) console.log(`   note: the load generator was near one full core on ${run.label}; that figure may be bound by the client, not the server`)
  if (pinning) {
    for (const run of [c.gateway, c.comparator]) {
      const other = Math.max(median(run.rounds.map(r => r.core0Busy - r.targetCpu)), median(run.rounds.map(r => r.core1Busy - r.loadgenCpu)))
      if (other >= OTHER_WORK_NOTE) console.log(`   note: cores 0/1 spent ~${Math.round(other)}% on work other than target and load generator (kernel or other processes) during ${run.label}; that figure is disturbed`)
    }
  }
}

function markdownTable (comparisons: Comparison[]): string {
  const rows = comparisons.map(c => {
    const rss = c.gateway.rounds
    return `| ${SCENARIO_PATH[c.scenario]} | ${c.connections} | ${int(c.gateway.median.reqPerSec)} | ${SCENARIOS[c.scenario].comparatorName} | ` +
      `${int(c.comparator.median.reqPerSec)} | ${ratio(c.ratio, SCENARIOS[c.scenario])} | ${ms(c.gateway.median.p50)} / ${ms(c.gateway.median.p99)} | ` +
      `${(rss[0] as Round).rssMB.toFixed(1)} → ${(rss[rss.length - 1] as Round).rssMB.toFixed(1)} |`
  })
  return [
    '| path | c | gateway req/s | comparator | comparator req/s | ratio | gateway p50/p99 ms | RSS first→last round (MB) |',
    '|---|---:|---:|---|---:|---:|---:|---:|',
    ...rows
  ].join('\n')
}

/** Each path run once: what a request costs the target, and its p99 beside bare Fastify's at the same concurrency. */
function perRequestTable (comparisons: Comparison[]): string {
  const seen = unique(comparisons.flatMap(c => [c.gateway, c.comparator, c.bare]))
  const rows = seen.map(run => {
    const figures = perRequest(run)
    const bare = runs.get(`bare-rest@${run.connections}`)
    return `| ${run.label} | ${run.connections} | ${fixed(figures.processCpuUs, 0)} / ${fixed(figures.treeCpuUs, 0)} | ${fixed(figures.allocatedKB, 1)} | ` +
      `${fixed(figures.gcsPer1k, 2)} | ${fixed(figures.gcUs, 1)} | ${fixed(figures.logLines, 1)} | ${ms(run.median.p99)} | ${bare === undefined ? '?' : ms(bare.median.p99)} |`
  })
  return [
    '| path | c | CPU µs per request (process / with children) | allocated KB per request | GCs per 1k requests | GC µs per request | log lines per request | p99 ms | bare Fastify p99 ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows
  ].join('\n')
}

interface Check { verdict: 'PASS' | 'MISS' | 'SKIP', text: string }

function checks (comparisons: Comparison[]): Check[] {
  const out: Check[] = []
  for (const c of comparisons) {
    const scenario = SCENARIOS[c.scenario]
    const what = c.scenario === 'rest' ? 'REST shim vs bare' : `${c.scenario} vs ${c.comparator.target}`
    out.push({
      verdict: c.ratio >= scenario.minRatio ? 'PASS' : 'MISS',
      text: `${what} c=${c.connections}: ${ratio(c.ratio, scenario)} (target ≥ ${ratio(scenario.minRatio, scenario)})`
    })
  }
  const gatewayRuns = unique(comparisons.map(c => c.gateway))
  const atP99 = gatewayRuns.filter(r => r.connections === GOALS.p99AtConnections)
  if (atP99.length === 0) {
    out.push({ verdict: 'SKIP', text: `p99 at c=${GOALS.p99AtConnections} ≤ ${GOALS.p99Ms} ms: c=${GOALS.p99AtConnections} not measured` })
  }
  for (const run of atP99) {
    // Several processes behind nginx (the scale-out scenario) have no p99 target of their own.
    if (run.target.startsWith('cluster-')) continue
    const p99Ms = run.target === 'gateway-proxy' ? GOALS.p99ProxyMs : GOALS.p99Ms
    out.push({
      verdict: run.median.p99 <= p99Ms ? 'PASS' : 'MISS',
      text: `p99 at c=${run.connections}, ${run.label}: ${ms(run.median.p99)} ms (target ≤ ${p99Ms} ms)`
    })
    const bare = runs.get(`bare-rest@${run.connections}`)
    // In process only: a proxy's p99 includes its upstream's, which bare Fastify has none of.
    if (bare === undefined || run.target === 'gateway-proxy') continue
    out.push({
      verdict: run.median.p99 <= GOALS.p99OverBare * bare.median.p99 ? 'PASS' : 'MISS',
      text: `p99 at c=${run.connections} against bare Fastify's, ${run.label}: ${ms(run.median.p99)} vs ${ms(bare.median.p99)} ms (target ≤ ${GOALS.p99OverBare}×)`
    })
  }
  const allRuns = [...runs.values()]
  const failed = allRuns.filter(r => r.failures > 0)
  out.push({
    verdict: failed.length === 0 ? 'PASS' : 'MISS',
    text: failed.length === 0
      ? `zero errors: no failed request over ${allRuns.length} path runs`
      : `zero errors: ${failed.map(r => `${r.label} c=${r.connections}: ${r.failures}`).join('; ')}`
  })
  const once = gatewayRuns.filter(run => run.rounds.length < 2)
  if (once.length > 0) out.push({ verdict: 'SKIP', text: `RSS flat across rounds: needs ≥ 2 rounds (${once.map(r => `${r.label} c=${r.connections}`).join('; ')})` })
  for (const run of gatewayRuns.filter(r => r.rounds.length >= 2)) {
    const first = (run.rounds[0] as Round).rssMB
    const last = (run.rounds[run.rounds.length - 1] as Round).rssMB
    const allowed = Math.max(RSS_FLAT_MB, first * RSS_FLAT_SHARE)
    out.push({
      verdict: last - first <= allowed ? 'PASS' : 'MISS',
      text: `RSS flat across rounds, ${run.label} c=${run.connections}: ${first.toFixed(1)} → ${last.toFixed(1)} MB (growth ≤ ${allowed.toFixed(1)} MB)`
    })
  }
  return out
}

// ---------------------------------------------------------------------------------------
// Soak

interface SoakRun {
  path: PathKey
  label: string
  connections: number
  requests: number
  seconds: number
  reqPerSec: number
  p99: number
  /** Used heap after a full collection, before the soak's requests (after its warm-up) and after them, in MB. */
  heapStartMB: number
  heapEndMB: number
  /** (end − start) / start. */
  growth: number
  rssStartMB: number
  rssEndMB: number
  /** Failed requests, warm-up included. */
  failures: number
  round: Round
}

/** One gateway path under `requests` requests: the heap after a full collection before and after. */
async function soak (key: PathKey, connections: number, requests: number, warmup: number): Promise<SoakRun> {
  await probe(key)
  const target = targetOf(key)
  // Warmed up first, so what the first requests build once (compiled code, caches) is in the start figure.
  const warm = warmup > 0 ? await load(key, connections, warmup) : undefined
  const before = await meter(target, 'heap')
  const started = performance.now()
  const round = await load(key, connections, 0, requests)
  const seconds = (performance.now() - started) / 1000
  const after = await meter(target, 'heap')
  const mb = (bytes: number | undefined): number => (bytes ?? Number.NaN) / 1024 / 1024
  const run: SoakRun = {
    path: key,
    label: labelOf(PATHS[key]),
    connections,
    requests: round.requests,
    seconds,
    reqPerSec: round.requests / seconds,
    p99: round.p99,
    heapStartMB: mb(before.heapUsed),
    heapEndMB: mb(after.heapUsed),
    growth: ((after.heapUsed ?? Number.NaN) - (before.heapUsed ?? Number.NaN)) / (before.heapUsed ?? Number.NaN),
    rssStartMB: mb(before.rss),
    rssEndMB: mb(after.rss),
    failures: failuresOf(round) + (warm === undefined ? 0 : failuresOf(warm)),
    round
  }
  const per = (figure: number): number => figure / round.requests
  console.log(`\n── soak · ${run.label} · c=${connections} · ${int(run.requests)} requests in ${Math.round(seconds)} s after ${warmup} s warm-up ${'─'.repeat(8)}`)
  console.log(`   heap after a full collection ${run.heapStartMB.toFixed(1)} → ${run.heapEndMB.toFixed(1)} MB (${signedPct(run.growth)}, target ≤ ${Math.round(SOAK_HEAP_GROWTH * 100)}%: ${run.growth <= SOAK_HEAP_GROWTH ? 'PASS' : 'MISS'})` +
    `   RSS ${run.rssStartMB.toFixed(1)} → ${run.rssEndMB.toFixed(1)} MB   ${int(run.reqPerSec)} req/s   p99 ${ms(run.p99)} ms   failed ${run.failures}`)
  console.log(`   per request: CPU ${fixed(per(round.processCpuUs), 0)} µs, allocated ${fixed(per(round.allocatedBytes) / 1024, 1)} KB, ${fixed(per(round.gcs) * 1000, 2)} GCs per 1k (${fixed(per(round.gcUs), 1)} µs)`)
  return run
}

function soakTable (soaks: SoakRun[]): string {
  return [
    '| path | c | requests | req/s | heap after GC, start → end (MB) | growth | RSS start → end (MB) | allocated KB per request | failed |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...soaks.map(run => `| ${run.label} | ${run.connections} | ${int(run.requests)} | ${int(run.reqPerSec)} | ${run.heapStartMB.toFixed(1)} → ${run.heapEndMB.toFixed(1)} | ` +
      `${signedPct(run.growth)} | ${run.rssStartMB.toFixed(1)} → ${run.rssEndMB.toFixed(1)} | ${fixed(run.round.allocatedBytes / run.round.requests / 1024, 1)} | ${run.failures} |`)
  ].join('\n')
}

function soakChecks (soaks: SoakRun[]): Check[] {
  return soaks.flatMap(run => [
    {
      verdict: run.growth <= SOAK_HEAP_GROWTH ? 'PASS' as const : 'MISS' as const,
      text: `heap after GC over ${int(run.requests)} requests, ${run.label} c=${run.connections}: ${run.heapStartMB.toFixed(1)} → ${run.heapEndMB.toFixed(1)} MB, ${signedPct(run.growth)} (growth ≤ ${Math.round(SOAK_HEAP_GROWTH * 100)}%)`
    },
    {
      verdict: run.failures === 0 ? 'PASS' as const : 'MISS' as const,
      text: `zero errors over the soak of ${run.label}: ${run.failures} failed`
    }
  ])
}

// ---------------------------------------------------------------------------------------
// Main

async function main (): Promise<void> {
  const options = parseOptions()
  const scenarios = options.only
  const soakRequests = options.soak
  const soakConnections = Math.max(...options.connections)
  // A soak loads the gateway paths alone. The comparisons load both sides of each, and bare
  // Fastify at every concurrency, whose p99 stands beside every ratio.
  const pathKeys = soakRequests !== undefined
    ? unique(scenarios.map(s => SCENARIOS[s].gateway))
    : unique<PathKey>(['bare-rest', ...scenarios.flatMap(s => [SCENARIOS[s].gateway, SCENARIOS[s].comparator])])
  const needed = unique(pathKeys.map(k => PATHS[k].target))
  // Seconds of load per path run, each run once however many scenarios share it.
  const planned = new Map<string, number>()
  if (soakRequests !== undefined) {
    for (const key of pathKeys) planned.set(key, options.warmup + soakRequests / SOAK_MIN_REQ_PER_SEC)
  } else {
    for (const name of scenarios) {
      const plan = planOf(SCENARIOS[name], options)
      for (const key of [SCENARIOS[name].gateway, SCENARIOS[name].comparator, 'bare-rest' as const]) {
        for (const connections of plan.connections) planned.set(`${key}@${connections}`, plan.warmup + plan.rounds * plan.duration)
      }
    }
  }
  const estimateMs = [...planned.values()].reduce((a, b) => a + b, 0) * 1000 + needed.length * 3000
  const proxied = pathKeys.some(key => PATHS[key].target === 'gateway-proxy')
  // Every run is bounded: past this the runner gives up, and targets outlive it by a margin at most.
  const boundMs = estimateMs * 1.5 + 120_000
  setTimeout(() => { void shutdown(1, `\nFAIL the run exceeded its time bound of ${Math.round(boundMs / 1000)} s`) }, boundMs).unref()

  const cpu = cpus()[0]?.model ?? 'unknown CPU'
  console.log(`fastify-mcp-gateway benchmark${soakRequests !== undefined ? ': soak' : ''}`)
  console.log(`  node ${process.version}, ${cpu}, ${cpus().length} cores`)
  console.log(pinning
    ? `  pinning: targets on core 0 (taskset -c 0; the processes they start inherit it), load generator (autocannon, in this process) on core 1 (runner re-executed under taskset -c 1; now allowed: ${procStatus(process.pid, 'Cpus_allowed_list') ?? '?'})`
    : `  pinning: OFF (${hasTaskset ? `cores 0 and 1 not both allowed: ${[...cpuSet].join(',')}` : 'taskset not found'}); targets and load generator share cores, figures are noisier`)
  if (soakRequests !== undefined) {
    console.log(`  soak: ${int(soakRequests)} requests per gateway path (${pathKeys.join(', ')}) at c=${soakConnections}, after ${options.warmup} s warm-up; ` +
      `heap used after a full collection before and after (growth ≤ ${Math.round(SOAK_HEAP_GROWTH * 100)}%); ~${Math.ceil(estimateMs / 60_000)} min at most`)
  } else {
    console.log(`  scenarios: ${scenarios.join(', ')}; connections ${options.connections.join(', ')}; ${options.warmup} s warm-up + ${options.rounds} × ${options.duration} s per path` +
      `${scenarios.some(name => SCENARIOS[name].load !== undefined) ? ' (unless the scenario says otherwise)' : ''}; bare Fastify at every concurrency; ~${Math.ceil(estimateMs / 60_000)} min`)
  }
  console.log("  gateway: the command's server options; logger at level 'warn' (target gateway: per-request logs off) and at the default 'info' (target gateway-info, the info-… scenarios)")
  if (proxied) {
    console.log(`  proxy: upstream ${relative(ROOT, UPSTREAM)} (the math server's \`add\`, SDK v2 serveStdio), one stdio process per proxy mount or session, started by the proxy; ` +
      `gateway-proxy: the gateway from an mcpServers config, \`up\` (2025 sessions) and \`up-stateless\`, upstream shared by the mount's clients; ` +
      `supergateway ${supergatewayVersion()}: --outputTransport streamableHttp, --stateful (one upstream per session) or not (one per POST), --logLevel none, bound to 127.0.0.1 by bench/targets/external-hook.ts`)
    console.log(`  proxy load: tools/call add ${JSON.stringify(ADDENDS)}, headers mcp-protocol-version ${LEGACY_PROTOCOL} (+ mcp-session-id in a session); the answer must hold '${SUM_TEXT}'`)
  }
  console.log(`  latency resolution: 1 ms (autocannon); a failed request is an error, a timeout, a non-2xx or a 2xx body without the expected answer ('${GREETING}'${proxied ? `, or '${SUM_TEXT}' through a proxy` : ''})`)
  console.log('  cpu srv/gen: CPU time of the target (with the processes it started) and of the load generator over wall time, in % of one core; RSS also counts the started processes')
  console.log("  per request, measured in the target's own process (bench/targets/meter.ts): CPU time (process.cpuUsage), bytes allocated on the JS heap " +
    "(summed from V8's GC statistics, v8.GCProfiler: what each collection freed plus the heap's growth) and garbage collections; 'with children' is CPU time from /proc, the processes it started included")

  const startedTargets: Array<{ name: TargetName, args: string[], pid: number, cpus: string, startupMs: number }> = []
  const nameWidth = Math.max(...needed.map(name => name.length))
  for (const name of needed) {
    const target = await startTarget(name, boundMs + 60_000)
    startedTargets.push({ name, args: targetArgs(name), pid: target.pid, cpus: target.cpus, startupMs: Math.round(target.startupMs) })
    console.log(`  target ${name.padEnd(nameWidth)} pid ${target.pid} on 127.0.0.1:${target.port}, cpus ${target.cpus}, up in ${Math.round(target.startupMs)} ms`)
  }

  // Fail fast: every path answers correctly before minutes of load are spent.
  for (const key of pathKeys) await probe(key)
  console.log(`  probes: ${pathKeys.length} paths answered 200 with the expected answer`)
  for (const target of targets.values()) {
    noteDescendants(target)
    if (target.descendants.size > 0) console.log(`  target ${target.name} started pids ${[...target.descendants.keys()].join(', ')}`)
  }

  const described = {
    date: new Date().toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpu,
    cores: cpus().length,
    pinning,
    loadgen: { tool: 'autocannon', process: 'runner', cpus: procStatus(process.pid, 'Cpus_allowed_list') },
    options,
    targets: startedTargets
  }

  if (soakRequests !== undefined) {
    const soaks: SoakRun[] = []
    for (const key of pathKeys) soaks.push(await soak(key, soakConnections, soakRequests, options.warmup))
    const table = soakTable(soaks)
    console.log('\n## Soak\n')
    console.log(table)
    const verdicts = soakChecks(soaks)
    console.log('\nTargets (informational):')
    for (const check of verdicts) console.log(`  ${check.verdict}  ${check.text}`)
    const failures = soaks.reduce((total, run) => total + run.failures, 0)
    const file = writeResults({ ...described, mode: 'soak', goals: { heapGrowth: SOAK_HEAP_GROWTH }, soaks, checks: verdicts, markdown: table, failures })
    console.log(`\nraw results: ${relative(process.cwd(), file)}`)
    if (failures > 0) await shutdown(1, `\n!!!!! FAIL ${failures} requests failed: the figures above are not valid !!!!!`)
    await shutdown(0)
    return
  }

  const comparisons: Comparison[] = []
  for (const name of scenarios) {
    const scenario = SCENARIOS[name]
    const plan = planOf(scenario, options)
    for (const connections of plan.connections) {
      const bare = await measure('bare-rest', connections, plan)
      const gateway = await measure(scenario.gateway, connections, plan)
      const comparator = await measure(scenario.comparator, connections, plan)
      const comparison = { scenario: name, connections, plan, gateway, comparator, bare, ratio: gateway.median.reqPerSec / comparator.median.reqPerSec }
      comparisons.push(comparison)
      printComparison(comparison)
    }
  }

  const table = markdownTable(comparisons)
  console.log('\n## Results\n')
  console.log(table)
  const perRequestMarkdown = perRequestTable(comparisons)
  console.log('\n## Per request, in the target\n')
  console.log(perRequestMarkdown)
  const verdicts = checks(comparisons)
  console.log('\nTargets (informational):')
  for (const check of verdicts) console.log(`  ${check.verdict}  ${check.text}`)

  const failures = [...runs.values()].reduce((total, r) => total + r.failures, 0)
  const file = writeResults({
    ...described,
    goals: { ...GOALS, rssFlatMB: RSS_FLAT_MB, rssFlatShare: RSS_FLAT_SHARE },
    ...(proxied && { proxy: { upstream: relative(ROOT, UPSTREAM), supergateway: supergatewayVersion(), call: addCall(1), expect: SUM_TEXT } }),
    comparisons: comparisons.map(c => ({ scenario: c.scenario, connections: c.connections, plan: c.plan, gateway: c.gateway.path, comparator: c.comparator.path, ratio: c.ratio, bareP99: c.bare.median.p99 })),
    runs: [...runs.values()].map(run => ({ ...run, perRequest: perRequest(run) })),
    checks: verdicts,
    markdown: table,
    perRequestMarkdown,
    failures
  })
  console.log(`\nraw results: ${relative(process.cwd(), file)}`)

  if (failures > 0) {
    await shutdown(1, `\n!!!!! FAIL ${failures} requests failed: the figures above are not valid !!!!!`)
  }
  await shutdown(0)
}

/** Writes one run's raw results under bench/results; returns the file. */
function writeResults (body: Record<string, unknown>): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `${new Date().toISOString().replace(/:/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(body, null, 2) + '\n')
  return file
}

// ---------------------------------------------------------------------------------------
// Helpers

function allowedCpus (): Set<number> {
  const list = procStatus('self', 'Cpus_allowed_list')
  const set = new Set<number>()
  if (list === undefined) return set
  for (const part of list.split(',')) {
    const [from, to] = part.split('-').map(Number)
    if (from === undefined || Number.isNaN(from)) continue
    for (let cpu = from; cpu <= (to ?? from); cpu++) set.add(cpu)
  }
  return set
}

function procStatus (pid: number | 'self', field: string): string | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find(l => l.startsWith(`${field}:`))
    return line?.slice(field.length + 1).trim()
  } catch {
    return undefined
  }
}

/** The fields of /proc/<pid>/stat after the command name (so state is [0]), or undefined once it is gone. */
function procStat (pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may itself hold spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** Start time of a process since boot, in clock ticks: with the pid, it names one process. */
const startTime = (pid: number): string | undefined => procStat(pid)?.[19]

/** Every process below `pid` alive now, from the kernel's per-thread child lists. */
function descendantsOf (pid: number): number[] {
  const found: number[] = []
  const queue = [pid]
  for (let parent = queue.shift(); parent !== undefined; parent = queue.shift()) {
    let tasks: string[]
    try {
      tasks = readdirSync(`/proc/${parent}/task`)
    } catch {
      continue
    }
    for (const task of tasks) {
      let list = ''
      try {
        list = readFileSync(`/proc/${parent}/task/${task}/children`, 'utf8')
      } catch {}
      for (const child of list.split(' ').filter(Boolean).map(Number)) {
        found.push(child)
        queue.push(child)
      }
    }
  }
  return found
}

/** RSS of a process and every process below it, in MB. */
function treeRssMB (pid: number): number {
  let kB = 0
  for (const member of [pid, ...descendantsOf(pid)]) {
    const rss = Number.parseInt(procStatus(member, 'VmRSS') ?? '', 10)
    if (member === pid && Number.isNaN(rss)) return Number.NaN
    if (!Number.isNaN(rss)) kB += rss
  }
  return kB / 1024
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100

/**
 * CPU time, in ms, a process and every process below it have used since they started: user
 * and system time of each live one, plus that of the children each has already waited for
 * (cutime, cstime), so a short-lived upstream process still counts once it has exited.
 */
function treeCpuMs (pid: number): number {
  let ticks = 0
  for (const member of [pid, ...descendantsOf(pid)]) {
    const fields = procStat(member)
    if (fields === undefined) {
      if (member === pid) return Number.NaN
      continue
    }
    ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])
  }
  return ticks / CLOCK_TICKS * 1000
}

function supergatewayVersion (): string {
  try {
    return (JSON.parse(readFileSync(join(SUPERGATEWAY, 'package.json'), 'utf8')) as { version: string }).version
  } catch {
    return '?'
  }
}

/** Busy and total jiffies of one core, from /proc/stat. */
function coreTimes (cpu: number): { busy: number, total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n').find(l => l.startsWith(`cpu${cpu} `))
    if (line === undefined) return undefined
    // user nice system idle iowait irq softirq steal: guest time is already inside user.
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number)
    const total = ticks.reduce((a, b) => a + b, 0)
    return { busy: total - (ticks[3] ?? 0) - (ticks[4] ?? 0), total }
  } catch {
    return undefined
  }
}

function busyShare (from: { busy: number, total: number } | undefined, to: { busy: number, total: number } | undefined): number {
  if (from === undefined || to === undefined || to.total === from.total) return Number.NaN
  return (to.busy - from.busy) / (to.total - from.total) * 100
}

function gitCommit (): string | undefined {
  const res = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' })
  return res.status === 0 ? res.stdout.trim() : undefined
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

function sum (rounds: Round[], field: 'errors' | 'timeouts' | 'non2xx' | 'mismatches'): number {
  return rounds.reduce((total, r) => total + r[field], 0)
}

function mergeCodes (rounds: Round[]): Record<string, number> {
  const codes: Record<string, number> = {}
  for (const round of rounds) for (const [code, count] of Object.entries(round.statusCodes)) codes[code] = (codes[code] ?? 0) + count
  return codes
}

function unique<T> (items: T[]): T[] {
  return [...new Set(items)]
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const int = (n: number): string => Math.round(n).toLocaleString('en-US')
const ms = (n: number): string => n < 1 ? '<1' : String(Math.round(n))
const pct = (n: number): string => Number.isNaN(n) ? '?' : `${Math.round(n)}%`
const clip = (text: string): string => text.length > 300 ? `${text.slice(0, 300)}…` : text
const signedPct = (share: number): string => Number.isFinite(share) ? `${share >= 0 ? '+' : ''}${(share * 100).toFixed(1)}%` : '?'
const fixed = (n: number, digits: number): string => Number.isFinite(n) ? n.toFixed(digits) : '?'
const ratio = (n: number, scenario: Scenario): string => scenario.minRatio >= 1 ? `${n.toFixed(2)}×` : n.toFixed(2)

// ---------------------------------------------------------------------------------------
// Scale-out (additive): a 2025 session's tools/call through two instances sharing Redis, against
// one instance with its state in memory, both behind the same nginx (the README's config,
// round-robin), so the session's requests alternate between the two instances. Every process
// of a target (instances, nginx, redis-server) runs on the target's core: the ratio is what
// each instance keeps of its in-memory throughput once its state is in Redis (target ≥ 0.70).
// The Redis cost per round (commands, redis-server CPU) is printed by the target as
// `[cluster-redis] redis: …`; the tree CPU per request (per-request table) includes it.
// Select with `--only cluster-session` (or `--only cluster`).

const CLUSTER_GOAL = 0.70
const CLUSTER_SESSION_PATH = (target: string): PathSpec => ({
  target: target as TargetName,
  what: 'POST /greet/mcp via nginx (2025, in a session)',
  url: '/greet/mcp',
  headers: { ...MCP_HEADERS, 'mcp-protocol-version': LEGACY_PROTOCOL },
  body: LEGACY_BODY,
  expect: GREETING,
  session: legacyCall
})
Object.assign(PATHS, {
  'cluster-redis-session': CLUSTER_SESSION_PATH('cluster-redis'),
  'cluster-memory-session': CLUSTER_SESSION_PATH('cluster-memory')
})
Object.assign(SCENARIOS, {
  'cluster-session': {
    gateway: 'cluster-redis-session' as PathKey,
    comparator: 'cluster-memory-session' as PathKey,
    comparatorName: 'one instance in memory behind the same nginx',
    note: 'cluster-redis: two instances (dist/src/server.js --redis) sharing one redis-server behind nginx round-robin, the session\'s requests alternating between them; ' +
      'cluster-memory: one instance, state in memory, behind the same nginx. Every process of a target on its core; the ratio is per-instance efficiency; Redis cost per round in the [cluster-redis] lines',
    minRatio: CLUSTER_GOAL
  } satisfies Scenario
})
Object.assign(SCENARIO_PATH, { 'cluster-session': 'MCP 2025 session `/greet/mcp`, two instances sharing Redis vs one in memory, via nginx' })

// ---------------------------------------------------------------------------------------
// Entry: last, so every module-level constant above is initialised before main() runs.

if (pinning && !reexecuted) {
  reexecPinned()
} else {
  // Last resort for paths that skip shutdown(): whatever is still alive is killed outright.
  process.on('exit', () => {
    for (const child of children) if (!exited(child)) child.kill('SIGKILL')
    for (const { pid } of leftovers()) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
  })
  process.on('SIGINT', () => { void shutdown(130, '\ninterrupted: stopping targets') })
  process.on('SIGTERM', () => { void shutdown(143, '\nterminated: stopping targets') })
  process.on('unhandledRejection', err => { void shutdown(1, `\nFAIL unhandled rejection: ${(err as Error)?.stack ?? String(err)}`) })
  main().catch(async (err: unknown) => {
    await shutdown(1, err instanceof BenchError ? `\nFAIL ${err.message}` : `\nFAIL unexpected error: ${(err as Error).stack ?? String(err)}`)
  })
}
