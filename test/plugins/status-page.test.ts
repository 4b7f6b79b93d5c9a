import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { McpServer } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { UpstreamConnection } from '../../src/connections/upstream.js'
import { builtinServers } from '../../servers/index.js'
import { launchChromium, offlinePage, SHOTS } from '../browser.js'
import { alive, json, listen } from '../helper.js'

// The status page as a user sees it: a real Chromium (Debian's, installed by
// scripts/ensure-chromium.sh) against a listening gateway with a real stdio upstream. Every
// request the page makes that is not to 127.0.0.1 is blocked and counted, which proves the
// page works offline. Each state is saved as a screenshot under .screenshots/ (git-ignored).

const fixture = fileURLToPath(new URL('../fixtures/stdio-server.mjs', import.meta.url))
/** Long enough for a timeout, never a wait: every wait below ends as soon as the page shows the thing. */
const SHOWN_WITHIN = 20_000

/** An in-process server with a prompt, a resource and a tool whose schema has every kind of field. */
function createNotesServer (): McpServer {
  const server = new McpServer({ name: 'notes', version: '1.0.0' })
  server.registerTool('find', {
    description: 'Find notes',
    inputSchema: z.object({
      text: z.string(),
      limit: z.number().int().optional(),
      exact: z.boolean().optional(),
      order: z.enum(['newest', 'oldest']),
      tags: z.array(z.string()).optional()
    })
  }, async ({ text, limit, exact, order, tags }) => ({
    content: [{ type: 'text', text: JSON.stringify({ text, limit, exact, order, tags }) }]
  }))
  server.registerPrompt('summarize', { description: 'Summarize a note', argsSchema: z.object({ id: z.string() }) }, async ({ id }) => ({
    messages: [{ role: 'user', content: { type: 'text', text: `Summarize note ${id}` } }]
  }))
  server.registerResource('readme', 'notes://readme', { description: 'How notes work', mimeType: 'text/plain' }, async uri => ({
    contents: [{ uri: uri.href, text: 'Notes are plain text.' }]
  }))
  return server
}

const upstream = new UpstreamConnection('up', {
  transport: { kind: 'stdio', command: process.execPath, args: [fixture], env: {} },
  // Long enough that a page refreshing every 1.5 s sees the server down, short for a test.
  retry: { initialMs: 3000, maxMs: 3000 }
})

const { app, base } = await listen(t, {
  servers: [
    { name: 'up', connection: upstream },
    { name: 'math', factory: builtinServers.math },
    { name: 'notes', factory: createNotesServer }
  ]
})

const browser = await launchChromium(t)
const { page, blocked, consoleErrors } = await offlinePage(browser, { width: 1280, height: 900 })

const shot = async (name: string): Promise<void> => { await page.screenshot({ path: `${SHOTS}status-${name}.png`, fullPage: true }) }
const stateOf = (server: string): string => `[data-server="${server}"] .badge.state`

t.test('the page loads offline, with no console error, and shows every server and its state', async t => {
  await page.goto(`${base}/`)
  for (const server of ['up', 'math', 'notes']) {
    await page.waitForSelector(`${stateOf(server)}:text-is("up")`, { timeout: SHOWN_WITHIN })
  }
  t.equal(await page.textContent('#overall'), 'ready')
  const up = page.locator('[data-server="up"]')
  t.match(await up.textContent(), `${base}/up/mcp`, 'the MCP endpoint, whole')
  t.match(await up.textContent(), 'upstream')
  t.match(await up.locator('details.tool summary').allTextContents(), [/add/, /whoami/, /block/])
  const notes = page.locator('[data-server="notes"]')
  t.match(await notes.locator('ul.prompts').textContent(), /summarize.*Summarize a note.*\(id\*\)/)
  t.match(await notes.locator('ul.resources').textContent(), /notes:\/\/readme/)
  await shot('loaded')
  t.same(consoleErrors, [], 'no console error')
  t.same(blocked, [], 'no request left 127.0.0.1')
})

