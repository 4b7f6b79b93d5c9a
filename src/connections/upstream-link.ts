import type { ChildProcess } from 'node:child_process'
import type { Readable, Writable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import {
  Client,
  SSEClientTransport,
  StreamableHTTPClientTransport,
  type ClientCapabilities,
  type JSONRPCMessage,
  type MessageExtraInfo,
  type PriorDiscovery,
  type Progress,
  type ProtocolEra,
  type Transport
} from '@modelcontextprotocol/client'
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/client/stdio'
import { GATEWAY_INFO } from '../defaults.js'
import { CallError } from '../errors.js'
import { LIST_CHANGED, QUESTIONS } from '../mcp/protocol.js'
import type { Downstream, McpMessage, RelaySession } from './connection.js'
import { describeExit, describeFailure, UpstreamFailure, type ChildExit, type Secrets } from './failure.js'

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
  /** The revision the link speaks: `modern` (2026-07-28, per-request `_meta`) or `legacy` (2025, `initialize`). */
  era: ProtocolEra
  pid: number | undefined
  /** How its child process ended, once it has (stdio only). */
  exit: ChildExit | undefined
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
  /**
   * `probe` finds out which revision the server speaks (see `openLink`); a verdict of an
   * earlier probe of the same server (`PriorDiscovery`) opens the link in that revision at once.
   */
  negotiation: 'probe' | PriorDiscovery
  /** Longest wait for the connection and its `initialize` (for a probe, for each of its two steps). */
  connectTimeoutMs: number
  log: FastifyBaseLogger | undefined
  /** The entry's secrets, masked in everything this link logs. */
  secrets: Secrets
  /** Where a child's stderr goes: the server's log and its tail. */
  stderr: StderrLog | undefined
}

/** Longest stderr line kept, in bytes: a longer one is cut and marked, and no more of it is held. */
const STDERR_LINE_BYTES = 8 * 1024
/** Most stderr lines logged per second per server; the rest are counted, and the count logged. */
const STDERR_LINES_PER_SECOND = 20
/** Stderr lines kept per server for operators (`stderrTail()`), and logged with a failed start. */
const STDERR_TAIL_LINES = 50
/** Longest wait, after a failed start, for the rest of the dead child's stderr. */
const STDERR_DRAIN_MS = 1000

/** One line of a child's stderr. */
interface StderrLine { text: string, truncated: boolean }

/**
 * A server's stderr, from all its children: the last lines, kept for operators, and the log,
 * at most `STDERR_LINES_PER_SECOND` lines a second (a child that floods it is summed up in
 * one line per second saying how many were dropped). Lines are masked as they are logged or
 * read, never stored twice.
 */
export class StderrLog {
  #log: FastifyBaseLogger | undefined
  #secrets: Secrets
  #tail: StderrLine[] = []
  #windowStart = 0
  #inWindow = 0
  #dropped = 0
  #timer: NodeJS.Timeout | undefined

  constructor (log: FastifyBaseLogger | undefined, secrets: Secrets) {
    this.#log = log
    this.#secrets = secrets
  }

