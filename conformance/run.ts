/**
 * `npm run conformance`: the official MCP conformance suite against the gateway.
 *
 * Starts the gateway in this process (the machine's Node), then drives it with the suite's
 * own CLI under Node 22, which the suite needs (it imports `fs.globSync`). Node 22 comes
 * from the npm registry (`node-<platform>-<arch>`) into `.cache/`, once; both suite lines
 * are pinned devDependencies (`conformance-0.1`, `conformance-0.2`).
 *
 * The gateway is built from a config, as a user would write one (`src/config.ts`). Runs, on
 * both suite lines and both spec versions:
 * - every server scenario (`--suite all`; with a spec version that leaves out the extension
 *   scenarios) against the conformance fixture (`test/fixtures/conformance/server.ts`),
 *   with 2025-era sessions, reached three ways:
 *   - in process, mounted at `/conformance`;
 *   - as a stdio upstream, `conformance-stdio`: a child process running
 *     `test/fixtures/conformance/stdio.ts`;
 *   - as a Streamable HTTP upstream, `conformance-http`: a second, plain gateway that
 *     serves the fixture in process on its own port;
 * - the scenarios that name no tool or prompt against the aggregated endpoint `/mcp`,
 *   where every name carries its server's prefix (see `AGGREGATE_SKIPPED`);
 * - the generic scenarios against the built-in `greet` server, with sessions and with
 *   `stateless: true`, so a plain server is covered too;
 * - every server scenario through `/mcp` of a third gateway that mounts only the fixture,
 *   un-namespaced (`"namespace": false`), so `/mcp` serves its tools by their own names;
 *   run once the gateway has that field (see `flatGateway`);
 * - every client scenario but `auth/*` (see `CLIENT_NOT_RUN`): the suite starts a server of
 *   its own and runs `conformance/client.ts`, which starts a gateway with that server as
 *   its upstream and drives it over REST or as an MCP client (see that file), so the
 *   gateway is checked as a client too.
 *
 * Each scenario's `checks.json` is kept under `conformance/results/` (a client scenario's
 * beside the driver's `stdout.txt` and `stderr.txt`). Prints one `N passed, M failed` line per
 * run, the server and client figures, and a total; exits 1 if any scenario failed.
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import gateway from '../src/app.js'
import { parseConfig, type GatewayConfig } from '../src/config.js'
import { createConformanceServer } from '../test/fixtures/conformance/server.js'
import { SCENARIOS, type Via } from './client.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const NODE22_VERSION = '22.23.3'
const SCENARIO_TIMEOUT_MS = 60_000

/**
 * Runs of one lane go one after another; the lanes of a phase run at once, each with its
 * own suite processes. An upstream's shared connection sends a question (sampling,
 * elicitation, roots) or a log message to the one downstream client with a request in
 * flight, and refuses to guess when there are several: two suite processes on one
 * upstream at once would fail each other's scenarios, so each upstream has its own lane.
 * The aggregated endpoint reaches every server (it gathers resource and prompt lists from
 * all of them, sets the log level on all, and reads a resource from the last server that
 * lists it, here `conformance-http`), so it runs last, with no other lane on its gateway.
 * The un-namespaced `/mcp` (`flat`) is a gateway of its own, and each client scenario
 * starts one, so those lanes share nothing with the others. The client lane runs in the
 * second phase, under the lighter load: `sse-retry` times the gateway's reconnection to
 * within 200 ms.
 */
type Lane = 'fixture' | 'greet' | 'stdio' | 'http' | 'flat' | 'aggregate' | 'client'
const PHASES: Lane[][] = [['fixture', 'greet', 'stdio', 'http', 'flat'], ['aggregate', 'client']]

/** The gateways the server runs reach: the main one, and the one that mounts only the fixture, un-namespaced. */
type Target = 'main' | 'flat'

interface BaseRun {
  label: string
  suite: 'conformance-0.1' | 'conformance-0.2'
  specVersion?: string
  lane: Lane
  /** How many scenarios run at once. Default 1. */
  concurrency?: number
  /** Scenarios of this suite line and spec version left out on purpose, with the reason. */
  skipped?: Record<string, string>
}

/** The suite's `server` mode against one endpoint of a gateway of ours. */
interface ServerRun extends BaseRun {
  mode: 'server'
  /** Default `main`. */
  target?: Target
  path: string
  /** The scenarios to run one by one, or `all` for the whole suite in one invocation. */
  scenarios: string[] | 'all'
}

