import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'

// A real Chromium for the tests of pages (Debian's, installed by scripts/ensure-chromium.sh),
// and pages that block every request a test does not allow, so a page is shown to work offline.

const CHROMIUM = '/usr/bin/chromium'
/** Screenshots of the pages' states (git-ignored). */
export const SHOTS = fileURLToPath(new URL('../.screenshots/', import.meta.url))

/** Chromium, closed when the test file ends. */
export async function launchChromium (t: { teardown: (fn: () => Promise<void>) => void }): Promise<Browser> {
  mkdirSync(SHOTS, { recursive: true })
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
  })
  t.teardown(async () => { await browser.close() })
  return browser
}

/** Requests to the gateway under test only. */
export const toGateway = (url: URL): boolean => url.hostname === '127.0.0.1'

/** A page that blocks and records every request `allowed` refuses, and records console errors. */
export async function offlinePage (browser: Browser, viewport: { width: number, height: number }, allowed: (url: URL) => boolean = toGateway): Promise<{ page: Page, blocked: string[], consoleErrors: string[] }> {
  const page = await browser.newPage({ viewport })
  const blocked: string[] = []
  const consoleErrors: string[] = []
  page.on('console', message => { if (message.type() === 'error') consoleErrors.push(message.text()) })
  page.on('pageerror', err => { consoleErrors.push(err.message) })
  await page.route('**/*', async route => {
    const url = new URL(route.request().url())
    if (allowed(url)) await route.continue()
    else {
      blocked.push(url.href)
      await route.abort()
    }
  })
  return { page, blocked, consoleErrors }
}
