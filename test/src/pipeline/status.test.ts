import t from 'tap'
import { StatusRecorder } from '../../../src/pipeline/status.js'
import { ToolNotFoundError } from '../../../src/errors.js'
import type { CallContext } from '../../../src/pipeline/pipeline.js'

// The status page's memory, fed by the pipeline observer: what it keeps of each call and its
// bounds. The page itself (test/plugins/status-page.test.ts) shows what it reads from here.

const callOf = (server: string, name: string, extra: Partial<CallContext> = {}): CallContext =>
  ({ server, method: 'tools/call', name, way: 'rest', ...extra }) as CallContext

t.test('a recent call carries the caller, the code and the request id only when it has them', async t => {
  const recorder = new StatusRecorder({ recentCalls: 3 })
  recorder.record(callOf('greet', 'echoHai'), { outcome: 'ok', durationMs: 1.23456 }, 1000)
  recorder.record(callOf('math', 'add', { identity: { clientId: 'alice', scopes: [], token: 'secret' }, requestId: 'req-7' }),
    { outcome: 'failed', durationMs: 2, error: new ToolNotFoundError('add', 'math') }, 2000)
  const [failed, ok] = recorder.recentCalls()
  t.same(ok, { at: 1000, server: 'greet', method: 'tools/call', name: 'echoHai', way: 'rest', outcome: 'ok', durationMs: 1.23 })
  t.same(Object.keys(ok ?? {}).sort(), ['at', 'durationMs', 'method', 'name', 'outcome', 'server', 'way'], 'nothing absent is set')
  t.same(failed, { at: 2000, server: 'math', method: 'tools/call', name: 'add', way: 'rest', outcome: 'failed', durationMs: 2, clientId: 'alice', code: 'GW_ERR_TOOL_NOT_FOUND', requestId: 'req-7' })
  t.notMatch(JSON.stringify(recorder.recentCalls()), /secret/, 'never the credential')

  for (let i = 0; i < 4; i++) recorder.record(callOf('greet', `t${i}`), { outcome: 'ok', durationMs: 1 }, 3000 + i)
  t.same(recorder.recentCalls().map(call => call.name), ['t3', 't2', 't1'], 'newest first, bounded')
})

t.test('tools are tracked per server up to `maxTools` in all, further names only counted', async t => {
  const recorder = new StatusRecorder({ maxTools: 3 })
  const ok = { outcome: 'ok' as const, durationMs: 1 }
  recorder.record(callOf('greet', 'echoHai'), ok, 1000)
  recorder.record(callOf('math', 'echoHai'), ok, 1000)
  recorder.record(callOf('greet', 'echoHai'), { outcome: 'tool_error', durationMs: 3 }, 1001)
  recorder.record(callOf('greet', 'other'), ok, 1002)
  recorder.record(callOf('math', 'add'), ok, 1003)
  recorder.record(callOf('greet', 'more'), ok, 1004)
  recorder.record(callOf('math', 'echoHai'), ok, 1005)
  t.equal(recorder.untracked, 2, 'the fourth and fifth names are not tracked')
  const figures = recorder.tools(2000)
  t.same(figures.map(f => `${f.server}/${f.tool}`).sort(), ['greet/echoHai', 'greet/other', 'math/echoHai'])
  t.match(figures.find(f => f.server === 'greet' && f.tool === 'echoHai'), { calls: 2, errors: 1, lastCallAt: 1001, window: { calls: 2, errors: 1, errorRate: 0.5 } })
  t.match(figures.find(f => f.server === 'math' && f.tool === 'echoHai'), { calls: 2, errors: 0, lastCallAt: 1005 }, 'the same name on another server is its own')
})
