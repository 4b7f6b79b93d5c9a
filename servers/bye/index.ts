import { McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'

/** The seed's farewell server: one tool, `echoBye`. Knows nothing about HTTP. */
export function createByeServer (options?: ServerOptions): McpServer {
  const server = new McpServer({ name: 'bye', version: '1.0.0' }, options)
  server.registerTool('echoBye', {
    description: 'Say goodbye to a user by name',
    inputSchema: z.object({ userName: z.string().min(1).describe('The name to say goodbye to') })
  }, async ({ userName }) => ({
    content: [{ type: 'text', text: `Bye, ${userName}!` }]
  }))
  return server
}
