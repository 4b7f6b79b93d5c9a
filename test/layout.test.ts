import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

// The architecture as the README's Layout section states it, checked on every `npm test`:
// no import cycle, and imports run one way (http and rest → pipeline → connections → mcp →
// contracts and errors). Written here rather than with madge: madge finds cycles but knows
// nothing of the layers, and reading the import lines of ~40 files takes a dozen lines.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Rank of each part: a file may import files of its own rank or lower. */
function rank (file: string): number {
  if (['src/errors.ts', 'src/defaults.ts', 'src/config.ts', 'src/security.ts', 'src/observability.ts', 'src/connections/connection.ts'].includes(file)) return 0
  // The stores (src/stores) are plumbing beside the protocol's: anything above may use them.
  if (file.startsWith('src/mcp/') || file.startsWith('src/stores/')) return 1
  if (file.startsWith('src/connections/')) return 2
  if (file.startsWith('src/pipeline/')) return 3
  if (file.startsWith('src/http/') || file.startsWith('src/rest/')) return 4
  if (file.startsWith('plugins/') || file.startsWith('servers/')) return 5
  return 6 // src/app.ts, src/server.ts, src/index.ts: the composition and the command
}

function sources (dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap(entry => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sources(path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : []
  })
}

/** The project files a file imports (type-only imports included: a cycle of types is a cycle of design). */
function importsOf (file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8')
  const found = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm)].map(match => match[1] as string)
  return found.map(specifier => relative(root, resolve(root, dirname(file), specifier)).replace(/\.js$/, '.ts'))
}

const files = ['src', 'plugins', 'servers'].flatMap(sources)
const graph = new Map(files.map(file => [file, importsOf(file)]))

t.test('the layout has the folders the README names', async t => {
  for (const dir of ['src/connections', 'src/mcp', 'src/http', 'src/rest', 'src/pipeline', 'plugins', 'servers']) {
    t.ok(files.some(file => file.startsWith(`${dir}/`)), dir)
  }
  t.ok(graph.size > 20, `read ${graph.size} files`)
})

t.test('no import cycle', async t => {
  const cycles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'open') {
      cycles.push([...path.slice(path.indexOf(file)), file].join(' → '))
      return
    }
    state.set(file, 'open')
    for (const next of graph.get(file) ?? []) visit(next, [...path, file])
    state.set(file, 'done')
  }
  for (const file of graph.keys()) visit(file, [])
  t.same(cycles, [], 'import cycles')
})

t.test('imports run one way: http and rest → pipeline → connections → mcp → contracts and errors', async t => {
  const upward = [...graph].flatMap(([file, imports]) => imports
    .filter(target => graph.has(target) && rank(target) > rank(file))
    .map(target => `${file} imports ${target}`))
  t.same(upward, [], 'imports against the layers')
})

t.test('nothing under src/ but the composition imports plugins/', async t => {
  const offenders = [...graph].flatMap(([file, imports]) => file.startsWith('src/') && !['src/app.ts', 'src/index.ts'].includes(file)
    ? imports.filter(target => target.startsWith('plugins/')).map(target => `${file} imports ${target}`)
    : [])
  t.same(offenders, [])
})

t.test('every import names a file that exists', async t => {
  const missing = [...graph].flatMap(([file, imports]) => imports.filter(target => !graph.has(target)).map(target => `${file} imports ${target}`))
  t.same(missing, [])
})
