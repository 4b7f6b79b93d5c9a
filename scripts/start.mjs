// `npm start`: runs the built gateway (dist/src/server.js), building it first only when a
// source is newer than the build, with the arguments passed through (`npm start -- --help`).
// Plain JavaScript so that it runs before anything is compiled; `npm run dev` (tsx watch) is
// for editing.
//
// Staleness is judged by modification times, not content hashes: stat-ing the ~60 TypeScript
// files of src, plugins and servers takes about 3 ms, where hashing them (or asking tsc, which
// loads the whole program to decide) would cost a good part of the second a start may take.
// tsc rewrites every output on each build (no incremental mode), so one output's time stands
// for the build's.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const output = join(root, 'dist/src/server.js')
/** What the build reads: the sources of the command, and the settings that change its output. */
const SOURCE_DIRS = ['src', 'plugins', 'servers']
const SOURCE_FILES = ['tsconfig.json', 'tsconfig.build.json', 'package.json']

/** The newest modification time, in ms, of the TypeScript files under `dir`. */
function newest (dir) {
  let latest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) latest = Math.max(latest, newest(path))
    else if (entry.name.endsWith('.ts')) latest = Math.max(latest, statSync(path).mtimeMs)
  }
  return latest
}

function stale () {
  if (!existsSync(output)) return 'there is no build yet'
  const built = statSync(output).mtimeMs
  const sources = Math.max(
    ...SOURCE_DIRS.map(dir => existsSync(join(root, dir)) ? newest(join(root, dir)) : 0),
    ...SOURCE_FILES.map(file => existsSync(join(root, file)) ? statSync(join(root, file)).mtimeMs : 0)
  )
  return sources > built ? 'sources changed since the last build' : undefined
}

const reason = stale()
if (reason !== undefined) {
  const tsc = join(root, 'node_modules/typescript/bin/tsc')
  if (!existsSync(tsc)) {
    process.stderr.write(`start: ${reason}, and TypeScript, which builds it, is not installed (an install with --omit=dev?): run npm ci, then npm start\n`)
    process.exit(1)
  }
  process.stderr.write(`start: ${reason}: building (tsc)\n`)
  const build = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' })
  if (build.status !== 0) {
    // tsc emits even when it reports errors; dating the output back keeps it stale, so the
    // next start builds again rather than running code that failed to compile.
    if (existsSync(output)) utimesSync(output, 0, 0)
    process.stderr.write('start: the build failed (above); nothing was started\n')
    process.exit(build.status ?? 1)
  }
}

// In this process rather than a child: one Node start less, and signals (Ctrl-C, SIGTERM)
// reach the gateway itself. process.argv is unchanged, so the flags after `--` are its own.
await import(pathToFileURL(output).href)
