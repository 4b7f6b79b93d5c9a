import { createInterface } from 'node:readline'
import type { Readable, Writable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import {
  Client,
  SSEClientTransport,
  StreamableHTTPClientTransport,
  type ClientCapabilities,
  type Progress,
  type Transport
} from '@modelcontextprotocol/client'
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/client/stdio'
import { GATEWAY_INFO } from '../defaults.js'
import { CallError } from '../errors.js'
import { LIST_CHANGED, QUESTIONS } from '../mcp/protocol.js'
import type { Downstream, McpMessage, RelaySession } from './connection.js'

// One client connection to an upstream server ("a link"): its transport, its child process
// for stdio, and the write batching. What a link's messages mean (routing, state, backoff)
// is the upstream connection's business (upstream.ts).

/** How to reach an upstream server. */
export type UpstreamTransport =
  | { kind: 'stdio', command: string, args: string[], env: Record<string, string>, cwd?: string }
  | { kind: 'http' | 'sse', url: string, headers: Record<string, string> }

/** One SDK client connection to the upstream, and the downstream requests waiting on it. */
export interface Link {
  client: Client
  transport: Transport
  pid: number | undefined
  /** Requests in flight, with the downstream client of each (undefined for REST calls). */
  inflight: Map<symbol, Downstream | undefined>
  /** Set for a session's own link: where unrelated messages go. */
  session: RelaySession | undefined
}

/** What the owner of a link hears from it. */
export interface LinkEvents {
  /** A server→client request (sampling, elicitation, roots): the answer goes back upstream. */
  ask (link: Link, request: McpMessage): Promise<Record<string, unknown>>
  /** Progress of a request, by the progress token the owner gave it. */
  progress (token: string, progress: Progress): void
  /** A notification the SDK did not tie to a request: list changes, updates, log messages. */
  unrelated (link: Link, notification: McpMessage): void
  /** The link ended, for whatever reason, after its child was forgotten. */
  closed (link: Link): void
}

export interface LinkOptions {
  /** A session's own link, or undefined for a shared one. */
  session: RelaySession | undefined
  /** What the gateway declares it can pass on to its clients on this link. */
  capabilities: ClientCapabilities
  /** Probe for 2026-07-28 (`server/discover`) and hand `input_required` answers back. */
  modern: boolean
  /** Longest wait for the connection and its `initialize`. */
  connectTimeoutMs: number
  log: FastifyBaseLogger | undefined
}

/** Child processes alive now, killed if the gateway's own process exits without closing them. */
const children = new Set<number>()
let exitHookInstalled = false
function trackChild (pid: number): void {
  children.add(pid)
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Runs on process.exit and on an uncaught exception; a SIGKILL of the gateway leaves the
  // children to notice their stdin closing, which every stdio MCP server treats as the end.
  process.once('exit', () => {
    for (const child of children) {
      try { process.kill(child, 'SIGKILL') } catch {}
    }
  })
}

/**
 * Opens one client connection within `options.connectTimeoutMs`; `events.closed` runs when
 * it ends, for whatever reason.
 */
export async function openLink (spec: UpstreamTransport, options: LinkOptions, events: LinkEvents): Promise<Link> {
  const timeout = options.connectTimeoutMs
  const { capabilities, modern, session, log } = options
  const client = new Client(GATEWAY_INFO, {
    capabilities,
    // The modern link probes for 2026-07-28 (`server/discover`) and hands `input_required`
    // answers back to the relay, which passes them on to the client they are for.
    ...(modern && { versionNegotiation: { mode: 'auto', probe: { timeoutMs: timeout } }, inputRequired: { autoFulfill: false } })
  })
  const transport = upstreamTransport(spec, log)
  const link: Link = { client, transport, pid: undefined, inflight: new Map(), session }
  client.onclose = () => {
    if (link.pid !== undefined) children.delete(link.pid)
    events.closed(link)
  }
  client.onerror = err => { log?.debug({ err }, 'upstream mcp client error') }
  // The SDK refuses a handler for a capability the client does not declare.
  for (const [capability, method] of Object.entries(QUESTIONS)) {
    if (capabilities[capability as keyof typeof QUESTIONS] === undefined) continue
    client.setRequestHandler(method, async request => await events.ask(link, { method, ...(request.params !== undefined && { params: request.params }) }) as never)
  }
  client.setNotificationHandler('notifications/progress', notification => {
    const { progressToken, ...progress } = notification.params
    events.progress(String(progressToken), progress)
  })
  for (const method of [...Object.keys(LIST_CHANGED), 'notifications/resources/updated', 'notifications/message']) {
    client.setNotificationHandler(method as 'notifications/message', notification => { events.unrelated(link, notification as McpMessage) })
  }
  try {
    await withTimeout(client.connect(transport, { timeout }), timeout, `no answer to initialize within ${timeout} ms`)
  } catch (err) {
    await closeLink(link)
    throw err
  }
  if (transport instanceof StdioClientTransport && transport.pid !== null) {
    link.pid = transport.pid
    trackChild(transport.pid)
    coalesceWrites(transport)
  }
  return link
}

function upstreamTransport (spec: UpstreamTransport, log: FastifyBaseLogger | undefined): Transport {
  if (spec.kind === 'stdio') {
    const transport = new StdioClientTransport({
      command: spec.command,
      args: spec.args,
      env: { ...getDefaultEnvironment(), ...spec.env },
      ...(spec.cwd !== undefined && { cwd: spec.cwd }),
      stderr: 'pipe'
    })
    // The child's stderr is its log: each line goes to the gateway's, under the server's name.
    const stderr = transport.stderr as Readable | null
    if (stderr !== null) {
      createInterface({ input: stderr }).on('line', line => { log?.info({ stderr: line }, 'upstream mcp server stderr') })
    }
    return transport
  }
  const requestInit = { headers: spec.headers }
  return spec.kind === 'sse'
    ? new SSEClientTransport(new URL(spec.url), { requestInit, eventSourceInit: { fetch: (url, init) => fetch(url, { ...init, headers: { ...spec.headers, ...(init?.headers as Record<string, string>) } }) } })
    : new StreamableHTTPClientTransport(new URL(spec.url), { requestInit })
}

/**
 * Sends the messages of one event-loop turn to a child in one write: under load, many
 * downstream calls arrive in the same turn, and a pipe write per message was the largest
 * single cost of a proxied call (a system call each). The stream is corked at the turn's
 * first message and uncorked once the turn's I/O is done (`setImmediate`).
 *
 * The SDK's stdio transport does not expose the child's stdin, so this reaches its private
 * `_process`; when that is not there (another SDK version), messages go out one by one.
 */
function coalesceWrites (transport: StdioClientTransport): void {
  const stdin = (transport as unknown as { _process?: { stdin?: Writable | null } })._process?.stdin
  if (stdin === undefined || stdin === null) return
  const send = transport.send.bind(transport)
  let corked = false
  transport.send = async message => {
    if (!corked) {
      corked = true
      stdin.cork()
      setImmediate(() => {
        corked = false
        stdin.uncork()
      })
    }
    await send(message)
  }
}

/** Ends a link; an HTTP upstream is told its session is over (DELETE) first. */
export async function closeLink (link: Link): Promise<void> {
  if (link.transport instanceof StreamableHTTPClientTransport && link.transport.sessionId !== undefined) {
    await link.transport.terminateSession().catch(() => {})
  }
  await link.client.close().catch(() => {})
}

function withTimeout<T> (promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new CallError('REQUEST_TIMEOUT', message)) }, ms)
  })
  return Promise.race([promise, timeout]).finally(() => { clearTimeout(timer) })
}