/** The suite's `client` mode: each scenario run once per way the driver reaches the gateway. */
interface ClientRun extends BaseRun {
  mode: 'client'
  /** `via` undefined: a scenario the driver does not know, which fails and so shows up. */
  cases: Array<{ scenario: string, via: Via | undefined }>
}

type Run = ServerRun | ClientRun

/** The generic scenarios: what any plain MCP server must pass, whatever its tools. */
const LEGACY_GENERIC = ['server-initialize', 'ping', 'tools-list', 'logging-set-level', 'dns-rebinding-protection']
const MODERN_GENERIC = ['tools-list', 'http-header-validation', 'dns-rebinding-protection', 'server-sse-multiple-streams']

/** Every server scenario against the fixture at `path`, on both suite lines and both spec versions. */
function fixtureRuns (name: string, path: string, lane: Lane, target: Target = 'main'): ServerRun[] {
  return [
    { mode: 'server', label: `0.1.16 ${name} ${path}`, suite: 'conformance-0.1', target, path, scenarios: 'all', lane },
    { mode: 'server', label: `0.2.0-alpha.12 @2025-11-25 ${name} ${path}`, suite: 'conformance-0.2', specVersion: '2025-11-25', target, path, scenarios: 'all', lane },
    { mode: 'server', label: `0.2.0-alpha.12 @2026-07-28 ${name} ${path}`, suite: 'conformance-0.2', specVersion: '2026-07-28', target, path, scenarios: 'all', lane }
  ]
}

const PREFIXED = '/mcp serves it as conformance_<name>'
const VACUOUS = 'so on /mcp it would pass vacuously, on the not-found error'

/**
 * The fixture's scenarios left out on `/mcp`: each calls, gets or completes a tool or prompt
 * of the fixture by its exact name (`test_simple_text`), which the aggregate serves under
 * its server's prefix (`conformance_test_simple_text`). Found by running every scenario
 * against `/mcp` once and reading each failure and each pass. Every other scenario runs,
 * `http-custom-header-server-validation` included: it finds its tool by the `x-mcp-header`
 * in the tool's schema, not by name.
 */
const AGGREGATE_SKIPPED: Record<string, string> = {
  ...Object.fromEntries([
    'tools-call-simple-text', 'tools-call-image', 'tools-call-audio', 'tools-call-embedded-resource',
    'tools-call-mixed-content', 'tools-call-with-logging', 'tools-call-error', 'tools-call-with-progress',
    'tools-call-sampling', 'tools-call-elicitation', 'elicitation-sep1034-defaults', 'elicitation-sep1330-enums',
    'input-required-result-basic-elicitation', 'input-required-result-basic-sampling',
    'input-required-result-basic-list-roots', 'input-required-result-request-state',
    'input-required-result-tampered-state', 'input-required-result-multiple-input-requests',
    'input-required-result-multi-round', 'input-required-result-result-type', 'input-required-result-capability-check'
  ].map(scenario => [scenario, `calls a test_* tool by its exact name; ${PREFIXED}`])),
  ...Object.fromEntries(['prompts-get-simple', 'prompts-get-with-args', 'prompts-get-embedded-resource', 'prompts-get-with-image', 'input-required-result-non-tool-request']
    .map(scenario => [scenario, `gets a test_* prompt by its exact name; ${PREFIXED}`])),
  ...Object.fromEntries(['input-required-result-ignore-extra-params', 'input-required-result-missing-input-response', 'input-required-result-validate-input']
    .map(scenario => [scenario, `calls test_input_required_result_elicitation by its exact name, ${VACUOUS}`])),
  'completion-complete': `completes an argument of test_prompt_with_arguments by the prompt's exact name; ${PREFIXED}`,
  'json-schema-2020-12': `looks for json_schema_2020_12_tool in tools/list by its exact name; ${PREFIXED}`,
  'server-sse-polling': `calls test_reconnection by its exact name, ${VACUOUS} (a JSON answer, to which its SSE checks do not apply)`,
  'server-stateless': 'probes test_missing_capability, test_streaming_elicitation, test_logging_tool and test_trigger_* by their exact names; /mcp serves them as conformance_<name>'
}

