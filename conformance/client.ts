/**
 * The client under test in the conformance suite's `client` mode: the gateway, as a client of
 * its upstreams.
 *
 * For each client scenario the suite starts a server of its own, runs this command with that
 * server's URL appended, and checks what reaches the server. This command starts the gateway
 * in process from a config (`src/config.ts`) with the scenario's server as its only upstream,
 * a Streamable HTTP one named `upstream`, then drives the gateway as a user would, one of
 * three ways (`--via`):
 * - `rest`: the REST routes, `GET /upstream/tools` and `POST /upstream/tools/<name>`;
 * - `session`: a 2025-era session at `/upstream/mcp`, the SDK 1.x client;
 * - `modern`: a 2026-07-28 client at `/upstream/mcp`, the SDK v2 client pinned to that
 *   revision.
 * What the gateway then sends upstream is what the suite checks. `SCENARIOS` says, per
 * scenario, which ways make sense and what the user does; `conformance/run.ts` runs each way.
 *
 *   node --import tsx conformance/client.ts [--via rest|session|modern] <scenario server URL>
 *
 * The suite names the scenario in `MCP_CONFORMANCE_SCENARIO`, and passes scenario data (the
 * arguments of `http-custom-headers`) in `MCP_CONFORMANCE_CONTEXT`. Prints what it does on
 * stdout and the gateway's warnings on stderr (the suite keeps both beside `checks.json`);
 * exits 0 when every step did what the user expected, 1 otherwise, after closing the gateway
 * and its upstream connection.
 */
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import gateway from '../src/app.js'
import { parseConfig } from '../src/config.js'
import { limitConnections, serverOptions } from '../src/http/server-options.js'

const root = fileURLToPath(new URL('..', import.meta.url))
/** The scenario server's name in the gateway: its routes are `/upstream/...`. */
const UPSTREAM = 'upstream'
const CLIENT_INFO = { name: 'gateway-conformance-driver', version: '1.0.0' }
/** After closing, the process must end by itself; anything still open by then is a leak, reported and cut. */
const EXIT_GRACE_MS = 5000

export type Via = 'rest' | 'session' | 'modern'

type Arguments = Record<string, unknown>
interface ToolInfo { name: string, inputSchema?: Record<string, unknown> }
// A type, not an interface: both SDKs' handler results need its implicit index signature.
type ElicitAnswer = { action: 'accept' | 'decline' | 'cancel', content?: Record<string, string | number | boolean | string[]> }

/** One way into the gateway, as the user of each face sees it. */
interface Face {
  listTools: () => Promise<ToolInfo[]>
  /** The result's text; throws on anything but a successful result. */
  callTool: (name: string, args: Arguments) => Promise<string>
  listResources: () => Promise<Array<{ uri: string }>>
  readResource: (uri: string) => Promise<void>
  listPrompts: () => Promise<Array<{ name: string }>>
  getPrompt: (name: string) => Promise<void>
  /** The OpenAPI document, which holds every tool's schema (rest only). */
  openApi?: () => Promise<Record<string, unknown>>
  close: () => Promise<void>
}

/** What the driving client answers when the gateway asks it for input (session and modern only). */
type Elicit = (face: Face, params: Record<string, unknown>) => Promise<ElicitAnswer>

interface Scenario {
  /** The ways to drive it, the first the default; `run.ts` runs each. */
  ways: Via[]
  /** The client applies an elicitation schema's defaults to what it answers (SEP-1034). */
  applyDefaults?: boolean
  elicit?: Elicit
  /** What the user does, given the face and `MCP_CONFORMANCE_CONTEXT`. */
  run: (face: Face, context: Record<string, unknown>) => Promise<void>
}

const log = (line: string): void => { process.stdout.write(`${line}\n`) }

function expect (condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message)
}

/** A tool the gateway lists, or an error naming what it lists instead. */
async function findTool (face: Face, name: string): Promise<ToolInfo> {
  const tools = await face.listTools()
  const tool = tools.find(candidate => candidate.name === name)
  expect(tool !== undefined, `the gateway does not list '${name}' (it lists ${tools.map(t => t.name).join(', ') || 'no tools'})`)
  return tool
}

/** Arguments that satisfy a tool's required properties, a plain value of each one's type. */
function sampleArguments (schema: Record<string, unknown> | undefined): Arguments {
  const properties = (schema?.properties ?? {}) as Record<string, { type?: string }>
  const required = (schema?.required ?? []) as string[]
  const sample = (type: string | undefined): unknown => {
    switch (type) {
      case 'integer': case 'number': return 1
      case 'boolean': return true
      case 'object': return {}
      case 'array': return []
      case 'null': return null
      default: return 'us-west1'
    }
  }
  return Object.fromEntries(required.map(key => [key, sample(properties[key]?.type)]))
}

