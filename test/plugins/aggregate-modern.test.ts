import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { createRequestStateCodec, inputRequired, inputResponse, McpServer } from '@modelcontextprotocol/server'
import { listen, text } from '../helper.js'

// 2026-07-28 clients on `/mcp`, calling an in-process server: the request reaches an instance
// of that revision with the client's own `_meta`, and what the server answers comes back as
// it is (its `input_required` with its own keys and `requestState`, its -32021), as on the
// server's own endpoint, under the names `/mcp` gives its tools.

/** Takes any result as it is, as the gateway itself does towards 2026-07-28 upstreams. */
const PASSTHROUGH = { '~standard': { version: 1 as const, vendor: 'aggregate-modern-test', validate: (value: unknown) => ({ value: value as Record<string, unknown> }) } }

/**
 * A server whose `greet_me` asks for the user's name under `user_name`, with a sealed
 * `requestState` it checks on the retry, and whose `summarize` asks for sampling. Each state
 * it mints is kept in `minted`, so a test can tell the server's own from any other.
 */
function askingServer (minted: string[]) {
  const codec = createRequestStateCodec<{ asked: string }>({ key: randomBytes(32) })
  return () => {
    const server = new McpServer({ name: 'asking', version: '1.0.0' }, {
      requestState: { verify: async (state, ctx) => await codec.verify(state, ctx) }
    })
    server.registerTool('greet_me', { description: 'Greets the user by the name it asks for' }, async ctx => {
      const view = inputResponse(ctx.mcpReq.inputResponses, 'user_name')
      const state = ctx.mcpReq.requestState<{ asked: string }>()
      if (state?.asked === 'name' && view.kind === 'elicit' && view.action === 'accept') {
        return { content: [{ type: 'text', text: `Hello, ${String(view.content?.name)}!` }] }
      }
      const requestState = await codec.mint({ asked: 'name' })
      minted.push(requestState)
      return inputRequired({
        inputRequests: { user_name: inputRequired.elicit({ message: 'What is your name?', requestedSchema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } }) },
        requestState
      })
    })
    server.registerTool('summarize', { description: 'Asks the client to sample a summary' }, async ctx => {
      const view = inputResponse(ctx.mcpReq.inputResponses, 'summary')
      if (view.kind === 'sampling') return { content: [{ type: 'text', text: 'summarized' }] }
      return inputRequired({ inputRequests: { summary: inputRequired.createMessage({ messages: [{ role: 'user', content: { type: 'text', text: 'Summarize' } }], maxTokens: 10 }) } })
    })
    return server
  }
}

/** An SDK v2 client speaking 2026-07-28 on `url` that can answer elicitations (with `name`, when given), closed when the test ends. */
async function modernClient (t: Test, url: string, name?: string): Promise<Client> {
  const client = new Client({ name: 'aggregate-modern-test', version: '1.0.0' }, {
    capabilities: { elicitation: { form: {} } },
    versionNegotiation: { mode: { pin: '2026-07-28' } }
  })
  if (name !== undefined) client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name } }))
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

t.test("a 2026-07-28 client on /mcp gets an in-process tool's own input_required, answers it, and gets the result", async t => {
  const minted: string[] = []
  const { base } = await listen(t, { servers: [{ name: 'asking', factory: askingServer(minted) }] })
  const client = await modernClient(t, `${base}/mcp`)

  const call = async (params: Record<string, unknown>): Promise<Record<string, any>> =>
    await client.request({ method: 'tools/call', params: { name: 'asking_greet_me', arguments: {}, ...params } }, PASSTHROUGH, { allowInputRequired: true }) as Record<string, any>
  const first = await call({})
  t.equal(first.resultType, 'input_required')
  t.same(Object.keys(first.inputRequests), ['user_name'], "the server's own input key, not one of the gateway's")
  t.match(first.inputRequests.user_name, { method: 'elicitation/create', params: { message: 'What is your name?' } })
  t.equal(minted.length, 1)
  t.equal(first.requestState, minted[0], "the server's own requestState")

  const answered = await call({ inputResponses: { user_name: { action: 'accept', content: { name: 'Ada' } } }, requestState: first.requestState })
  t.equal(text(answered), 'Hello, Ada!', 'the retry reached the server with the answer and its state')

  // The SDK client fulfils the same rounds on its own, under the server's keys.
  const fulfilling = await modernClient(t, `${base}/mcp`, 'Grace')
  t.equal(text(await fulfilling.callTool({ name: 'asking_greet_me', arguments: {} })), 'Hello, Grace!')
})

t.test('a 2026-07-28 client on /mcp that did not declare what an in-process tool asks for gets -32021', async t => {
  const { base } = await listen(t, { servers: [{ name: 'asking', factory: askingServer([]), namespace: false }] })
  const client = await modernClient(t, `${base}/mcp`)
  const err = await client.callTool({ name: 'summarize', arguments: {} }).then(() => undefined, (error: unknown) => error as { code?: number, data?: unknown })
  t.match(err, { code: -32021, data: { requiredCapabilities: { sampling: {} } } }, 'the JSON-RPC error the server answers, not an isError result')
})
