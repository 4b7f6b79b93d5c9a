import { McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'

/**
 * The seed's greeting server: one tool, `echoHai`. Knows nothing about HTTP. It declares the
 * logging capability so that clients which set a log level (`logging/setLevel`) get an answer.
 */
export function createGreetServer (options?: ServerOptions): McpServer {
  const server = new McpServer({ name: 'greet', version: '1.0.0' }, { ...options, capabilities: { logging: {} } })
  server.registerTool('echoHai', {
    description: 'Greet a user by name',
    inputSchema: z.object({ userName: z.string().min(1).describe('The name to greet') })
  }, async ({ userName }) => ({
    content: [{ type: 'text', text: `Hello, ${userName}!` }]
  }))
  return server
}