/**
 * The client scenarios of both suite lines and what a user does in each. The `auth/*`
 * scenarios are not here: OAuth towards upstreams is a later issue (see run.ts).
 */
export const SCENARIOS: Record<string, Scenario> = {
  // The handshake happens as the gateway boots; a user then looks at the tools.
  initialize: {
    ways: ['rest'],
    run: async face => { log(`tools: ${(await face.listTools()).map(tool => tool.name).join(', ') || 'none'}`) }
  },
  // The same call through each face: one upstream call, whoever asks.
  tools_call: {
    ways: ['rest', 'session', 'modern'],
    run: async face => {
      const [tool] = await face.listTools()
      expect(tool !== undefined, 'the gateway lists no tools')
      log(`${tool.name}: ${await face.callTool(tool.name, { a: 2, b: 3 })}`)
    }
  },
  // The tool asks the caller through the gateway; the caller's SDK fills in the defaults.
  'elicitation-sep1034-client-defaults': {
    ways: ['session'],
    applyDefaults: true,
    elicit: async () => ({ action: 'accept', content: {} }),
    run: async face => {
      await findTool(face, 'test_client_elicitation_defaults')
      const text = await face.callTool('test_client_elicitation_defaults', {})
      log(`test_client_elicitation_defaults: ${text}`)
      expect(text.startsWith('Elicitation completed'), `the tool did not complete the elicitation: ${text}`)
    }
  },
  // The upstream closes the call's SSE stream; the gateway must resume it after `retry`.
  'sse-retry': {
    ways: ['rest'],
    run: async face => {
      await findTool(face, 'test_reconnection')
      log(`test_reconnection: ${await face.callTool('test_reconnection', {})}`)
    }
  },
  // The schema as the gateway shows it, sent back: whatever it dropped, the scenario sees.
  'json-schema-2020-12-preservation': {
    ways: ['rest', 'session'],
    run: async face => {
      const focal = await findTool(face, 'json_schema_2020_12_tool')
      log(`json_schema_echo: ${await face.callTool('json_schema_echo', { schema: focal.inputSchema })}`)
    }
  },
  // Everything that reads a tool's schema: the list, the OpenAPI document (rest) and the
  // argument validation of a call. The scenario's server answers no tools/call, so the call
  // fails; only whether the `$ref` URL was fetched matters.
  'json-schema-ref-no-deref': {
    ways: ['rest'],
    run: async face => {
      await findTool(face, 'lookup_user')
      if (face.openApi !== undefined) log(`OpenAPI document: ${Object.keys((await face.openApi()).paths as object).length} paths`)
      try {
        log(`lookup_user: ${await face.callTool('lookup_user', { id: 'ada' })}`)
      } catch (err) {
        log(`lookup_user failed, as the scenario's server serves no calls: ${(err as Error).message}`)
      }
    }
  },
  // What the gateway puts on each upstream request (SEP-2575), and its retry after -32022.
  'request-metadata': {
    ways: ['modern'],
    run: async face => { log(`tools: ${(await face.listTools()).map(tool => tool.name).join(', ') || 'none'}`) }
  },
  // Mcp-Method and Mcp-Name (SEP-2243) on every kind of request the gateway relays.
  'http-standard-headers': {
    ways: ['modern'],
    run: async face => {
      for (const tool of await face.listTools()) log(`${tool.name}: ${await face.callTool(tool.name, {})}`)
      for (const resource of await face.listResources()) {
        await face.readResource(resource.uri)
        log(`read ${resource.uri}`)
      }
      for (const prompt of await face.listPrompts()) {
        await face.getPrompt(prompt.name)
        log(`got prompt ${prompt.name}`)
      }
    }
  },
  // Mcp-Param-* headers (SEP-2243) for the arguments the scenario gives, null ones included.
  'http-custom-headers': {
    ways: ['modern'],
    run: async (face, context) => {
      const calls = (context.toolCalls ?? []) as Array<{ name: string, arguments: Arguments }>
      expect(calls.length > 0, 'MCP_CONFORMANCE_CONTEXT names no tool calls')
      for (const { name } of calls) await findTool(face, name)
      for (const call of calls) log(`${call.name}: ${await face.callTool(call.name, call.arguments)}`)
    }
  },
  // A user calls every tool the gateway lists: the ones with invalid x-mcp-header
  // declarations must not be among them (SEP-2243), the valid one must.
  'http-invalid-tool-headers': {
    ways: ['rest'],
    run: async face => {
      const tools = await face.listTools()
      log(`tools: ${tools.map(tool => tool.name).join(', ') || 'none'}`)
      expect(tools.some(tool => tool.name === 'valid_tool'), 'the gateway does not list valid_tool')
      for (const tool of tools) {
        try {
          log(`${tool.name}: ${await face.callTool(tool.name, sampleArguments(tool.inputSchema))}`)
        } catch (err) {
          if (tool.name === 'valid_tool') throw err
          log(`${tool.name} failed: ${(err as Error).message}`)
        }
      }
    }
  },
  // Multi-round tool calls (SEP-2322). The caller is asked once per round; while the first
  // question is open it calls an unrelated tool, which must carry nothing of the other call.
  'sep-2322-client-request-state': {
    ways: ['session', 'modern'],
    elicit: (() => {
      let asked = false
      return async (face: Face) => {
        if (!asked) {
          asked = true
          log(`test_mrtr_unrelated, while a question is open: ${await face.callTool('test_mrtr_unrelated', {})}`)
        }
        return { action: 'accept', content: { confirmed: true } }
      }
    })(),
    run: async face => {
      for (const name of ['test_mrtr_echo_state', 'test_mrtr_no_state', 'test_mrtr_no_result_type']) {
        log(`${name}: ${await face.callTool(name, {})}`)
      }
    }
  }
}

