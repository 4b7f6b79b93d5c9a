import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { localhostAllowedHostnames, validateHostHeader } from '@modelcontextprotocol/server'
import type { McpConnection } from '../src/connections/connection.js'
import type { MountedServer } from '../src/connections/registry.js'
import { UpstreamConnection } from '../src/connections/upstream.js'
import { GATEWAY_INFO } from '../src/defaults.js'
import { ForbiddenHostError, InvalidOptionsError, RouteNotFoundError } from '../src/errors.js'
import { allPages } from '../src/mcp/protocol.js'
import type { ListMethod } from '../src/pipeline/pipeline.js'
import { StatusRecorder } from '../src/pipeline/status.js'

// The status page at `/`: every mounted server (state and since when, why it is down, an
// upstream's last stderr lines, its tools, prompts, resources and endpoints), per-tool figures,
// the recent calls, a try-it form per tool and client setup to copy. Three static files
// (plugins/status/) that work offline (no CDN, no build step), reading `/status.json` every
// ~1.5 s; scripts read the same JSON.
//
// Polling rather than SSE: the JSON is small, the page then needs no stream the drain has to
// end, and a fetch can carry credentials in headers where an EventSource cannot.
//
// Every route here is behind authentication when it is on (the auth plugin protects any route
// it does not know as public), so whoever sees the page may see an upstream's stderr. The
// Host check of the MCP routes applies too, so a DNS-rebinding page cannot read it while
// authentication is off.

