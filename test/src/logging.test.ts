import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

// The command's default logging, as an operator reads it: at `info`, one line per completed
// request (the audit line standing in for it when the request made a call), written through
// an asynchronous destination that is flushed before the process exits.

const entry = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

t.test('at info: one line per completed request, the audit line for a call, all written by exit', async t => {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, '--port', '0'], {
    env: { ...process.env, LOG_LEVEL: 'info', LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  while (!/health\s+http/.test(output)) {
    if (child.exitCode !== null) throw new Error(`exited early: ${output}`)
    await once(child.stdout, 'data')
  }
  const base = /listening on (http:\/\/\S+)/.exec(output)?.[1] as string

  const json = { 'content-type': 'application/json' }
  t.equal((await fetch(`${base}/health`)).status, 200)
  t.equal((await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: '{"userName":"Ada"}' })).status, 200)
  t.equal((await fetch(`${base}/greet/tools/echoHai`, { method: 'POST', headers: json, body: '{"userName":""}' })).status, 400)
  t.equal((await fetch(`${base}/nowhere`)).status, 404)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0)

  const lines = output.split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as Record<string, unknown>)
  t.notOk(output.includes('FSTDEP'), 'no deprecation warning')
  t.notOk(lines.some(line => line.msg === 'incoming request'), 'no line when a request arrives')
  const perRequest = new Map<string, string[]>()
  for (const line of lines) {
    const id = (line.reqId ?? (line.audit as { requestId?: string } | undefined)?.requestId) as string | undefined
    if (id === undefined) continue
    perRequest.set(id, [...perRequest.get(id) ?? [], line.msg as string])
  }
  t.same([...perRequest.values()], [['request completed'], ['mcp call'], ['request completed'], ['request completed']], 'one line for each of the four requests; the call\'s is its audit line')
  const call = lines.find(line => line.msg === 'mcp call')
  t.match(call, { audit: { server: 'greet', method: 'tools/call', name: 'echoHai', way: 'rest', outcome: 'ok' } })
  t.match(lines.find(line => line.url === '/nowhere'), { method: 'GET', statusCode: 404, code: 'GW_ERR_NOT_FOUND', responseTime: Number }, 'a refusal is named on its one line')
  t.match(lines.find(line => line.statusCode === 400), { code: 'GW_ERR_INVALID_ARGUMENTS' })
  // Written at the signal, after every request above had its answer: flushed by exit. (Not
  // necessarily the last line: a request's line is written when its response finishes on the
  // server, which may come a moment after the client has read the answer and sent the signal.)
  t.ok(lines.some(line => line.msg === 'shutting down'), 'the line written at shutdown was written out before exit')
})
