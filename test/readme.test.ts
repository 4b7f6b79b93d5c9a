import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, writeFile, rm } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { OAuth2Server } from 'oauth2-mock-server'
import { parseConfig } from '../src/config.js'
import { listen } from './helper.js'

// The README as a newcomer uses it: its SDK client snippets are written to files and run with
// `node`, as they are shown (only the example URLs point at gateways started here), and must
// exit by themselves (a snippet that forgets `client.close()` hangs) and print what the README
// says they print. Its first curl examples are run too.
//
// How snippets are found: a fenced block right after `<!-- snippet: sdk-v2-client -->` is a
// snippet, and a block right after `<!-- snippet-output -->` is what the snippet before it
// prints (HTML comments do not show when the README is rendered). So that a new snippet cannot
// be skipped by forgetting its marker, every `ts`/`js` block that uses the SDK client must
// carry one.

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))
const readme = readFileSync(join(root, 'README.md'), 'utf8')
const run = promisify(execFile)

/** Longest a snippet may run: it makes one or two calls to a gateway on this machine. */
const SNIPPET_TIMEOUT_MS = 20_000

interface Block {
  /** The fence's info string: `ts`, `sh`, or empty. */
  lang: string
  code: string
  /** The `<!-- ... -->` marker on the line before the fence (blank lines skipped), if any. */
  marker: string | undefined
  /** 1-based line of the opening fence, for messages. */
  line: number
}

function fencedBlocks (text: string): Block[] {
  const lines = text.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i] as string)
    if (open === null) continue
    let before = i - 1
    while (before >= 0 && (lines[before] as string).trim() === '') before--
    const marker = /^<!--\s*(.+?)\s*-->$/.exec((lines[before] ?? '').trim())?.[1]
    const end = lines.indexOf('```', i + 1)
    if (end === -1) throw new Error(`README.md line ${i + 1}: a code fence that is never closed`)
    blocks.push({ lang: open[1] as string, code: lines.slice(i + 1, end).join('\n'), marker, line: i + 1 })
    i = end
  }
  return blocks
}

interface Snippet { block: Block, output: string | undefined }

const blocks = fencedBlocks(readme)
const snippets: Snippet[] = []
for (const block of blocks) {
  if (block.marker === 'snippet: sdk-v2-client') snippets.push({ block, output: undefined })
  else if (block.marker === 'snippet-output') {
    const last = snippets.at(-1)
    if (last === undefined || last.output !== undefined) throw new Error(`README.md line ${block.line}: an output block with no snippet before it`)
    last.output = block.code
  }
}
const curlBlock = blocks.find(block => block.marker === 'snippet: curl')

// --- The gateways the snippets talk to --------------------------------------------------------

// The README's own examples: the built-in servers on 127.0.0.1:3000.
const { base } = await listen(t)

// The Authentication example: a gateway that needs a JWT (for a server named `files`) and a
// real authorization server that issues them, found by the SDK from the gateway's 401.
const oauth = new OAuth2Server()
await oauth.issuer.keys.generate('RS256')
await oauth.start(0, '127.0.0.1')
const issuer = `http://127.0.0.1:${oauth.address().port}`
oauth.issuer.url = issuer
t.teardown(async () => { await oauth.stop() })
// As a real authorization server does: the token's audience is the resource asked for (RFC 8707).
oauth.service.on('beforeTokenSigning', (token: { payload: Record<string, unknown> }, req: { body: Record<string, unknown>, headers: IncomingHttpHeaders }) => {
  if (typeof req.body.resource === 'string') token.payload.aud = req.body.resource
})
const authConfig = parseConfig(JSON.stringify({
  mcpServers: { files: { builtin: 'math' } },
  gateway: { auth: { jwt: { issuer, jwksUri: `${issuer}/jwks` } } }
}), 'gateway.json')
const { base: authBase } = await listen(t, { config: authConfig })

/** The README's example origins, and where they point in this test. */
const ORIGINS: Record<string, string> = {
  'http://127.0.0.1:3000': base,
  'https://mcp.example.com': authBase,
  'https://auth.example.com': issuer
}
const rewrite = (code: string): string =>
  Object.entries(ORIGINS).reduce((text, [from, to]) => text.replaceAll(from, to), code)