t.test('each endpoint has client setup to copy: Claude Desktop, Cursor, VS Code, the Inspector, curl', async t => {
  const math = page.locator('[data-server="math"]')
  await math.locator('details.setup summary').click()
  const tabs = await math.locator('.setup-tabs button').allTextContents()
  t.same(tabs, ['Claude Desktop', 'Cursor', 'VS Code', 'MCP Inspector', 'curl'])
  const snippet = async (tab: string): Promise<string> => {
    await math.locator('.setup-tabs button', { hasText: tab }).click()
    return await math.locator('details.setup pre').textContent() ?? ''
  }
  t.same(JSON.parse(await snippet('Claude Desktop')), { mcpServers: { math: { command: 'npx', args: ['-y', 'mcp-remote', `${base}/math/mcp`] } } })
  t.same(JSON.parse(await snippet('VS Code')), { servers: { math: { type: 'http', url: `${base}/math/mcp` } } })
  await shot('client-setup')
  const curl = await snippet('curl')
  t.match(curl, `curl -X POST ${base}/math/tools/add -H 'content-type: application/json' -d '{"a":1,"b":1}'`)
  // The curl line the page offers works as shown.
  const res = await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: '{"a":1,"b":1}' })
  t.equal(res.status, 200)
})

t.test('a call made through REST appears in recent calls and in the tool figures', async t => {
  const res = await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: JSON.stringify({ a: 40, b: 2 }) })
  t.equal(res.status, 200)
  const row = page.locator('#recent-calls tr.call').first()
  await row.filter({ hasText: 'add' }).waitFor({ timeout: SHOWN_WITHIN })
  const cells = await row.locator('td').allTextContents()
  t.match(cells, [/\d\d:\d\d:\d\d/, 'math', 'add', 'anonymous', 'rest', 'ok', /\d/])
  const figures = page.locator('#tool-stats tr[data-tool="math/add"] td')
  t.match(await figures.allTextContents(), ['math', 'add', /^[1-9]/, '0', '0 %', /\d/, /\d/, /^[1-9]/])
  await shot('recent-call')
})

t.test('the try-it form calls a tool and shows its answer; fields follow the schema', async t => {
  const tool = page.locator('[data-server="notes"] details.tool[data-tool="find"]')
  await tool.locator('summary').click()
  const form = tool.locator('form.try')
  t.equal(await form.locator('input[name="text"]').getAttribute('type'), 'text')
  t.equal(await form.locator('input[name="limit"]').getAttribute('type'), 'number')
  t.equal(await form.locator('input[name="exact"]').getAttribute('type'), 'checkbox')
  t.same(await form.locator('select[name="order"] option').allTextContents(), ['newest', 'oldest'])
  t.equal(await form.locator('textarea[name="tags"]').count(), 1, 'an array is JSON')
  await form.locator('input[name="text"]').fill('milk')
  await form.locator('input[name="limit"]').fill('3')
  await form.locator('input[name="exact"]').check()
  await form.locator('select[name="order"]').selectOption({ label: 'oldest' })
  await form.locator('textarea[name="tags"]').fill('["shopping"]')
  await form.locator('button[type="submit"]').click()
  await tool.locator('.result-status:has-text("HTTP 200")').waitFor({ timeout: SHOWN_WITHIN })
  const answer = JSON.parse(await tool.locator('.result-body').textContent() ?? '') as { content: Array<{ text: string }> }
  t.same(JSON.parse(answer.content[0]?.text ?? ''), { text: 'milk', limit: 3, exact: true, order: 'oldest', tags: ['shopping'] })
  await shot('try-it')

  // A refused call shows the gateway's answer too.
  const math = page.locator('[data-server="math"] details.tool[data-tool="add"]')
  await math.locator('summary').click()
  await math.locator('input[name="a"]').fill('5')
  await math.locator('button[type="submit"]').click()
  await math.locator('.result-status:has-text("HTTP 400")').waitFor({ timeout: SHOWN_WITHIN })
  t.match(await math.locator('.result-body').textContent(), /GW_ERR_INVALID_ARGUMENTS/)
  // Chromium reports every non-2xx fetch on the console; this one the test asked for.
  t.match(consoleErrors.splice(0), [/status of 400/], 'only the refused call on the console')
  await math.locator('input[name="b"]').fill('3')
  await math.locator('button[type="submit"]').click()
  await math.locator('.result-status:has-text("HTTP 200")').waitFor({ timeout: SHOWN_WITHIN })
  t.match(await math.locator('.result-body').textContent(), /"sum": 8/)
})

