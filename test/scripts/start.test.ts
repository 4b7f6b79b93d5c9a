import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// `npm start` (scripts/start.mjs) in a copy of the project's layout whose build is a stand-in:
// a fake `tsc` that counts its runs and writes a fake dist/src/server.js printing its
// arguments. What is asserted is whether tsc ran, never how long anything took. Times are set
// with utimes, so nothing waits for the clock.

const root = fileURLToPath(new URL('../../', import.meta.url))

const SERVER = "console.log(JSON.stringify({ ran: process.argv.slice(2) }))\n"
const TSC = `const { appendFileSync, mkdirSync, writeFileSync } = require('node:fs')
appendFileSync('tsc-runs', 'run\\n')
if (process.env.FAKE_TSC_FAIL === '1') { writeFileSync('dist/src/server.js', 'throw new Error("half-built")'); process.exit(2) }
mkdirSync('dist/src', { recursive: true })
writeFileSync('dist/src/server.js', ${JSON.stringify(SERVER)})
`

/** A project with sources, the real package.json and start script, a fake TypeScript, and no build. */
function project (t: Test): string {
  const dir = t.testdir({
    src: { 'server.ts': '// source\n', nested: { 'deep.ts': '// source\n' } },
    plugins: { 'status.ts': '// source\n' },
    servers: { 'index.ts': '// source\n' },
    scripts: {},
    'tsconfig.json': '{}\n',
    'tsconfig.build.json': '{}\n',
    node_modules: { typescript: { 'package.json': '{ "name": "typescript" }\n', bin: { tsc: TSC } } }
  })
  copyFileSync(join(root, 'package.json'), join(dir, 'package.json'))
  copyFileSync(join(root, 'scripts/start.mjs'), join(dir, 'scripts/start.mjs'))
  return dir
}

/** Every source and setting dated `seconds` from now (negative: in the past). */
function dateSources (dir: string, seconds: number): void {
  const when = Date.now() / 1000 + seconds
  for (const file of ['src/server.ts', 'src/nested/deep.ts', 'plugins/status.ts', 'servers/index.ts', 'tsconfig.json', 'tsconfig.build.json', 'package.json']) utimesSync(join(dir, file), when, when)
}

function build (dir: string, seconds: number): void {
  mkdirSync(join(dir, 'dist/src'), { recursive: true })
  writeFileSync(join(dir, 'dist/src/server.js'), SERVER)
  const when = Date.now() / 1000 + seconds
  utimesSync(join(dir, 'dist/src/server.js'), when, when)
}

interface Run { code: number | null, stdout: string, stderr: string }

function run (command: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  // npm's own settings from an `npm test` around this one are not the child's.
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('npm_')))
  return new Promise(resolve => {
    execFile(command, args, { cwd, env: { ...clean, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

const tscRuns = (dir: string): number => existsSync(join(dir, 'tsc-runs')) ? readFileSync(join(dir, 'tsc-runs'), 'utf8').split('\n').filter(Boolean).length : 0

t.test('npm start with a build newer than every source runs it without tsc, flags passed through', async t => {
  const dir = project(t)
  dateSources(dir, -100)
  build(dir, -10)
  const result = await run('npm', ['start', '--silent', '--', '--help', '--port', '0'], dir)
  t.equal(result.code, 0, result.stderr)
  t.same(JSON.parse(result.stdout), { ran: ['--help', '--port', '0'] })
  t.equal(tscRuns(dir), 0, 'tsc did not run')
  t.notMatch(result.stderr, /building/)
})

t.test('a source newer than the build, at any depth, is built once, then the build is run', async t => {
  for (const file of ['src/nested/deep.ts', 'plugins/status.ts', 'servers/index.ts', 'tsconfig.json', 'tsconfig.build.json', 'package.json']) {
    const dir = project(t)
    dateSources(dir, -100)
    build(dir, -50)
    utimesSync(join(dir, file), Date.now() / 1000 - 10, Date.now() / 1000 - 10)
    const first = await run(process.execPath, ['scripts/start.mjs', '--version'], dir)
    t.equal(first.code, 0, first.stderr)
    t.match(first.stderr, /start: sources changed since the last build: building \(tsc\)/, file)
    t.same(JSON.parse(first.stdout), { ran: ['--version'] })
    const second = await run(process.execPath, ['scripts/start.mjs', '--version'], dir)
    t.equal(second.code, 0)
    t.equal(tscRuns(dir), 1, `${file}: built once, not on the next start`)
  }
})

t.test('a file that is not TypeScript (a status page asset) does not make the build stale', async t => {
  const dir = project(t)
  dateSources(dir, -100)
  build(dir, -50)
  writeFileSync(join(dir, 'plugins/status.css'), 'body {}\n')
  const result = await run(process.execPath, ['scripts/start.mjs'], dir)
  t.equal(result.code, 0)
  t.equal(tscRuns(dir), 0)
})

t.test('with no build yet it builds first', async t => {
  const dir = project(t)
  const result = await run(process.execPath, ['scripts/start.mjs', '--check'], dir)
  t.equal(result.code, 0, result.stderr)
  t.match(result.stderr, /start: there is no build yet: building \(tsc\)/)
  t.same(JSON.parse(result.stdout), { ran: ['--check'] })
  t.equal(tscRuns(dir), 1)
})

t.test('a failed build starts nothing, and the next start builds again', async t => {
  const dir = project(t)
  dateSources(dir, -100)
  build(dir, -50)
  utimesSync(join(dir, 'src/server.ts'), Date.now() / 1000 - 10, Date.now() / 1000 - 10)
  const failed = await run(process.execPath, ['scripts/start.mjs'], dir, { FAKE_TSC_FAIL: '1' })
  t.equal(failed.code, 2)
  t.match(failed.stderr, /start: the build failed \(above\); nothing was started/)
  t.equal(failed.stdout, '')
  t.ok(statSync(join(dir, 'dist/src/server.js')).mtimeMs < statSync(join(dir, 'src/server.ts')).mtimeMs, 'the half-built output is left stale')
  const next = await run(process.execPath, ['scripts/start.mjs'], dir)
  t.equal(next.code, 0, next.stderr)
  t.equal(tscRuns(dir), 2)
})

t.test('a stale build without TypeScript installed says what to do', async t => {
  const dir = project(t)
  rmSync(join(dir, 'node_modules'), { recursive: true })
  const result = await run(process.execPath, ['scripts/start.mjs'], dir)
  t.equal(result.code, 1)
  t.match(result.stderr, /start: there is no build yet, and TypeScript, which builds it, is not installed .*: run npm ci, then npm start/)
})

t.test('the project\'s npm start is this script', async t => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.equal(pkg.scripts.start, 'node scripts/start.mjs')
  t.notOk(pkg.scripts.prestart, 'no build before every start')
  t.equal(pkg.scripts.prepare, 'npm run build', 'the build happens at install')
  t.equal(pkg.scripts.build, 'tsc -p tsconfig.build.json', 'the build start.mjs runs')
})