/** The fixture runs against `/mcp`, less `AGGREGATE_SKIPPED`; `all` holds each run's scenarios by `suiteKey`. */
function aggregateRuns (all: Record<string, string[]>): ServerRun[] {
  return fixtureRuns('aggregate', '/mcp', 'aggregate').map(run => {
    const scenarios = all[suiteKey(run)] ?? []
    return {
      ...run,
      scenarios: scenarios.filter(scenario => AGGREGATE_SKIPPED[scenario] === undefined),
      // What is left asks the client nothing and logs nothing, so no message of one
      // scenario can be taken for another's (see `Lane`): they may run side by side.
      concurrency: 4,
      skipped: Object.fromEntries(scenarios.flatMap(scenario => AGGREGATE_SKIPPED[scenario] === undefined ? [] : [[scenario, AGGREGATE_SKIPPED[scenario]]]))
    }
  })
}

const RUNS: ServerRun[] = [
  ...fixtureRuns('fixture', '/conformance/mcp', 'fixture'),
  ...['/greet/mcp', '/greet-stateless/mcp'].flatMap(path => [
    { mode: 'server', label: `0.1.16 ${path}`, suite: 'conformance-0.1', path, scenarios: LEGACY_GENERIC, lane: 'greet' } satisfies ServerRun,
    { mode: 'server', label: `0.2.0-alpha.12 @2025-11-25 ${path}`, suite: 'conformance-0.2', specVersion: '2025-11-25', path, scenarios: [...LEGACY_GENERIC, 'server-session-lifecycle'], lane: 'greet' } satisfies ServerRun,
    { mode: 'server', label: `0.2.0-alpha.12 @2026-07-28 ${path}`, suite: 'conformance-0.2', specVersion: '2026-07-28', path, scenarios: MODERN_GENERIC, lane: 'greet' } satisfies ServerRun
  ]),
  // Through an upstream, `server-sse-polling` passes with fewer checks than in process (3
  // rather than 10 at 2025-11-25): the fixture's `ctx.http.closeSSE()` closes the upstream's
  // stream to the gateway (there is none on stdio), which the gateway's client resumes, so
  // the downstream POST is answered as JSON and the suite's resume checks do not apply.
  // Inherent to a relay.
  ...fixtureRuns('stdio upstream', '/conformance-stdio/mcp', 'stdio'),
  ...fixtureRuns('http upstream', '/conformance-http/mcp', 'http')
]

/** The fixture's whole server suite through `/mcp` of the gateway that mounts only the fixture, un-namespaced. */
const FLAT_RUNS: ServerRun[] = fixtureRuns('un-namespaced', '/mcp', 'flat', 'flat')

/**
 * Client scenarios not run, by name prefix, with the reason. They check a client's OAuth
 * flow towards a server that demands it; the gateway sends an upstream only the static
 * `headers` of its config entry, and OAuth towards upstreams is a later issue.
 */
const CLIENT_NOT_RUN: Record<string, string> = {
  'auth/': 'OAuth towards upstreams is a later issue: the gateway sends an upstream only the static headers of its config'
}

/** The client runs: per suite line and spec version, each client scenario the suite lists, once per way (`SCENARIOS` in client.ts). */
function clientRuns (node: string): ClientRun[] {
  const require = createRequire(import.meta.url)
  const runs: Array<Pick<ClientRun, 'label' | 'suite' | 'specVersion'>> = [
    { label: '0.1.16 client', suite: 'conformance-0.1' },
    { label: '0.2.0-alpha.12 @2025-11-25 client', suite: 'conformance-0.2', specVersion: '2025-11-25' },
    { label: '0.2.0-alpha.12 @2026-07-28 client', suite: 'conformance-0.2', specVersion: '2026-07-28' }
  ]
  return runs.map(run => {
    const cli = join(dirname(require.resolve(`${run.suite}/package.json`)), 'dist', 'index.js')
    const output = execFileSync(node, [cli, 'list', '--client', ...(run.specVersion === undefined ? [] : ['--spec-version', run.specVersion])], { encoding: 'utf8' })
    const listed = [...output.matchAll(/^\s+- (\S+)/gm)].map(match => match[1] as string)
    const reasonFor = (scenario: string): string | undefined => Object.entries(CLIENT_NOT_RUN).find(([prefix]) => scenario.startsWith(prefix))?.[1]
    return {
      ...run,
      mode: 'client',
      lane: 'client',
      // Each case starts a gateway of its own, so they may run side by side; two at a time
      // keeps `sse-retry`'s timing honest on two cores.
      concurrency: 2,
      cases: listed.filter(scenario => reasonFor(scenario) === undefined)
        .flatMap(scenario => (SCENARIOS[scenario]?.ways ?? [undefined]).map(via => ({ scenario, via }))),
      skipped: Object.fromEntries(listed.flatMap(scenario => {
        const reason = reasonFor(scenario)
        return reason === undefined ? [] : [[scenario, reason]]
      }))
    }
  })
}

