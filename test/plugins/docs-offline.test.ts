import t from 'tap'
import { McpServer } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { builtinEntries } from '../../src/app.js'
import { launchChromium, offlinePage, SHOTS, toGateway } from '../browser.js'
import { listen } from '../helper.js'

// Swagger UI at /docs and ReDoc at /redoc as a user opens them: a real Chromium (Debian's,
// installed by scripts/ensure-chromium.sh) against a listening gateway, every request that is
// not to 127.0.0.1 blocked and counted, so the pages are shown to work with no network at all
// (ReDoc's bundle would fetch Redocly's logo from a CDN). Screenshots go to .screenshots/.

/** Long enough for a timeout, never a wait: every wait below ends as soon as the page shows the thing. */
const SHOWN_WITHIN = 20_000

function createNotesServer (): McpServer {
  const server = new McpServer({ name: 'notes', version: '1.0.0' })
  server.registerPrompt('summarize', { description: 'Summarize a note', argsSchema: z.object({ id: z.string() }) }, async ({ id }) => ({
    messages: [{ role: 'user', content: { type: 'text', text: `Summarize note ${id}` } }]
  }))
  server.registerResource('readme', 'notes://readme', { description: 'How notes work', mimeType: 'text/plain' }, async uri => ({
    contents: [{ uri: uri.href, text: 'Notes are plain text.' }]
  }))
  return server
}

const { base } = await listen(t, { servers: [...builtinEntries(), { name: 'notes', factory: createNotesServer }] })

const browser = await launchChromium(t)

/** A page that blocks and records every request not to 127.0.0.1 (data: and blob: URLs stay in the page), and records console errors. */
async function openPage (): Promise<Awaited<ReturnType<typeof offlinePage>>> {
  const opened = await offlinePage(browser, { width: 1400, height: 1000 }, url => toGateway(url) || url.protocol === 'data:' || url.protocol === 'blob:')
  t.teardown(() => opened.page.close())
  return opened
}

t.test('Swagger UI loads offline and shows every operation, with examples built from the tools', async t => {
  const { page, blocked, consoleErrors } = await openPage()
  await page.goto(`${base}/docs/`)
  await page.waitForSelector('.opblock-summary-path', { timeout: SHOWN_WITHIN })
  const shown = await page.locator('.opblock-summary-path').allTextContents()
  for (const path of ['/math/tools/add', '/greet/tools/echoHai', '/notes/prompts/summarize', '/notes/resources/read', '/health', '/ready']) {
    t.ok(shown.some(text => text.replace(/\u200b/g, '') === path), `${path} is shown`)
  }
  t.equal(await page.title(), 'MCP Gateway · Swagger UI')

  // The tool's operation, opened as a user would: its 200 example comes from the outputSchema.
  const add = page.locator('.opblock', { has: page.locator('.opblock-summary-path', { hasText: /^\/math\/tools\/add$/ }) })
  await add.locator('.opblock-summary').click()
  const ok = add.locator('tr.response[data-code="200"]')
  await ok.locator('.microlight').first().waitFor({ timeout: SHOWN_WITHIN })
  const example = JSON.parse(await ok.locator('.microlight').first().textContent() ?? '') as unknown
  t.same(example, { content: [{ type: 'text', text: '{"sum":0}' }], structuredContent: { sum: 0 }, isError: false })
  const notFound = await add.locator('tr.response[data-code="404"] .microlight').first().textContent() ?? ''
  t.same(JSON.parse(notFound), { statusCode: 404, code: 'GW_ERR_TOOL_NOT_FOUND', error: 'Not Found', message: "Tool 'add' not found on server 'math'" })
  const body = await add.locator('.opblock-body').textContent() ?? ''
  t.notMatch(body, /additionalProp1/, 'no made-up map keys')
  t.notMatch(body, /"code": "string"|"statusCode": 0/, 'no made-up error bodies')
  await page.screenshot({ path: `${SHOTS}docs-swagger.png`, fullPage: false })

  t.same(blocked, [], 'no request left 127.0.0.1')
  t.same(consoleErrors, [], 'no console error')
})

t.test('ReDoc loads offline and renders the document', async t => {
  const { page, blocked, consoleErrors } = await openPage()
  const requested: string[] = []
  page.on('request', request => { requested.push(new URL(request.url()).pathname) })
  await page.goto(`${base}/redoc`)
  await page.waitForSelector('h1:has-text("MCP Gateway")', { timeout: SHOWN_WITHIN })
  await page.waitForSelector('[role="menuitem"]:has-text("Add two numbers")', { timeout: SHOWN_WITHIN })
  t.ok(await page.locator('[role="menuitem"]:has-text("Summarize a note")').count() > 0, 'a prompt\'s own operation is in the menu')
  t.ok(await page.locator('h2:has-text("Add two numbers")').count() > 0, 'the tool\'s operation is rendered')
  t.ok(requested.includes('/docs/json'), 'the document came from the gateway')
  t.equal(await page.title(), 'MCP Gateway · ReDoc')
  await page.screenshot({ path: `${SHOTS}docs-redoc.png`, fullPage: false })

  t.same(blocked, [], 'no request left 127.0.0.1')
  t.same(consoleErrors, [], 'no console error, no content-security-policy violation')
})
