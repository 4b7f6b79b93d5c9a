import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

// What src/http/object-shapes.ts is for, seen in V8 itself: a process that served six
// requests and then stood through a full garbage collection keeps every later response in
// dictionary mode, unless the gateway settled the shapes first.

const run = promisify(execFile)
const fixture = fileURLToPath(new URL('../../fixtures/response-shapes.ts', import.meta.url))

async function responseIsFast (mode: 'plain' | 'gateway'): Promise<boolean> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--allow-natives-syntax', '--expose-gc', fixture, mode])
  return (JSON.parse(stdout.trim().split('\n').at(-1) as string) as { fast: boolean }).fast
}

t.test('a bare node:http server: six requests, a full collection, then every response in dictionary mode', async t => {
  // The premise. Should a Node release stop doing this, settleHttpObjectShapes has no more use.
  t.equal(await responseIsFast('plain'), false)
})

t.test('the gateway: the same requests leave its responses in fast mode', async t => {
  t.equal(await responseIsFast('gateway'), true)
})