/** Node 22 for the suite, installed from the npm registry into `.cache/` on first use. */
function node22 (): string {
  const pkg = `node-${process.platform}-${process.arch}`
  const prefix = join(root, '.cache', `node-${NODE22_VERSION}`)
  const bin = join(prefix, 'node_modules', pkg, 'bin', 'node')
  if (!existsSync(bin)) {
    process.stdout.write(`installing ${pkg}@${NODE22_VERSION} into ${prefix}\n`)
    mkdirSync(prefix, { recursive: true })
    execFileSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `${pkg}@${NODE22_VERSION}`], { stdio: 'inherit' })
  }
  const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()
  if (version !== `v${NODE22_VERSION}`) throw new Error(`expected Node v${NODE22_VERSION} at ${bin}, got ${version}`)
  return bin
}

interface Outcome { scenario: string, passed: boolean, summary: string, failures: string[] }

/**
 * The command the suite's client mode runs, the scenario server's URL appended: the driver
 * under the machine's Node. The suite splits it on spaces and hands it to a shell, so
 * `exec` makes the driver the process the suite's timeout kills.
 */
function driverCommand (via: Via | undefined): string {
  const command = ['exec', process.execPath, '--import', 'tsx', join(root, 'conformance', 'client.ts'), ...(via === undefined ? [] : ['--via', via])]
  if (command.some(part => /\s/.test(part))) throw new Error(`the suite splits its client command on spaces, so it cannot run ${command.join(' ')}`)
  return command.join(' ')
}

/** Runs the suite CLI once: one scenario, or the whole suite with `all`, against a server (`url`) or the driver (`via`). */
function runSuite (node: string, cli: string, run: Run, target: { url: string } | { via: Via | undefined }, scenario: string, outputDir: string): Promise<{ passed: boolean, summary: string, output: string }> {
  const args = [cli, run.mode, ...('url' in target ? ['--url', target.url] : ['--command', driverCommand(target.via)]), '-o', outputDir, ...(scenario === 'all' ? ['--suite', 'all'] : ['--scenario', scenario])]
  // 0.1.16 has no --timeout in server mode; the kill below bounds every scenario either way.
  // In client mode it bounds the driver's whole run.
  if (run.suite === 'conformance-0.2' || run.mode === 'client') args.push('--timeout', String(SCENARIO_TIMEOUT_MS))
  if (run.specVersion !== undefined) args.push('--spec-version', run.specVersion)
  return new Promise((resolve, reject) => {
    // From the root, where the driver's `--import tsx` resolves.
    const child = spawn(node, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } })
    let output = ''
    child.stdout.on('data', chunk => { output += chunk })
    child.stderr.on('data', chunk => { output += chunk })
    // A hung scenario must not hang CI: the suite's own timeout applies per request, this one per scenario.
    const killer = setTimeout(() => { child.kill('SIGKILL') }, scenario === 'all' ? SCENARIO_TIMEOUT_MS * 10 : SCENARIO_TIMEOUT_MS * 2).unref()
    child.once('error', reject)
    child.once('exit', code => {
      clearTimeout(killer)
      const summary = /Passed: .*/.exec(output)?.[0] ?? 'no summary'
      resolve({ passed: code === 0, summary, output })
    })
  })
}

interface Check { id: string, status: string, errorMessage?: string }

/** A failed check as one line: its id and the first line of its message. */
function oneLine (check: Check): string {
  const message = (check.errorMessage ?? 'no message').split('\n')[0] as string
  return `${check.id}: ${message.length > 300 ? `${message.slice(0, 300)}...` : message}`
}

/**
 * Per-scenario outcomes of a suite invocation, read from the `checks.json` each scenario
 * leaves in its own folder: a scenario passes when none of its checks failed. Warnings are
 * listed apart: the client mode counts them as failures, the server mode does not.
 */