const OptionsSchema = Type.Object({
  allowedHosts: Type.Optional(Type.Array(Type.String())),
  pollMs: Type.Optional(Type.Integer({ minimum: 10 })),
  recentCalls: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
  windowMs: Type.Optional(Type.Integer({ minimum: 1000 })),
  samplesPerTool: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  maxTools: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

export interface StatusPluginOptions {
  /** Accepted `Host` names, `*` for any. Default: the MCP routes' default, localhost-class names (`ALLOWED_HOSTS` on the command). */
  allowedHosts?: string[]
  /** How often server states are sampled, for "since when" (a connection announces no change). Default 1000 ms: the page refreshes every ~1.5 s. */
  pollMs?: number
  /** Recent calls kept. Default 100: more than a page shows. */
  recentCalls?: number
  /** Window of the per-tool figures (calls, error rate, p50/p99), in ms. Default 300000: the last five minutes. */
  windowMs?: number
  /** Durations kept per tool within the window. Default 1024: a bound on memory, ample for a p99. */
  samplesPerTool?: number
  /** Tools tracked at most (names come from callers). Default 1000. */
  maxTools?: number
}

/** Where the page's files are: beside this file in the sources, and two levels up from dist/plugins once built (tsc copies no assets). */
function assetsDir (): string {
  const beside = fileURLToPath(new URL('./status/', import.meta.url))
  return existsSync(beside) ? beside : fileURLToPath(new URL('../../plugins/status/', import.meta.url))
}

/** The page's files, read once at boot and served from memory. */
const ASSETS = [
  { url: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { url: '/status.css', file: 'status.css', type: 'text/css; charset=utf-8' },
  { url: '/status.js', file: 'status.js', type: 'text/javascript; charset=utf-8' }
] as const

/** Nothing but the gateway's own origin: the page loads no script, style or font from anywhere else. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/** A server's prompts and resources, listed when it is up and again after its lists change. */
interface Lists {
  prompts: unknown[]
  resources: unknown[]
  resourceTemplates: unknown[]
}

/** Longest wait for an upstream's prompt or resource list; the page answers without them past it. */
const LIST_TIMEOUT_MS = 5000

async function status (app: FastifyInstance, options: StatusPluginOptions): Promise<void> {
  if (!Value.Check(OptionsSchema, options)) {
    const issue = Value.Errors(OptionsSchema, options).First()
    throw new InvalidOptionsError(`status ${issue?.path || '/'} ${issue?.message ?? ''}`.trim())
  }
  const allowedHosts = options.allowedHosts ?? localhostAllowedHostnames()
  const recorder = new StatusRecorder(options)
  app.callPipeline.add(recorder.filter())
  const registry = app.mcpRegistry
  // Across config reloads the gateway has been up since its first build.
  const startedAt = app.gatewayRetained?.startedAt ?? Date.now()

  // State changes, sampled; and the prompt and resource lists, cached until a server's lists
  // change or its state does (an upstream that comes back may offer other ones).
  const lists = new Map<string, Promise<Lists>>()
  const noteStates = (): void => {
    const now = Date.now()
    for (const { name, connection } of registry.servers()) {
      const before = recorder.noteState(name, connection.state, connection.failure, now)[0]
      if (before?.at === now) lists.delete(name)
    }
  }
  const detach = registry.onListChanged(server => { lists.delete(server.name) })
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    noteStates()
    timer = setInterval(noteStates, options.pollMs ?? 1000).unref()
  })
  app.addHook('onClose', async () => {
    clearInterval(timer)
    detach()
  })

  const listsOf = (server: MountedServer): Promise<Lists> => {
    let cached = lists.get(server.name)
    if (cached === undefined) {
      cached = fetchLists(server.connection)
      lists.set(server.name, cached)
      // A failure is not kept: the next read tries again.
      cached.catch(() => { if (lists.get(server.name) === cached) lists.delete(server.name) })
    }
    return cached
  }

  const assets = assetsDir()
  for (const asset of ASSETS) {
    const body = readFileSync(assets + asset.file)
    // The page's own files hold no data, so a browser opens them without credentials; the
    // data (`/status.json`) stays behind the gateway's authentication, and the page asks for
    // a key or token when it is refused.
    app.get(asset.url, { schema: { hide: true }, logLevel: 'warn', config: { public: true } }, async (request, reply) => {
      checkHost(request, allowedHosts)
      // The router takes the asterisk form (`GET *`) for `/`: only the page's own path is the page.
      if (!request.raw.url?.startsWith(asset.url)) throw new RouteNotFoundError(request.method, request.raw.url ?? '')
      return reply
        .type(asset.type)
        .header('cache-control', 'no-cache')
        .header('content-security-policy', CSP)
        .header('x-content-type-options', 'nosniff')
        .send(body)
    })
  }

  // The page polls every ~1.5 s: at `info` each poll would be two request lines in the log.
  app.get('/status.json', {
    logLevel: 'warn',
    schema: {
      tags: ['gateway'],
      operationId: 'status',
      summary: 'What the status page at / shows: every server with its state, tools, prompts, resources and endpoints; per-tool calls, error rate and p50/p99 over the last minutes; the recent calls.'
    }
  }, async (request, reply) => {
    checkHost(request, allowedHosts)
    noteStates()
    const now = Date.now()
    const security = app.gatewaySecurity
    const servers = await Promise.all(registry.servers().map(async server => await serverStatus(server, request)))
    const visible = new Set(servers.map(server => server.name))
    recorder.keepStates(new Set(registry.servers().map(server => server.name)))
    void reply.header('cache-control', 'no-store')
    return {
      gateway: {
        version: GATEWAY_INFO.version,
        startedAt: new Date(startedAt).toISOString(),
        now: new Date(now).toISOString(),
        baseUrl: security?.publicUrl ?? `${request.protocol}://${request.host}`,
        auth: security?.auth !== undefined && security.auth.mode !== 'none',
        aggregate: app.hasRoute({ method: 'POST', url: '/mcp' }) ? '/mcp' : null,
        docs: { swagger: '/docs', redoc: '/redoc', openapi: '/docs/json' },
        windowMs: recorder.windowMs,
        reload: app.gatewayRetained?.lastReload ?? null,
        // The shared Redis (plugins/redis.ts), as `/ready` shows it; null without one.
        redis: app.gatewayCluster === undefined ? null : { status: app.gatewayCluster.available ? 'up' : 'down' }
      },
      servers,
      tools: recorder.tools(now).filter(figures => visible.has(figures.server) && allows(request, figures.server, 'tools/list', figures.tool)),
      recentCalls: recorder.recentCalls(),
      untracked: recorder.untracked
    }
  })

  /** Whether the caller may see an item: the one decision the REST lists make too (policy, scopes). */
  function allows (request: FastifyRequest, server: string, method: ListMethod, name: string): boolean {
    return app.callPipeline.allows({
      server,
      method: method === 'tools/list' ? 'tools/call' : method === 'prompts/list' ? 'prompts/get' : 'resources/read',
      name,
      ...(request.identity !== undefined && { identity: request.identity }),
      way: 'rest',
      ip: request.ip
    })
  }

  function visibleOf<T> (request: FastifyRequest, server: string, method: ListMethod, items: unknown[], key: string): T[] {
    return (items as Array<Record<string, unknown>>).filter(item => allows(request, server, method, String(item[key]))) as T[]
  }

  async function serverStatus (server: MountedServer, request: FastifyRequest): Promise<Record<string, unknown>> {
    const { name, prefix, connection } = server
    const changes = recorder.noteState(name, connection.state, connection.failure)
    const capabilities = connection.state === 'up' ? connection.capabilities() : {}
    let listed: Lists = { prompts: [], resources: [], resourceTemplates: [] }
    let listError: string | undefined
    if (connection.state === 'up' && (capabilities.prompts !== undefined || capabilities.resources !== undefined)) {
      try {
        listed = await listsOf(server)
      } catch {
        listError = 'the server did not list its prompts or resources'
      }
    }
    const upstream = connection instanceof UpstreamConnection
    return {
      name,
      prefix,
      kind: upstream ? 'upstream' : 'in-process',
      state: connection.state,
      since: new Date(changes[0]?.at ?? startedAt).toISOString(),
      ...(connection.failure !== undefined && { failure: connection.failure }),
      ...(connection.retryAfter !== undefined && { retryAfter: connection.retryAfter }),
      ...(server.required === true && { required: true }),
      ...(server.scopes !== undefined && server.scopes.length > 0 && { scopes: server.scopes }),
      history: changes.map(change => ({ ...change, at: new Date(change.at).toISOString() })),
      endpoints: {
        mcp: `${prefix}/mcp`,
        rest: `${prefix}/tools`,
        ...(capabilities.prompts !== undefined && { prompts: `${prefix}/prompts` }),
        ...(capabilities.resources !== undefined && { resources: `${prefix}/resources` }),
        ready: `/ready/${name}`
      },
      ...(upstream && { stderr: connection.stderrTail() }),
      tools: visibleOf(request, name, 'tools/list', [...connection.tools()], 'name'),
      prompts: visibleOf(request, name, 'prompts/list', listed.prompts, 'name'),
      resources: visibleOf(request, name, 'resources/list', listed.resources, 'uri'),
      resourceTemplates: visibleOf(request, name, 'resources/templates/list', listed.resourceTemplates, 'uriTemplate'),
      ...(listError !== undefined && { listError })
    }
  }
}

async function fetchLists (connection: McpConnection): Promise<Lists> {
  const capabilities = connection.capabilities()
  const list = async (method: string, key: string): Promise<unknown[]> =>
    await allPages(async params => await connection.request(method, params, { timeoutMs: LIST_TIMEOUT_MS }), key)
  const [prompts, resources, resourceTemplates] = await Promise.all([
    capabilities.prompts === undefined ? [] : list('prompts/list', 'prompts'),
    capabilities.resources === undefined ? [] : list('resources/list', 'resources'),
    // Some servers with resources answer no template list at all: that is none, not a failure.
    capabilities.resources === undefined ? [] : list('resources/templates/list', 'resourceTemplates').catch(() => [])
  ])
  return { prompts, resources, resourceTemplates }
}

function checkHost (request: FastifyRequest, allowedHosts: string[]): void {
  if (allowedHosts.includes('*')) return
  const host = validateHostHeader(request.headers.host, allowedHosts)
  if (!host.ok) throw new ForbiddenHostError(host.message)
}

export default fp(status, { name: 'gateway-status', fastify: '5.x', dependencies: ['gateway-core'] })