/** The text blocks of a tool result; throws when the tool reported an error. */
function resultText (result: unknown, tool: string): string {
  const { content, isError } = result as { content?: Array<{ type: string, text?: string }>, isError?: boolean }
  const text = (content ?? []).map(block => block.text ?? `[${block.type}]`).join('\n')
  if (isError === true) throw new Error(`${tool} returned an error result: ${text}`)
  return text
}

/** The REST face: what `curl` sees. */
function restFace (base: string): Face {
  const send = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const response = await fetch(`${base}${path}`, {
      method,
      ...(body !== undefined && { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    })
    const text = await response.text()
    if (response.status !== 200) throw new Error(`${method} ${path} answered ${response.status}: ${text.slice(0, 500)}`)
    return JSON.parse(text) as Record<string, unknown>
  }
  return {
    listTools: async () => (await send('GET', `/${UPSTREAM}/tools`)).tools as ToolInfo[],
    callTool: async (name, args) => resultText(await send('POST', `/${UPSTREAM}/tools/${encodeURIComponent(name)}`, args), name),
    listResources: async () => (await send('GET', `/${UPSTREAM}/resources`)).resources as Array<{ uri: string }>,
    readResource: async uri => { await send('GET', `/${UPSTREAM}/resources/read?uri=${encodeURIComponent(uri)}`) },
    listPrompts: async () => (await send('GET', `/${UPSTREAM}/prompts`)).prompts as Array<{ name: string }>,
    getPrompt: async name => { await send('POST', `/${UPSTREAM}/prompts/${encodeURIComponent(name)}`, {}) },
    openApi: async () => await send('GET', '/docs/json'),
    close: async () => {}
  }
}

/**
 * An MCP client's face over SDK 1.x (a 2025-era session) or SDK v2 pinned to 2026-07-28:
 * both clients have the same calls. It declares elicitation, sampling and roots, so the
 * gateway may ask it anything; it answers as the scenario says, and declines otherwise.
 */
async function mcpFace (base: string, via: 'session' | 'modern', scenario: Scenario): Promise<Face> {
  const url = new URL(`${base}/${UPSTREAM}/mcp`)
  const elicitation: { form: Record<string, boolean> } = { form: scenario.applyDefaults === true ? { applyDefaults: true } : {} }
  let face: Face | undefined
  const answer = async (params: Record<string, unknown>): Promise<ElicitAnswer> => {
    log(`asked: ${String(params.message ?? 'elicitation')}`)
    return scenario.elicit === undefined || face === undefined ? { action: 'decline' } : await scenario.elicit(face, params)
  }
  const sampled = { model: 'conformance-driver', role: 'assistant' as const, content: { type: 'text' as const, text: 'sampled by the conformance driver' } }
  let client: LegacyClient | Client
  if (via === 'session') {
    const legacy = new LegacyClient(CLIENT_INFO, { capabilities: { elicitation, sampling: {}, roots: {} } })
    legacy.setRequestHandler(ElicitRequestSchema, async request => await answer(request.params))
    legacy.setRequestHandler(CreateMessageRequestSchema, async () => sampled)
    legacy.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [] }))
    await legacy.connect(new LegacyTransport(url))
    client = legacy
  } else {
    const modern = new Client(CLIENT_INFO, {
      capabilities: { elicitation, sampling: {}, roots: {} },
      versionNegotiation: { mode: { pin: '2026-07-28' } }
    })
    modern.setRequestHandler('elicitation/create', async request => await answer(request.params as Record<string, unknown>))
    modern.setRequestHandler('sampling/createMessage', async () => sampled)
    modern.setRequestHandler('roots/list', async () => ({ roots: [] }))
    await modern.connect(new StreamableHTTPClientTransport(url))
    client = modern
  }
  // The two SDKs' calls agree in name and shape, not in type.
  const calls = client as unknown as {
    listTools: () => Promise<{ tools: ToolInfo[] }>
    callTool: (params: { name: string, arguments: Arguments }) => Promise<unknown>
    listResources: () => Promise<{ resources: Array<{ uri: string }> }>
    readResource: (params: { uri: string }) => Promise<unknown>
    listPrompts: () => Promise<{ prompts: Array<{ name: string }> }>
    getPrompt: (params: { name: string }) => Promise<unknown>
    close: () => Promise<void>
  }
  face = {
    listTools: async () => (await calls.listTools()).tools,
    callTool: async (name, args) => resultText(await calls.callTool({ name, arguments: args }), name),
    listResources: async () => (await calls.listResources()).resources,
    readResource: async uri => { await calls.readResource({ uri }) },
    listPrompts: async () => (await calls.listPrompts()).prompts,
    getPrompt: async name => { await calls.getPrompt({ name }) },
    close: async () => { await calls.close() }
  }
  return face
}