// Inside the repository, so that the snippets' imports resolve from its node_modules.
const dir = await mkdtemp(join(root, '.readme-snippets-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

// --- The tests ----------------------------------------------------------------------------------

t.test('the README marks its SDK client snippets, and each output block follows one', async t => {
  t.ok(snippets.length >= 3, `found ${snippets.length} snippets`)
  const unmarked = blocks.filter(block => /^(ts|js|typescript|javascript|mjs)$/.test(block.lang) &&
    /@modelcontextprotocol\/client|new Client\(/.test(block.code) && block.marker !== 'snippet: sdk-v2-client')
  t.same(unmarked.map(block => `line ${block.line}`), [], 'SDK client code without <!-- snippet: sdk-v2-client -->')
  for (const { block } of snippets) {
    t.match(block.lang, /^(ts|js)$/, `line ${block.line}: a snippet says its language`)
    t.match(block.code, /import .* from '@modelcontextprotocol\/client'/, `line ${block.line}: a snippet has its imports`)
  }
})

for (const [i, { block, output }] of snippets.entries()) {
  t.test(`the SDK snippet at README.md line ${block.line} runs as shown and exits by itself`, async t => {
    const file = join(dir, `snippet-${i + 1}.${block.lang === 'ts' ? 'ts' : 'mjs'}`)
    await writeFile(file, rewrite(block.code) + '\n')
    const args = block.lang === 'ts' ? ['--import', 'tsx', file] : [file]
    let stdout: string
    try {
      ({ stdout } = await run(process.execPath, args, {
        cwd: root,
        timeout: SNIPPET_TIMEOUT_MS,
        // The secret the Authentication example reads; the authorization server takes any.
        env: { ...process.env, SECRET: 'agent-secret', NO_COLOR: '1' }
      }))
    } catch (err) {
      const failed = err as { killed?: boolean, code?: number, signal?: string, stderr?: string, stdout?: string }
      if (failed.killed === true) t.fail(`still running after ${SNIPPET_TIMEOUT_MS} ms: it does not exit by itself (a missing client.close()?)`, { stdout: failed.stdout })
      else t.fail(`exited with ${failed.code ?? failed.signal}`, { stderr: failed.stderr, stdout: failed.stdout })
      return
    }
    if (output !== undefined) t.equal(stdout.trim(), output.trim(), 'prints what the README shows')
    else t.not(stdout.trim(), '', 'prints something')
  })
}

t.test('the TypeScript snippets type-check', async t => {
  const typescript = snippets.filter(({ block }) => block.lang === 'ts')
  t.ok(typescript.length > 0, 'there are TypeScript snippets')
  const project = join(dir, 'typecheck')
  await mkdir(project)
  for (const [i, { block }] of typescript.entries()) await writeFile(join(project, `snippet-${i + 1}.ts`), block.code + '\n')
  // The project's own settings (strict, nodenext): what a TypeScript user of the SDK has.
  await writeFile(join(project, 'tsconfig.json'), JSON.stringify({
    extends: '../../tsconfig.json',
    compilerOptions: { noEmit: true, rootDir: '.', declaration: false, sourceMap: false },
    include: ['*.ts']
  }))
  try {
    await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', project], { cwd: root, timeout: 60_000 })
    t.pass('tsc reports nothing')
  } catch (err) {
    t.fail('tsc reports errors', { stdout: (err as { stdout?: string }).stdout })
  }
})

/** A shell command line as its words: enough quoting for a README example ('…', "…"). */
function words (line: string): string[] {
  return [...line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map(match => match[1] ?? match[2] ?? match[3] as string)
}

t.test('the curl examples of "Calling tools over REST" answer what the README shows', async t => {
  if (curlBlock === undefined) {
    t.fail('no block marked <!-- snippet: curl -->')
    return
  }
  const lines = curlBlock.code.split('\n')
  const examples = lines.flatMap((line, i) => line.startsWith('curl ')
    ? [{ command: line, shown: (lines[i + 1] ?? '').replace(/^# /, '') }]
    : [])
  t.ok(examples.length >= 2, `found ${examples.length} curl commands`)
  const curl = await run('curl', ['--version']).then(() => true, () => false)
  for (const { command, shown } of examples) {
    const argv = words(rewrite(command)).slice(1)
    let body: string
    if (curl) {
      ({ stdout: body } = await run('curl', ['-sS', ...argv], { timeout: SNIPPET_TIMEOUT_MS }))
    } else {
      // The same request with fetch, for a machine without curl.
      const headers: Record<string, string> = {}
      let method = 'GET'
      let data: string | undefined
      let url = ''
      for (let i = 0; i < argv.length; i++) {
        const word = argv[i] as string
        if (word === '-X') method = argv[++i] as string
        else if (word === '-H') {
          const [name, ...value] = (argv[++i] as string).split(':')
          headers[name as string] = value.join(':').trim()
        } else if (word === '-d') data = argv[++i]
        else url = word
      }
      body = await (await fetch(url, { method, headers, body: data })).text()
    }
    t.equal(body, shown, command)
  }
})
