import { McpServer, type ServerOptions } from '@modelcontextprotocol/server'
import * as z from 'zod'

/**
 * The seed's "adding a new server" example: `add` returns the sum both as text and as
 * `structuredContent` matching its `outputSchema`. A sum that overflows to a non-finite
 * number is reported as a tool error (`isError: true`), not a thrown exception.
 */
export function createMathServer (options?: ServerOptions): McpServer {
  const server = new McpServer({ name: 'math', version: '1.0.0' }, options)
  server.registerTool('add', {
    description: 'Add two numbers',
    inputSchema: z.object({
      a: z.number().describe('First addend'),
      b: z.number().describe('Second addend')
    }),
    outputSchema: z.object({ sum: z.number().describe('a + b') })
  }, async ({ a, b }) => {
    const sum = a + b
    if (!Number.isFinite(sum)) {
      return { isError: true, content: [{ type: 'text', text: `The sum of ${a} and ${b} is not a finite number` }] }
    }
    return { content: [{ type: 'text', text: String(sum) }], structuredContent: { sum } }
  })
  return server
}