t.test('an upstream killed shows down within seconds, with its cause and stderr, and up again after the restart', async t => {
  const pid = upstream.pid as number
  t.ok(pid > 0 && alive(pid))
  // A call that blocks: the fixture writes a stderr line, which the page shows.
  const blocking = fetch(`${base}/up/tools/block`, { method: 'POST', headers: json, body: JSON.stringify({ label: 'from-the-status-test' }) })
  await page.waitForFunction(() => document.querySelector('[data-server="up"] pre.stderr')?.textContent?.includes('block started from-the-status-test'), undefined, { timeout: SHOWN_WITHIN })
  process.kill(pid, 'SIGKILL')
  t.equal((await blocking).status, 502, 'the call in flight failed')

  await page.waitForSelector(`${stateOf('up')}:text-is("down")`, { timeout: SHOWN_WITHIN })
  const card = page.locator('[data-server="up"]')
  t.match(await card.locator('.failure').textContent(), `the server process (pid ${pid}) exited (killed by SIGKILL)`)
  t.equal(await card.locator('details.stderr-box').getAttribute('open'), '', 'the stderr lines open by themselves while down')
  t.equal(await page.textContent('#overall'), 'degraded')
  await page.locator('#recent-calls tr.call', { hasText: 'block' }).filter({ hasText: 'failed' }).first().waitFor({ timeout: SHOWN_WITHIN })
  await shot('upstream-down')

  await page.waitForSelector(`${stateOf('up')}:text-is("up")`, { timeout: SHOWN_WITHIN })
  t.not(upstream.pid, pid, 'a new child')
  t.equal(await card.locator('.failure').isHidden(), true)
  t.match(await card.locator('.since').textContent(), /since \d\d:\d\d:\d\d/)
  const status = await (await fetch(`${base}/status.json`)).json() as { servers: Array<{ name: string, history: Array<{ state: string }> }> }
  t.match(status.servers.find(server => server.name === 'up')?.history.map(change => change.state), ['up', 'down', 'up'])
  await shot('upstream-back')
  t.same(consoleErrors, [], 'no console error')
  t.same(blocked, [], 'no request left 127.0.0.1')
})

t.test('/status.json is the JSON behind the page', async t => {
  const res = await fetch(`${base}/status.json`)
  t.equal(res.status, 200)
  const status = await res.json() as Record<string, any>
  t.match(status.gateway, { baseUrl: base, auth: false, aggregate: '/mcp', windowMs: 300_000 })
  t.match(status.servers.map((server: { name: string }) => server.name), ['up', 'math', 'notes'])
  t.match(status.servers[0], { state: 'up', kind: 'upstream', endpoints: { mcp: '/up/mcp', rest: '/up/tools' }, stderr: Array })
  t.notOk('stderr' in status.servers[1], 'an in-process server has no stderr')
  t.ok(status.recentCalls.length > 0)
  t.ok(status.tools.some((figures: { tool: string }) => figures.tool === 'add'))
  const foreign = await app.inject({ method: 'GET', url: '/status.json', headers: { host: 'evil.example' } })
  t.equal(foreign.statusCode, 403, 'a foreign Host is refused (DNS rebinding)')
})

t.test('with authentication on, the page opens but its data needs credentials, and names the caller', async t => {
  const key = 'status-page-test-key'
  const apiKeys = [{ id: 'ops', sha256: createHash('sha256').update(key).digest('hex'), scopes: [] }]
  const { base: guarded } = await listen(t, {
    servers: [{ name: 'math', factory: builtinServers.math }],
    security: { auth: { mode: 'required', apiKeys, protectDocs: false, authorizationServers: [], forwardIdentity: {} } }
  })
  const page = await fetch(`${guarded}/`)
  t.equal(page.status, 200, 'the page itself holds no data: a browser opens it, then asks for a key')
  t.match(await page.text(), /<html/i)
  t.equal((await fetch(`${guarded}/status.json`)).status, 401, 'the data needs credentials')
  await fetch(`${guarded}/math/tools/add`, { method: 'POST', headers: { ...json, 'x-api-key': key }, body: '{"a":1,"b":2}' })
  const res = await fetch(`${guarded}/status.json`, { headers: { 'x-api-key': key } })
  t.equal(res.status, 200)
  const status = await res.json() as { gateway: { auth: boolean }, recentCalls: Array<{ clientId?: string }> }
  t.equal(status.gateway.auth, true)
  t.equal(status.recentCalls[0]?.clientId, 'ops', 'the caller by its key id, never the key')
  t.notMatch(JSON.stringify(status), key)
})

