import t, { type Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

/** A self-signed certificate for 127.0.0.1, made for this test: its paths and the PEM to trust. */
function certificate (t: Test): { cert: string, key: string, dir: string } {
  const dir = t.testdir()
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' })
  if (made.error !== undefined) throw new Error(`these tests need the openssl command to make a certificate: ${made.error.message}`)
  if (made.status !== 0) throw new Error(`openssl could not make a certificate: ${made.stderr}`)
  return { cert, key, dir }
}

/** Runs the command as a user would, under tsx; stopped by its pid when the test ends. */
function run (t: Test, args: string[]): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return Object.assign(child, { output: () => output })
}

async function waitForBanner (child: ChildProcess & { output: () => string }): Promise<string> {
  while (!/health\s+\S+\/health/.test(child.output())) {
    if (child.exitCode !== null) throw new Error(`exited early: ${child.output()}`)
    await once(child.stdout as NodeJS.ReadableStream, 'data')
  }
  return child.output()
}

async function exited (child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode
  const [code] = await once(child, 'exit')
  return code as number | null
}

/** `POST /math/tools/add` over HTTPS, trusting only the test's certificate. */
async function addOverHttps (port: number, ca: Buffer | string): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, method: 'POST', path: '/math/tools/add', ca, headers: { 'content-type': 'application/json' } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { body += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
    })
    req.on('error', reject)
    req.end('{"a":5,"b":3}')
  })
}

/** A plain-HTTP request to the same port: its status if one came back, or the error it failed with. */
async function plainHttp (port: number): Promise<{ status?: number, error?: string }> {
  return await new Promise(resolve => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/math/tools/add', headers: { 'content-type': 'application/json' } }, res => {
      res.resume()
      resolve({ status: res.statusCode })
    })
    req.on('error', err => { resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message }) })
    req.end('{"a":5,"b":3}')
  })
}

const portOf = (banner: string): number => Number(/listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(banner)?.[1])

async function servesHttpsOnly (t: Test, child: ChildProcess & { output: () => string }, cert: string): Promise<void> {
  const banner = await waitForBanner(child)
  t.match(banner, /^MCP gateway listening on https:\/\/127\.0\.0\.1:\d+$/m, 'the banner says https://')
  t.match(banner, /math\s+https:\/\/127\.0\.0\.1:\d+\/math\/mcp/)
  t.match(banner, /docs\s+https:\/\//)
  const port = portOf(banner)
  const res = await addOverHttps(port, readFileSync(cert))
  t.equal(res.status, 200)
  t.same(JSON.parse(res.body), { content: [{ type: 'text', text: '8' }], structuredContent: { sum: 8 } })
  const plain = await plainHttp(port)
  t.notOk(plain.status !== undefined && plain.status < 400, `plain HTTP gets no answer of the gateway (${JSON.stringify(plain)})`)
  child.kill('SIGTERM')
  t.equal(await exited(child), 0)
}

t.test('--tls-cert and --tls-key serve HTTPS; plain HTTP to the port does not succeed', async t => {
  const { cert, key } = certificate(t)
  await servesHttpsOnly(t, run(t, ['--port', '0', '--tls-cert', cert, '--tls-key', key]), cert)
})

t.test('the config\'s gateway.tls serves HTTPS, its paths relative to the config file', async t => {
  const { cert, dir } = certificate(t)
  const config = join(dir, 'gateway.json')
  writeFileSync(config, JSON.stringify({ mcpServers: { math: { builtin: 'math' } }, gateway: { tls: { cert: 'cert.pem', key: 'key.pem' } } }))
  await servesHttpsOnly(t, run(t, ['--port', '0', '--config', config]), cert)
})

t.test('one of the two flags alone, or a file that cannot be read, exits 2 naming it', async t => {
  const { cert, key } = certificate(t)
  const alone = run(t, ['--port', '0', '--tls-cert', cert])
  t.equal(await exited(alone), 2)
  t.match(alone.output(), /--tls-cert and --tls-key go together/)
  const missing = run(t, ['--port', '0', '--tls-cert', cert, '--tls-key', `${key}.missing`])
  t.equal(await exited(missing), 2)
  t.match(missing.output(), /cannot read the TLS key '.*key\.pem\.missing'/)
  const swapped = run(t, ['--port', '0', '--tls-cert', key, '--tls-key', cert])
  t.equal(await exited(swapped), 2)
  t.match(swapped.output(), /cannot serve HTTPS/)
})
