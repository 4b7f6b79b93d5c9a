/**
 * `npm run conformance`: the official MCP conformance suite against the gateway.
 *
 * Starts the gateway in this process (the machine's Node), then drives it with the suite's
 * own CLI under Node 22, which the suite needs (it imports `fs.globSync`). Node 22 comes
 * from the npm registry (`node-<platform>-<arch>`) into `.cache/`, once; both suite lines
 * are pinned devDependencies (`conformance-0.1`, `conformance-0.2`).
 *
 * Two kinds of run, on both suite lines and both spec versions:
 * - every server scenario (`--suite all`; with a spec version that leaves out the extension
 *   scenarios) against the conformance fixture (`test/fixtures/conformance/server.ts`)
 *   mounted at `/conformance`, with 2025-era sessions;
 * - the generic scenarios against the built-in `greet` server, with sessions and with
 *   `stateless: true`, so a plain server is covered too.
 *
 * Each scenario's `checks.json` is kept under `conformance/results/`. Prints one
 * `N passed, M failed` line per run and a total; exits 1 if any scenario failed.
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import gateway from '../src/app.js'
import { createGreetServer } from '../servers/greet/index.js'
import { createConformanceServer } from '../test/fixtures/conformance/server.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const NODE22_VERSION = '22.23.3'
const SCENARIO_TIMEOUT_MS = 60_000

interface Run {
  label: string
  suite: 'conformance-0.1' | 'conformance-0.2'
  specVersion?: string
  path: string
  /** The scenarios to run one by one, or `all` for the whole suite in one invocation. */
  scenarios: string[] | 'all'
}

/** The generic scenarios: what any plain MCP server must pass, whatever its tools. */
const LEGACY_GENERIC = ['server-initialize', 'ping', 'tools-list', 'logging-set-level', 'dns-rebinding-protection']
const MODERN_GENERIC = ['tools-list', 'http-header-validation', 'dns-rebinding-protection', 'server-sse-multiple-streams']

const RUNS: Run[] = [
  { label: '0.1.16 fixture /conformance/mcp', suite: 'conformance-0.1', path: '/conformance/mcp', scenarios: 'all' },
  { label: '0.2.0-alpha.12 @2025-11-25 fixture /conformance/mcp', suite: 'conformance-0.2', specVersion: '2025-11-25', path: '/conformance/mcp', scenarios: 'all' },
  { label: '0.2.0-alpha.12 @2026-07-28 fixture /conformance/mcp', suite: 'conformance-0.2', specVersion: '2026-07-28', path: '/conformance/mcp', scenarios: 'all' },
  ...['/greet/mcp', '/greet-stateless/mcp'].flatMap(path => [
    { label: `0.1.16 ${path}`, suite: 'conformance-0.1', path, scenarios: LEGACY_GENERIC } satisfies Run,
    { label: `0.2.0-alpha.12 @2025-11-25 ${path}`, suite: 'conformance-0.2', specVersion: '2025-11-25', path, scenarios: [...LEGACY_GENERIC, 'server-session-lifecycle'] } satisfies Run,
    { label: `0.2.0-alpha.12 @2026-07-28 ${path}`, suite: 'conformance-0.2', specVersion: '2026-07-28', path, scenarios: MODERN_GENERIC } satisfies Run
  ])
]

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

interface Outcome { scenario: string, passed: boolean, summary: string }

/** Runs the suite CLI once: one scenario, or the whole suite with `all`. */
function runSuite (node: string, cli: string, url: string, run: Run, scenario: string, outputDir: string): Promise<{ passed: boolean, summary: string, output: string }> {
  const args = [cli, 'server', '--url', url, '-o', outputDir, ...(scenario === 'all' ? ['--suite', 'all'] : ['--scenario', scenario])]
  // 0.1.16 has no --timeout; the kill below bounds every scenario either way.
  if (run.suite === 'conformance-0.2') args.push('--timeout', String(SCENARIO_TIMEOUT_MS))
  if (run.specVersion !== undefined) args.push('--spec-version', run.specVersion)
  return new Promise((resolve, reject) => {
    const child = spawn(node, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } })
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

/**
 * Per-scenario outcomes of a whole-suite invocation, read from the `checks.json` each
 * scenario leaves in its own folder: a scenario passes when none of its checks failed.
 */
function outcomesIn (outputDir: string): Outcome[] {
  return readdirSync(outputDir).sort().map(folder => {
    const checks = JSON.parse(readFileSync(join(outputDir, folder, 'checks.json'), 'utf8')) as Array<{ status: string }>
    const failed = checks.filter(check => check.status === 'FAILURE').length
    const warnings = checks.filter(check => check.status === 'WARNING').length
    const scenario = folder.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T.*$/, '')
    return { scenario, passed: failed === 0, summary: `${checks.length - failed - warnings} passed, ${failed} failed, ${warnings} warnings` }
  })
}

async function main (): Promise<number> {
  const node = node22()
  const resultsDir = join(root, 'conformance', 'results')
  rmSync(resultsDir, { recursive: true, force: true })

  const app = Fastify({ logger: { level: 'warn' } })
  await app.register(gateway, {
    servers: [
      { name: 'conformance', factory: createConformanceServer },
      { name: 'greet', factory: createGreetServer },
      { name: 'greet-stateless', factory: createGreetServer, stateless: true }
    ]
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const require = createRequire(import.meta.url)

  let passed = 0
  let failed = 0
  try {
    for (const run of RUNS) {
      const cli = join(dirname(require.resolve(`${run.suite}/package.json`)), 'dist', 'index.js')
      const url = `http://localhost:${port}${run.path}`
      let runPassed = 0
      let runFailed = 0
      const runDir = join(resultsDir, run.label.replaceAll(/[^A-Za-z0-9.-]+/g, '_'))
      const outcomes: Outcome[] = []
      if (run.scenarios === 'all') {
        const result = await runSuite(node, cli, url, run, 'all', runDir)
        outcomes.push(...outcomesIn(runDir))
        if (outcomes.length === 0 || (!result.passed && outcomes.every(outcome => outcome.passed))) {
          // The CLI failed without a failed scenario to show for it: count that as a failure.
          outcomes.push({ scenario: '(suite run)', passed: false, summary: result.output.split('\n').slice(-5).join(' | ') })
        }
      } else {
        for (const scenario of run.scenarios) {
          const result = await runSuite(node, cli, url, run, scenario, join(runDir, scenario))
          outcomes.push({ scenario, passed: result.passed, summary: result.summary })
          if (!result.passed) process.stdout.write(result.output.split('\n').filter(line => /FAILURE|Error|error:/.test(line)).map(line => `        ${line}\n`).join(''))
        }
      }
      for (const outcome of outcomes) {
        if (outcome.passed) runPassed++
        else runFailed++
        process.stdout.write(`  ${outcome.passed ? 'PASS' : 'FAIL'}  ${outcome.scenario.padEnd(45)} ${outcome.summary}\n`)
      }
      process.stdout.write(`${run.label}: ${runPassed} passed, ${runFailed} failed\n\n`)
      passed += runPassed
      failed += runFailed
    }
  } finally {
    await app.close()
  }
  process.stdout.write(`conformance: ${passed} passed, ${failed} failed\n`)
  return failed === 0 ? 0 : 1
}

process.exitCode = await main()