  /** Keeps a line in the tail. */
  remember (line: StderrLine): void {
    this.#tail.push(line)
    if (this.#tail.length > STDERR_TAIL_LINES) this.#tail.shift()
  }

  /** Logs a line, unless this second's lines are used up. */
  log (line: StderrLine): void {
    const now = Date.now()
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now
      this.#inWindow = 0
    }
    if (this.#inWindow < STDERR_LINES_PER_SECOND) {
      this.#inWindow++
      this.#log?.info({ stderr: this.#secrets.mask(line.text), ...(line.truncated && { truncated: true }) }, 'upstream mcp server stderr')
      return
    }
    this.#dropped++
    if (this.#timer !== undefined) return
    this.#timer = setTimeout(() => { this.#reportDropped() }, Math.max(1, this.#windowStart + 1000 - now))
    this.#timer.unref()
  }

  /** The last lines, masked, oldest first; a cut line ends with ` [truncated]`. */
  tail (lines: readonly StderrLine[] = this.#tail): string[] {
    return lines.map(line => this.#secrets.mask(line.text) + (line.truncated ? ' [truncated]' : ''))
  }

  close (): void {
    clearTimeout(this.#timer)
    this.#reportDropped()
  }

  #reportDropped (): void {
    this.#timer = undefined
    if (this.#dropped === 0) return
    this.#log?.warn({ dropped: this.#dropped, limitPerSecond: STDERR_LINES_PER_SECOND }, 'upstream mcp server stderr lines dropped')
    this.#dropped = 0
  }
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
 *
 * The revision, when the link probes: 2026-07-28 first, then 2025, as the 2026-07-28
 * revision's backward-compatibility section has a client that speaks both find out
 * (basic/versioning#backward-compatibility-with-initialization-based-versions). On stdio
 * the SDK sends `server/discover` (on a short-lived sibling process, so a server that exits
 * on an unknown request before `initialize` costs nothing but that sibling) and falls back to
 * `initialize` on any answer that is not a recognised 2026-07-28 one, or none within the
 * timeout; on Streamable HTTP it sends a 2026-07-28 request and falls back on a 4xx without a
 * recognised 2026-07-28 error in its body. An `UnsupportedProtocolVersionError` (-32022)
 * marks a 2026-07-28 server, and the request is made again in a version it lists. The other
 * order cannot work: a server that speaks only 2026-07-28 refuses `initialize`, and the spec
 * gives a 2025-era opening no way forward. The HTTP+SSE transport is 2025-era by definition,
 * so it does not probe.
 *
 * Every link hands `input_required` answers back (`autoFulfill: false`): whom to ask is the
 * upstream connection's business, per caller (see `request` in upstream.ts).
 */
export async function openLink (spec: UpstreamTransport, options: LinkOptions, events: LinkEvents): Promise<Link> {
  const timeout = options.connectTimeoutMs
  const { capabilities, negotiation, session, log } = options
  const probe = negotiation === 'probe' && spec.kind !== 'sse'
  const client = new Client(GATEWAY_INFO, {
    capabilities,
    versionNegotiation: { mode: probe ? 'auto' : 'legacy', probe: { timeoutMs: timeout } },
    inputRequired: { autoFulfill: false }
  })
  // What the child writes while it starts is held back: logged line by line once it is up,
  // or as one entry with the failure if it does not come up (a crash at boot would
  // otherwise log its stderr line by line at every retry).
  let held: StderrLine[] | undefined = []
  const onStderr = (line: StderrLine): void => {
    options.stderr?.remember(line)
    if (held === undefined) {
      options.stderr?.log(line)
      return
    }
    held.push(line)
    if (held.length > STDERR_TAIL_LINES) held.shift()
  }
  const { transport, stderrEnded } = upstreamTransport(spec, onStderr)
  const link: Link = { client, transport, era: 'legacy', pid: undefined, exit: undefined, inflight: new Map(), session }
  let child: ChildProcess | undefined
  if (transport instanceof StdioClientTransport) {
    // The SDK's stdio transport forgets its child before it reports the close, so the exit
    // code and signal are taken here, from the child it spawns in `start` (a private field;
    // without it, failures say only that the process exited).
    const start = transport.start.bind(transport)
    transport.start = async () => {
      const starting = start()
      child = (transport as unknown as { _process?: ChildProcess })._process
      child?.once('exit', (code, signal) => { link.exit = { code, signal } })
      await starting
    }
  }
  client.onclose = () => {
    if (link.pid !== undefined) children.delete(link.pid)
    events.closed(link)
  }
  client.onerror = err => { log?.debug({ err: options.secrets.error(err) }, 'upstream mcp client error') }
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
  const prior = typeof negotiation === 'object' && spec.kind !== 'sse' ? negotiation : undefined
  try {
    // A probe takes two steps when it falls back (`server/discover`, then `initialize`), each within the timeout.
    await withTimeout(client.connect(transport, { timeout, ...(prior !== undefined && { prior }) }), probe ? 2 * timeout : timeout, `no answer to initialize within ${timeout} ms`)
    link.era = client.getProtocolEra() ?? 'legacy'
    if (link.era === 'modern') completeByDefault(transport)
  } catch (err) {
    // Worded before the close, which ends a child that is still running.
    let description = describeFailure(err, { exit: link.exit, starting: true })
    if (link.exit !== undefined) description = `${describeExit(link.exit)} while starting (see the log)`
    await closeLink(link)
    // A dead child's last words may still be in the pipe.
    if (child?.pid !== undefined && stderrEnded !== undefined) await within(stderrEnded, STDERR_DRAIN_MS)
    const stderr = held.length > 0 ? options.stderr?.tail(held) : undefined
    held = undefined
    throw new UpstreamFailure(description, options.secrets.error(err), stderr)
  }
  for (const line of held) options.stderr?.log(line)
  held = undefined
  if (transport instanceof StdioClientTransport && transport.pid !== null) {
    link.pid = transport.pid
    trackChild(transport.pid)
    coalesceWrites(transport)
  }
  return link
}

function upstreamTransport (spec: UpstreamTransport, onStderr: (line: StderrLine) => void): { transport: Transport, stderrEnded?: Promise<void> } {
  if (spec.kind === 'stdio') {
    const transport = new StdioClientTransport({
      command: spec.command,
      args: spec.args,
      env: { ...getDefaultEnvironment(), ...spec.env },
      ...(spec.cwd !== undefined && { cwd: spec.cwd }),
      stderr: 'pipe'
    })
    readResultsDirectly(transport)
    // The child's stderr is its log: each line goes to the gateway's, under the server's name.
    const stderr = transport.stderr as Readable | null
    return { transport, ...(stderr !== null && { stderrEnded: readLines(stderr, onStderr) }) }
  }
  const { url, headers } = httpTarget(spec)
  const requestInit = { headers }
  return {
    transport: spec.kind === 'sse'
      ? new SSEClientTransport(url, { requestInit, eventSourceInit: { fetch: (input, init) => fetch(input, { ...init, headers: { ...headers, ...(init?.headers as Record<string, string>) } }) } })
      : new StreamableHTTPClientTransport(url, { requestInit })
  }
}

/**
 * An HTTP upstream's URL and headers. `fetch` refuses a URL with credentials in it
 * (`https://user:password@host/mcp`), so they are sent as Basic authorization, as curl sends
 * them, unless the entry's headers already say how to authorize.
 */
function httpTarget (spec: Extract<UpstreamTransport, { kind: 'http' | 'sse' }>): { url: URL, headers: Record<string, string> } {
  const url = new URL(spec.url)
  if (url.username === '' && url.password === '') return { url, headers: spec.headers }
  const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
  url.username = ''
  url.password = ''
  if (Object.keys(spec.headers).some(name => name.toLowerCase() === 'authorization')) return { url, headers: spec.headers }
  return { url, headers: { ...spec.headers, Authorization: `Basic ${Buffer.from(credentials).toString('base64')}` } }
}

/**
 * Splits a child's stderr into lines, holding at most `STDERR_LINE_BYTES` of a line: the rest
 * of a longer one is dropped as it arrives and the line is marked truncated (readline would
 * buffer a whole line, however long). Empty lines are skipped. Resolves when the stream ends.
 */
function readLines (stream: Readable, onLine: (line: StderrLine) => void): Promise<void> {
  const line = Buffer.allocUnsafe(STDERR_LINE_BYTES)
  let size = 0
  let truncated = false
  const emit = (): void => {
    const end = size > 0 && line[size - 1] === 0x0d ? size - 1 : size
    if (end > 0 || truncated) onLine({ text: line.toString('utf8', 0, end), truncated })
    size = 0
    truncated = false
  }
  stream.on('data', (chunk: Buffer | string) => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    let start = 0
    for (;;) {
      const newline = bytes.indexOf(0x0a, start)
      const end = newline === -1 ? bytes.length : newline
      const room = STDERR_LINE_BYTES - size
      if (end - start > room) truncated = true
      size += bytes.copy(line, size, start, start + Math.min(room, end - start))
      if (newline === -1) return
      emit()
      start = newline + 1
    }
  })
  return new Promise(resolve => {
    const done = (): void => {
      emit()
      resolve()
    }
    stream.once('end', done)
    stream.once('error', done)
  })
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
  const uncork = (): void => {
    corked = false
    stdin.uncork()
  }
  transport.send = message => {
    if (!corked) {
      corked = true
      stdin.cork()
      setImmediate(uncork)
    }
    return send(message)
  }
}

/**
 * Hands a plain successful answer from a child to the client as `JSON.parse` made it. The
 * SDK's stdio transport runs every line through the zod union of all JSON-RPC messages, which
 * copies every object it matches: the largest allocation of a proxied call, for an answer
 * that the client checks again (`isJSONRPCResultResponse`) and the relay server validates
 * against the method's result schema anyway. Only a line the union would return unchanged
 * takes this path: exactly `jsonrpc: "2.0"`, an integer or string `id` and an object
 * `result` without `_meta` (whose `serverInfo` the schema may drop); requests,
 * notifications, errors and anything unusual go through the SDK's own reader, as before.
 *
 * The reader is the transport's private `_readBuffer`; when that is not there (another SDK
 * version), every line takes the SDK's path.
 */
function readResultsDirectly (transport: StdioClientTransport): void {
  const reader = (transport as unknown as { _readBuffer?: { _buffer?: Buffer, readMessage?: () => JSONRPCMessage | null } })._readBuffer
  if (typeof reader?.readMessage !== 'function' || !('_buffer' in reader)) return
  const readMessage = reader.readMessage.bind(reader)
  reader.readMessage = () => {
    const pending = reader._buffer
    if (pending === undefined) return null
    const end = pending.indexOf(0x0a)
    if (end === -1) return null
    const line = pending.toString('utf8', 0, end > 0 && pending[end - 1] === 0x0d ? end - 1 : end)
    let message: unknown
    try {
      message = JSON.parse(line)
    } catch {
      // Not JSON: the SDK's reader skips the line, as it always has.
      return readMessage()
    }
    if (!isPlainResult(message)) return readMessage()
    reader._buffer = pending.subarray(end + 1)
    return message
  }
}

/** A JSON-RPC result response the SDK's message schema would return as it is (see `readResultsDirectly`). */
function isPlainResult (message: unknown): message is JSONRPCMessage {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return false
  let keys = 0
  for (const key in message) {
    if (key !== 'jsonrpc' && key !== 'id' && key !== 'result') return false
    keys++
  }
  const { jsonrpc, id, result } = message as { jsonrpc?: unknown, id?: unknown, result?: unknown }
  return keys === 3 && jsonrpc === '2.0' && (typeof id === 'string' || Number.isSafeInteger(id)) &&
    typeof result === 'object' && result !== null && !Array.isArray(result) && !('_meta' in result)
}

/**
 * Takes a 2026-07-28 result without `resultType` as `complete`, as SEP-2322 has a client do
 * (the official client scenario `sep-2322-client-request-state` checks it), where the SDK
 * client refuses such a result as invalid. Applied to each message as it arrives, before
 * the SDK decodes it; connected already, so the protocol's handler is in place.
 */
function completeByDefault (transport: Transport): void {
  const deliver = transport.onmessage
  if (deliver === undefined) return
  transport.onmessage = ((message: JSONRPCMessage, extra?: MessageExtraInfo) => {
    const result = 'result' in message ? message.result as Record<string, unknown> | null : undefined
    deliver(result !== undefined && result !== null && typeof result === 'object' && !('resultType' in result)
      ? { ...message, result: { ...result, resultType: 'complete' } } as JSONRPCMessage
      : message, extra)
  }) as Transport['onmessage']
}

/** Ends a link; an HTTP upstream is told its session is over (DELETE) first. */
export async function closeLink (link: Link): Promise<void> {
  if (link.transport instanceof StreamableHTTPClientTransport && link.transport.sessionId !== undefined) {
    await link.transport.terminateSession().catch(() => {})
  }
  await link.client.close().catch(() => {})
}

/** Waits for `promise`, but no longer than `ms`. */
async function within (promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([promise, new Promise<void>(resolve => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

function withTimeout<T> (promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new CallError('REQUEST_TIMEOUT', message)) }, ms)
  })
  return Promise.race([promise, timeout]).finally(() => { clearTimeout(timer) })
}

/**
 * What a link found out about its server's revision, for the next link to the same server:
 * the spec lets a client keep the verdict for the life of the server process (stdio) or
 * origin (HTTP), so a session's own link opens in it without probing again.
 */
export function verdictOf (link: Link): PriorDiscovery {
  const discover = link.client.getDiscoverResult()
  return link.era === 'modern' && discover !== undefined ? { kind: 'modern', discover } : { kind: 'legacy' }
}
