import t, { type Test } from 'tap'
import { Client } from '@modelcontextprotocol/client'
import { InMemoryTransport, type McpServer } from '@modelcontextprotocol/server'
import { createByeServer } from '../../servers/bye/index.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { createMathServer } from '../../servers/math/index.js'

async function connect (t: Test, server: McpServer): Promise<Client> {
  const client = new Client({ name: 'test', version: '1.0.0' })
  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair()
  await server.connect(serverTransport)
  await client.connect(clientTransport)
  t.teardown(async () => { await client.close(); await server.close() })
  return client
}

t.test('greet: echoHai greets by name', async t => {
  const client = await connect(t, createGreetServer())
  const result = await client.callTool({ name: 'echoHai', arguments: { userName: 'Ada' } })
  t.same(result.content, [{ type: 'text', text: 'Hello, Ada!' }])
  const [tool] = (await client.listTools()).tools
  t.match(tool, { name: 'echoHai', inputSchema: { required: ['userName'], properties: { userName: { type: 'string', minLength: 1 } } } })
})

t.test('bye: echoBye says goodbye by name', async t => {
  const client = await connect(t, createByeServer())
  const result = await client.callTool({ name: 'echoBye', arguments: { userName: 'Ada' } })
  t.same(result.content, [{ type: 'text', text: 'Bye, Ada!' }])
})

t.test('math: add returns the sum as text and structured content', async t => {
  const client = await connect(t, createMathServer())
  const result = await client.callTool({ name: 'add', arguments: { a: 5, b: 3 } })
  t.same(result.content, [{ type: 'text', text: '8' }])
  t.same(result.structuredContent, { sum: 8 })
  const [tool] = (await client.listTools()).tools
  t.match(tool.outputSchema, { type: 'object', properties: { sum: { type: 'number' } }, required: ['sum'] })
})

t.test('math: a non-finite sum is a tool error, not an exception', async t => {
  const client = await connect(t, createMathServer())
  const result = await client.callTool({ name: 'add', arguments: { a: 1e308, b: 1e308 } })
  t.equal(result.isError, true)
  t.same(result.content, [{ type: 'text', text: 'The sum of 1e+308 and 1e+308 is not a finite number' }])
})
