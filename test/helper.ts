import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { AuthInfo } from '@modelcontextprotocol/server'
import type { Test } from 'tap'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import gateway, { type GatewayOptions } from '../src/app.js'
import { limitConnections, serverOptions, type HttpLimits } from '../src/http/server-options.js'

/** How a test's server differs from the command's: its HTTP limits, and a logger to read (default none). */
export interface ServerSetup {
  limits?: HttpLimits
  logger?: FastifyServerOptions['logger']
}

/** A gateway as the command builds it (the same server options), minus logging and listening; closed when the test ends. */
export async function build (t: Test, options: GatewayOptions = {}, setup: ServerSetup = {}): Promise<FastifyInstance> {
  const app = Fastify({ ...serverOptions(setup.limits), logger: setup.logger ?? false })
  limitConnections(app.server, setup.limits)
  await app.register(gateway, options)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

/** The same, listening on an ephemeral loopback port, for real HTTP clients. */
export async function listen (t: Test, options: GatewayOptions = {}, setup: ServerSetup = {}): Promise<{ app: FastifyInstance, base: string }> {
  const app = await build(t, options, setup)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('expected a TCP address')
  return { app, base: `http://127.0.0.1:${address.port}` }
}

export const json = { 'content-type': 'application/json' }

/** Whether a process is still running (signal 0 checks without sending anything). */
export function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * A 2025-era MCP client (SDK v1) in a session at `url`, closed when the test ends. With
 * `elicit`, it accepts every elicitation with that name (and values for server-everything's
 * other fields); with `sample`, it answers every sampling request with that text.
 */
export async function mcpClient (t: Test, url: string, name = 'test', handlers: { elicit?: string, sample?: string } = {}): Promise<LegacyClient> {
  const client = new LegacyClient({ name, version: '1.0.0' }, { capabilities: { elicitation: {}, sampling: {} } })
  if (handlers.elicit !== undefined) {
    const answer = handlers.elicit
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: answer, check: true, firstLine: 'x', integer: 1, number: 1, enum: 'option1' } }))
  }
  if (handlers.sample !== undefined) {
    const text = handlers.sample
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({ model: 'test-model', role: 'assistant', content: { type: 'text', text } }))
  }
  await client.connect(new LegacyTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

/** The text blocks of a tool result, one per line. */
export function text (result: unknown): string {
  return ((result as { content: Array<{ text?: string }> }).content).map(block => block.text ?? '').join('\n')
}

/** A log line as pino writes it. */
export type LogLine = Record<string, unknown> & { msg: string, level: number }

/**
 * A pino destination that keeps every line in memory: `logged` resolves with the first line
 * that matches, already written or still to come, so a test waits for what a server wrote
 * (an upstream's stderr, a state change) without sleeping.
 */
export function logCapture (): { stream: Writable, lines: LogLine[], raw: string[], logged: (match: (line: LogLine) => boolean) => Promise<LogLine> } {
  const raw: string[] = []
  const lines: LogLine[] = []
  const waiters = new Set<() => void>()
  const stream = new Writable({
    write (chunk, _encoding, done) {
      raw.push(String(chunk))
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as LogLine)
      for (const wake of waiters) wake()
      done()
    }
  })
  const logged = async (match: (line: LogLine) => boolean): Promise<LogLine> => {
    for (;;) {
      const found = lines.find(match)
      if (found !== undefined) return found
      await new Promise<void>(resolve => {
        const wake = (): void => { waiters.delete(wake); resolve() }
        waiters.add(wake)
      })
    }
  }
  return { stream, lines, raw, logged }
}

/**
 * A listening gateway whose callers name themselves in `x-test-identity` (an `AuthInfo` as
 * JSON): a stand-in for the auth plugin, which sets `request.identity`, for tests of what
 * happens after authentication.
 */
export async function listenAs (t: Test, options: GatewayOptions, logger: FastifyServerOptions['logger'] = false): Promise<{ app: FastifyInstance, base: string }> {
  const app = Fastify({ ...serverOptions(), logger })
  app.addHook('onRequest', async (request) => {
    const given = request.headers['x-test-identity']
    if (typeof given === 'string') request.identity = JSON.parse(given) as AuthInfo
  })
  await app.register(gateway, options)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base: `http://127.0.0.1:${(app.server.address() as { port: number }).port}` }
}

/** What an MCP client over Streamable HTTP sends as `Accept` and `Content-Type`. */
export const mcpHeaders = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }

/** The `_meta` envelope a 2026-07-28 client puts on every request. */
export const modernMeta = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {}
}

/** The request field `Mcp-Name` mirrors, per method (2026-07-28 standard headers). */
const NAMED: Record<string, string> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' }

/**
 * A 2026-07-28 request as its client sends it: the envelope in `params._meta`, the
 * `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, and any `headers` besides.
 */
export function modernRequest (method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}): RequestInit & { headers: Record<string, string> } {
  const named = NAMED[method]
  return {
    method: 'POST',
    headers: {
      ...mcpHeaders,
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': method,
      ...(named !== undefined && { 'mcp-name': String(params[named]) }),
      ...headers
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { ...params, _meta: modernMeta } })
  }
}

/** A 2025-era request without a session (to a server mounted `stateless`, or an `initialize`). */
export function legacyRequest (method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}): RequestInit & { headers: Record<string, string> } {
  return { method: 'POST', headers: { ...mcpHeaders, ...headers }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) }
}