function outcomesIn (outputDir: string): Array<Outcome & { warnings: string[], folder: string }> {
  if (!existsSync(outputDir)) return []
  return readdirSync(outputDir).sort().map(folder => {
    const checks = JSON.parse(readFileSync(join(outputDir, folder, 'checks.json'), 'utf8')) as Check[]
    const failed = checks.filter(check => check.status === 'FAILURE')
    const warnings = checks.filter(check => check.status === 'WARNING')
    const scenario = folder.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T.*$/, '')
    return {
      scenario,
      folder: join(outputDir, folder),
      passed: failed.length === 0,
      summary: `${checks.length - failed.length - warnings.length} passed, ${failed.length} failed, ${warnings.length} warnings`,
      failures: failed.map(oneLine),
      warnings: warnings.map(check => `(warning) ${oneLine(check)}`)
    }
  })
}

/**
 * One client case: the suite's verdict (its exit code: no failed check, no warning, no
 * timeout, the driver exited 0), with the failed checks and, when the driver failed, its
 * own reason from the `stderr.txt` the suite keeps.
 */
async function clientCase (node: string, cli: string, run: ClientRun, scenario: string, via: Via | undefined, caseDir: string): Promise<Outcome> {
  const result = await runSuite(node, cli, run, { via }, scenario, caseDir)
  const [found] = outcomesIn(caseDir)
  const failures = [...found?.failures ?? [], ...found?.warnings ?? []]
  if (!result.passed) {
    const stderr = found === undefined ? '' : readFileSync(join(found.folder, 'stderr.txt'), 'utf8')
    const reason = stderr.split('\n').find(line => / failed: |^no drive|^usage|held by/.test(line))
    if (reason !== undefined) failures.push(`(driver) ${reason.length > 300 ? `${reason.slice(0, 300)}...` : reason}`)
    for (const line of result.output.split('\n')) if (/TIMED OUT|EXITED WITH ERROR|Client test error/.test(line)) failures.push(`(suite) ${line.trim()}`)
  }
  return { scenario: via === undefined ? scenario : `${scenario} (${via})`, passed: result.passed, summary: found?.summary ?? result.summary, failures }
}

/** One run's scenarios; returns its printed report and counts. */
async function execute (node: string, run: Run, ports: Record<Target, number>, resultsDir: string): Promise<{ report: string, passed: number, failed: number }> {
  const require = createRequire(import.meta.url)
  const cli = join(dirname(require.resolve(`${run.suite}/package.json`)), 'dist', 'index.js')
  const runDir = join(resultsDir, run.label.replaceAll(/[^A-Za-z0-9.-]+/g, '_'))
  const outcomes: Outcome[] = []
  if (run.mode === 'server' && run.scenarios === 'all') {
    const url = `http://localhost:${ports[run.target ?? 'main']}${run.path}`
    const result = await runSuite(node, cli, run, { url }, 'all', runDir)
    outcomes.push(...outcomesIn(runDir))
    if (outcomes.length === 0 || (!result.passed && outcomes.every(outcome => outcome.passed))) {
      // The CLI failed without a failed scenario to show for it: count that as a failure.
      outcomes.push({ scenario: '(suite run)', passed: false, summary: result.output.split('\n').slice(-5).join(' | '), failures: [] })
    }
  } else {
    const jobs: Array<() => Promise<Outcome>> = run.mode === 'client'
      ? run.cases.map(({ scenario, via }) => async () => await clientCase(node, cli, run, scenario, via, join(runDir, `${scenario}${via === undefined ? '' : `-${via}`}`.replaceAll('/', '_'))))
      : (run.scenarios as string[]).map(scenario => async () => {
          const url = `http://localhost:${ports[run.target ?? 'main']}${run.path}`
          const scenarioDir = join(runDir, scenario)
          const result = await runSuite(node, cli, run, { url }, scenario, scenarioDir)
          const failures = outcomesIn(scenarioDir).flatMap(outcome => outcome.failures)
          return {
            scenario,
            passed: result.passed,
            summary: result.summary,
            failures: failures.length > 0 || result.passed ? failures : result.output.split('\n').filter(line => /FAILURE|Error|error:/.test(line))
          }
        })
    // A pool of `concurrency` workers; outcomes keep the order of the jobs.
    const results: Outcome[] = []
    let next = 0
    await Promise.all(Array.from({ length: Math.min(run.concurrency ?? 1, jobs.length) }, async () => {
      while (next < jobs.length) {
        const index = next++
        results[index] = await (jobs[index] as () => Promise<Outcome>)()
      }
    }))
    outcomes.push(...results)
  }
  let passed = 0
  let failed = 0
  let report = ''
  for (const outcome of outcomes) {
    if (outcome.passed) passed++
    else failed++
    report += `  ${outcome.passed ? 'PASS' : 'FAIL'}  ${outcome.scenario.padEnd(45)} ${outcome.summary}\n`
    for (const failure of outcome.failures) report += `          ${failure}\n`
  }
  const skipped = Object.entries(run.skipped ?? {})
  if (run.mode === 'server') {
    for (const [scenario, reason] of skipped) report += `  SKIP  ${scenario.padEnd(45)} ${reason}\n`
  } else {
    // Client scenarios are left out by family, for one reason each: one line per reason.
    for (const reason of new Set(Object.values(run.skipped ?? {}))) {
      const scenarios = skipped.flatMap(([scenario, given]) => given === reason ? [scenario] : [])
      report += `  NOT RUN  ${scenarios.length} scenarios: ${reason}\n`
      const lines = scenarios.reduce<string[]>((wrapped, scenario) => {
        const last = wrapped.at(-1)
        if (last === undefined) return [scenario]
        if (last.length + scenario.length < 100) wrapped[wrapped.length - 1] = `${last}, ${scenario}`
        else wrapped.splice(-1, 1, `${last},`, scenario)
        return wrapped
      }, [])
      for (const line of lines) report += `          ${line}\n`
    }
  }
  report += `${run.label}: ${passed} passed, ${failed} failed${run.skipped === undefined ? '' : `, ${skipped.length} ${run.mode === 'client' ? 'not run' : 'skipped'}`}\n\n`
  return { report, passed, failed }
}

