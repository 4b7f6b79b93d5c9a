/** The ceiling: bare Fastify, no logger, the REST shim's answer with no MCP behind it. */
import Fastify from 'fastify'
import { portFromArgs, serve } from './lifecycle.js'

const app = Fastify()
app.post('/echo', async (request) => {
  const { userName } = request.body as { userName: string }
  return { content: [{ type: 'text', text: `Hello, ${userName}!` }] }
})

await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
const address = app.server.address()
serve(typeof address === 'object' && address !== null ? address.port : 0, async () => { await app.close() })