t.test('statusPage: false leaves / to the 404 handler', async t => {
  const { base: plain } = await listen(t, { servers: [{ name: 'math', factory: builtinServers.math }], observability: { statusPage: false } })
  t.equal((await fetch(`${plain}/`)).status, 404)
  t.equal((await fetch(`${plain}/status.json`)).status, 404)
})

// --- The command: readable logs, and a banner that names the page ------------------------

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

function run (args: string[]): ChildProcess & { stdout: NodeJS.ReadableStream, output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, '--port', '0', ...args], {
    env: { ...process.env, LOG_LEVEL: 'info', LOG_FORMAT: undefined },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  return Object.assign(child, { stdout: child.stdout, output: () => output })
}

async function until (child: ReturnType<typeof run>, pattern: RegExp): Promise<string> {
  while (!pattern.test(child.output())) {
    if (child.exitCode !== null) throw new Error(`exited early: ${child.output()}`)
    await once(child.stdout, 'data')
  }
  return child.output()
}

/** The banner's lines, which must be together, in order, with no log line among them. */
function bannerOf (output: string): string[] {
  const lines = output.split('\n')
  const first = lines.findIndex(line => line.startsWith('MCP gateway listening on'))
  const last = lines.findIndex(line => /^ {2}health\s+http/.test(line))
  return first === -1 || last === -1 ? [] : lines.slice(first, last + 1)
}

t.test('a non-TTY stdout gets JSON log lines, the banner whole and naming the status page', async t => {
  const child = run([])
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  await until(child, /health\s+http/)
  const base = /listening on (http:\/\/\S+)/.exec(child.output())?.[1] as string
  await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: '{"a":1,"b":2}' })
  // A tool call's one log line is its audit line.
  await until(child, /"mcp call"[^\n]*\n/)
  const banner = bannerOf(child.output())
  t.equal(banner.length, 8, 'listening, three servers, all, status, docs, health: together')
  t.match(banner.join('\n'), new RegExp(`status\\s+${base}/\\s+\\(the status page; JSON: ${base}/status.json\\)`))
  const logLines = child.output().split('\n').filter(line => line !== '' && !banner.includes(line))
  t.ok(logLines.length > 3)
  const notJson = logLines.filter(line => {
    try {
      return typeof JSON.parse(line) !== 'object'
    } catch {
      return true
    }
  })
  t.same(notJson, [], 'every other line is JSON')
  child.kill('SIGTERM')
  t.equal((await once(child, 'exit'))[0], 0)
})

t.test('--log-format pretty gives readable lines (no colours off a terminal); a bad format exits 2', async t => {
  const child = run(['--log-format', 'pretty'])
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  await until(child, /health\s+http/)
  const base = /listening on (http:\/\/\S+)/.exec(child.output())?.[1] as string
  await fetch(`${base}/math/tools/add`, { method: 'POST', headers: json, body: '{"a":1,"b":2}' })
  await until(child, /INFO: mcp call[^\n]*\n/)
  const output = child.output()
  t.equal(bannerOf(output).length, 8, 'the banner whole')
  t.match(output, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: Server listening at http/m)
  t.match(output, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: mcp call \{"audit":\{.*"name":"add"/m)
  t.notMatch(output, /^\{"level"/m, 'no JSON line')
  t.notMatch(output, /\u001b\[/, 'no colour codes in a pipe')
  child.kill('SIGTERM')
  t.equal((await once(child, 'exit'))[0], 0)

  const bad = run(['--log-format', 'xml'])
  t.equal((await once(bad, 'exit'))[0], 2)
  t.match(bad.output(), "invalid log format 'xml' (expected json or pretty)")
})