const suiteKey = (run: Pick<Run, 'suite' | 'specVersion'>): string => `${run.suite}@${run.specVersion ?? ''}`

/** The scenarios `--suite all` runs on each suite line and spec version (by `suiteKey`), from the suite's own list. */
function suiteScenarios (node: string): Record<string, string[]> {
  const require = createRequire(import.meta.url)
  const list = (suite: Run['suite'], specVersion?: string): [string, string[]] => {
    const cli = join(dirname(require.resolve(`${suite}/package.json`)), 'dist', 'index.js')
    const output = execFileSync(node, [cli, 'list', '--server', ...(specVersion === undefined ? [] : ['--spec-version', specVersion])], { encoding: 'utf8' })
    return [suiteKey({ suite, specVersion }), [...output.matchAll(/^\s+- (\S+)/gm)].map(match => match[1] as string)]
  }
  return Object.fromEntries([list('conformance-0.1'), list('conformance-0.2', '2025-11-25'), list('conformance-0.2', '2026-07-28')])
}

/**
 * A plain gateway serving the fixture in process: the Streamable HTTP upstream. It closes
 * after the main gateway, whose upstream client leaves a connection to it open as it
 * closes (a socket that never carries a request); a graceful close would wait for that
 * socket to time out, up to the 72 s keep-alive, so this one ends every connection at once.
 */
async function upstreamGateway (): Promise<FastifyInstance> {
  const upstream = Fastify({ logger: { level: 'warn' }, forceCloseConnections: true })
  await upstream.register(gateway, { servers: [{ name: 'conformance', factory: createConformanceServer }], aggregate: false })
  await upstream.listen({ port: 0, host: '127.0.0.1' })
  return upstream
}

/**
 * The gateway of the flat lane: only the fixture, mounted un-namespaced, so `/mcp` serves
 * `test_simple_text` as it is. Or, while the gateway cannot do that yet (issue 16, item 4),
 * why not: an unknown config field is only warned about (see src/config.ts), so the fixture
 * would be mounted namespaced and the lane would measure nothing.
 */