/** The gateway with the scenario's server as its one upstream, listening on a loopback port. */
async function startGateway (upstreamUrl: string): Promise<{ app: FastifyInstance, base: string }> {
  // `file` only names the config in messages: there is no file. No aggregate, metrics or
  // status page: nothing but the driven face talks to the upstream.
  const config = parseConfig(JSON.stringify({
    mcpServers: { [UPSTREAM]: { type: 'http', url: upstreamUrl } },
    gateway: { aggregate: false, metrics: { enabled: false }, statusPage: false }
  }), join(root, 'conformance', 'client.json'))
  // Options as the command's (src/server.ts); the log goes to stderr, which the suite keeps.
  const app = Fastify({ ...serverOptions(), logger: { level: 'warn', stream: process.stderr } })
  limitConnections(app.server)
  await app.register(gateway, { config })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('expected a TCP address')
  for (const { name, connection } of app.mcpRegistry.servers()) {
    log(`upstream '${name}' at ${upstreamUrl} is ${connection.state}${connection.failure === undefined ? '' : `: ${connection.failure}`}`)
  }
  return { app, base: `http://127.0.0.1:${address.port}` }
}

function parseArgs (argv: string[]): { via: Via | undefined, url: string } {
  const args = [...argv]
  let via: Via | undefined
  const at = args.indexOf('--via')
  if (at !== -1) {
    const given = args.splice(at, 2)[1]
    if (given !== 'rest' && given !== 'session' && given !== 'modern') throw new Error(`--via must be rest, session or modern (got ${String(given)})`)
    via = given
  }
  const url = args.at(-1)
  if (args.length !== 1 || url === undefined || !URL.canParse(url)) throw new Error('usage: client.ts [--via rest|session|modern] <scenario server URL>')
  return { via, url }
}

async function main (): Promise<number> {
  const name = process.env.MCP_CONFORMANCE_SCENARIO ?? ''
  const scenario = SCENARIOS[name]
  if (scenario === undefined) {
    process.stderr.write(`no drive for scenario '${name}' (MCP_CONFORMANCE_SCENARIO); known: ${Object.keys(SCENARIOS).join(', ')}\n`)
    return 1
  }
  const { via: given, url } = parseArgs(process.argv.slice(2))
  const via = given ?? scenario.ways[0] as Via
  const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT ?? '{}') as Record<string, unknown>
  log(`${name} via ${via}${process.env.MCP_CONFORMANCE_PROTOCOL_VERSION === undefined ? '' : ` at ${process.env.MCP_CONFORMANCE_PROTOCOL_VERSION}`}`)

  const { app, base } = await startGateway(url)
  let face: Face | undefined
  try {
    face = via === 'rest' ? restFace(base) : await mcpFace(base, via, scenario)
    await scenario.run(face, context)
    log('done')
    return 0
  } catch (err) {
    process.stderr.write(`${name} via ${via} failed: ${(err as Error).stack ?? String(err)}\n`)
    return 1
  } finally {
    await face?.close().catch(() => {})
    await app.close()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    process.exitCode = await main()
  } catch (err) {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
  setTimeout(() => {
    process.stderr.write(`still running ${EXIT_GRACE_MS} ms after the gateway closed, held by: ${process.getActiveResourcesInfo().join(', ')}\n`)
    process.exit(1)
  }, EXIT_GRACE_MS).unref()
}