async function flatGateway (): Promise<FastifyInstance | string> {
  const fixture = join(root, 'test', 'fixtures', 'conformance')
  let config: GatewayConfig
  try {
    config = parseConfig(JSON.stringify({
      mcpServers: { conformance: { module: join(fixture, 'server.ts'), export: 'createConformanceServer', namespace: false } }
    }), join(root, 'conformance', 'gateway-flat.json'))
  } catch (err) {
    return `the config refuses "namespace": false: ${(err as Error).message}`
  }
  if (config.warnings.some(warning => warning.includes('.namespace'))) return 'the config has no per-server "namespace" field yet'
  const app = Fastify({ logger: { level: 'warn' } })
  await app.register(gateway, { config })
  await app.ready()
  // Read structurally: the field is newer than this lane.
  if (!app.mcpRegistry.servers().every(server => 'namespace' in server && server.namespace === false)) {
    await app.close()
    return 'the config reads "namespace", but the gateway does not hand it to the mount yet'
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

function portOf (app: FastifyInstance): number {
  const address = app.server.address()
  return typeof address === 'object' && address !== null ? address.port : 0
}

async function main (): Promise<number> {
  const started = Date.now()
  const node = node22()
  const resultsDir = join(root, 'conformance', 'results')
  rmSync(resultsDir, { recursive: true, force: true })
  const flat = await flatGateway()
  const flatApp = typeof flat === 'string' ? undefined : flat
  if (flatApp === undefined) process.stdout.write(`NOT RUN: the fixture un-namespaced behind /mcp (${FLAT_RUNS.length} runs): ${flat as string} (issue 16, item 4)\n\n`)
  const runs: Run[] = [...RUNS, ...(flatApp === undefined ? [] : FLAT_RUNS), ...aggregateRuns(suiteScenarios(node)), ...clientRuns(node)]

  const upstream = await upstreamGateway()
  const app = Fastify({ logger: { level: 'warn' } })
  // Reports are printed in the order of `runs`, each once every run before it is done.
  const reports: Array<string | undefined> = runs.map(() => undefined)
  let printed = 0
  const counts = { server: { passed: 0, failed: 0 }, client: { passed: 0, failed: 0 } }
  try {
    const fixture = join(root, 'test', 'fixtures', 'conformance')
    // `file` only names the config in messages and anchors relative paths: there is no file.
    const config = parseConfig(JSON.stringify({
      mcpServers: {
        conformance: { module: join(fixture, 'server.ts'), export: 'createConformanceServer' },
        greet: { builtin: 'greet' },
        'greet-stateless': { builtin: 'greet', stateless: true },
        'conformance-stdio': { command: process.execPath, args: ['--import', 'tsx', join(fixture, 'stdio.ts')], cwd: root },
        // 127.0.0.1, one of the Host names the upstream gateway accepts by default.
        'conformance-http': { type: 'http', url: `http://127.0.0.1:${portOf(upstream)}/conformance/mcp` }
      }
    }), join(root, 'conformance', 'gateway.json'))
    await app.register(gateway, { config })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const ports: Record<Target, number> = { main: portOf(app), flat: flatApp === undefined ? 0 : portOf(flatApp) }
    for (const gatewayApp of [app, flatApp]) {
      for (const { name, connection } of gatewayApp?.mcpRegistry.servers() ?? []) {
        // Its scenarios still run, and fail, so the counts show it.
        if (connection.state !== 'up') process.stdout.write(`server '${name}' is ${connection.state}: ${connection.failure ?? 'no reason given'}\n`)
      }
    }
    for (const phase of PHASES) {
      await Promise.all(phase.map(async lane => {
        for (const [index, run] of runs.entries()) {
          if (run.lane !== lane) continue
          const result = await execute(node, run, ports, resultsDir)
          counts[run.mode].passed += result.passed
          counts[run.mode].failed += result.failed
          reports[index] = result.report
          while (reports[printed] !== undefined) process.stdout.write(reports[printed++] as string)
        }
      }))
    }
  } finally {
    await app.close()
    await flatApp?.close()
    await upstream.close()
  }
  const { server, client } = counts
  const notRun = runs.reduce((sum, run) => sum + (run.mode === 'client' ? Object.keys(run.skipped ?? {}).length : 0), 0)
  process.stdout.write(`server scenarios: ${server.passed} passed, ${server.failed} failed\n`)
  process.stdout.write(`client scenarios, once per way the driver reaches the gateway: ${client.passed} passed, ${client.failed} failed; ${notRun} not run (auth/*)\n`)
  process.stdout.write(`took ${Math.round((Date.now() - started) / 1000)} s\n`)
  process.stdout.write(`conformance: ${server.passed + client.passed} passed, ${server.failed + client.failed} failed\n`)
  return server.failed + client.failed === 0 ? 0 : 1
}

process.exitCode = await main()
