import { ProtocolError, SdkError, SseError } from '@modelcontextprotocol/client'
import { CallError } from '../errors.js'

// What the gateway says about an upstream that failed, and what it logs. Whatever an
// upstream's error holds (its HTTP error body, a URL with credentials, a header or env value,
// the spawn arguments) stays out of every answer: `/ready`, 503 messages and the banner get
// the gateway's own words, derived from the error's kind, never from its text. The real
// error goes to the log only, masked.

/** What replaces a secret in logged text. */
const MASK = '***'
/** Configured values shorter than this are not masked: `1` or `true` would blot out the log. */
const MIN_SECRET_LENGTH = 4
/** Longest message or body of a logged upstream error: an error page is no log line. */
const MAX_LOGGED_CHARS = 2048

/** `scheme://user:password@` (or `scheme://token@`): the credentials part. */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s:/?#@]+)(?::([^\s/?#@]*))?@/gi
/** A parameter name that says it holds a secret: `api_key`, `access_token`, `password`, `sig`... */
const SECRET_NAME = /token|key|secret|pass(?:word|wd)?|pwd|auth|signature|sig|credential|session/i
/** A query or fragment parameter with such a name, and its value. */
const SECRET_PARAMETER = new RegExp(`([?&#;][^=&#\\s"'<>]*?(?:${SECRET_NAME.source})[^=&#\\s"'<>]*=)[^&#\\s"'<>]*`, 'gi')
/** A stdio argument that carries a secret after its flag: `--token=...`, `--api-key=...`. */
const SECRET_FLAG = /^--?[\w.-]*(?:token|key|secret|pass(?:word|wd)?|pwd|auth|credential)[\w.-]*=(.+)$/i
/** A flag whose next argument is a secret: `--token ...`. */
const SECRET_FLAG_ALONE = /^--?[\w.-]*(?:token|key|secret|pass(?:word|wd)?|pwd|auth|credential)[\w.-]*$/i

/** What of an upstream's transport may hold secrets (`UpstreamTransport` fits it). */
export type SecretHolder =
  | { kind: 'stdio', args: string[], env: Record<string, string> }
  | { kind: 'http' | 'sse', url: string, headers: Record<string, string> }

/**
 * Masks an entry's secrets in text it logs: credentials and secret-looking query values in
 * any URL, and every occurrence of a configured header or env value (and of a secret-looking
 * argument's value), which an upstream may echo in its errors or on stderr.
 */
export class Secrets {
  /** Longest first, so a value that contains another is masked whole. */
  #values: string[]

  constructor (values: Iterable<string>) {
    this.#values = [...new Set([...values].filter(value => value.length >= MIN_SECRET_LENGTH))].sort((a, b) => b.length - a.length)
  }

  /** The secrets of one config entry. */
  static of (transport: SecretHolder): Secrets {
    const values: string[] = []
    if (transport.kind === 'stdio') {
      values.push(...Object.values(transport.env))
      transport.args.forEach((arg, i) => {
        const flagged = SECRET_FLAG.exec(arg)?.[1]
        if (flagged !== undefined) values.push(flagged)
        const next = transport.args[i + 1]
        if (SECRET_FLAG_ALONE.test(arg) && next !== undefined) values.push(next)
      })
    } else {
      for (const value of Object.values(transport.headers)) {
        values.push(value)
        // `Bearer <token>`: an upstream may echo the token alone.
        const credential = /^\S+\s+(\S+)$/.exec(value)?.[1]
        if (credential !== undefined) values.push(credential)
      }
      if (URL.canParse(transport.url)) {
        const url = new URL(transport.url)
        const [user, password] = [decodeURIComponent(url.username), decodeURIComponent(url.password)]
        // A user name is no secret, unless it is all there is (`https://<token>@host`).
        values.push(password === '' ? user : password)
        // Sent as Basic authorization (see `httpTarget` in upstream-link.ts), which an upstream may echo.
        if (user !== '' || password !== '') values.push(Buffer.from(`${user}:${password}`).toString('base64'))
        for (const [name, value] of url.searchParams) if (SECRET_NAME.test(name)) values.push(value)
      }
    }
    return new Secrets(values)
  }

  /** `text` with every secret in it replaced by `***`. */
  mask (text: string): string {
    let masked = text
      .replace(URL_CREDENTIALS, (_match, scheme: string, user: string, password: string | undefined) => password === undefined ? `${scheme}${MASK}@` : `${scheme}${user}:${MASK}@`)
      .replace(SECRET_PARAMETER, `$1${MASK}`)
    for (const value of this.#values) if (masked.includes(value)) masked = masked.split(value).join(MASK)
    return masked
  }

  /**
   * An upstream's error as the log may show it: its kind, its masked message and stack, its
   * code, and an HTTP error's status and masked body, cut short. Nothing else of it: a spawn
   * error's `spawnargs` and `envPairs` hold the command's arguments and environment.
   */
  error (err: unknown, depth = 0): Error {
    const source = err instanceof Error ? err : new Error(String(err))
    const masked = new Error(this.mask(source.message).slice(0, MAX_LOGGED_CHARS))
    masked.name = source.name
    masked.stack = this.mask(source.stack ?? '').slice(0, MAX_LOGGED_CHARS * 2)
    const { code, data } = source as { code?: unknown, data?: unknown }
    if (typeof code === 'string' || typeof code === 'number') Object.assign(masked, { code })
    const status = httpStatusOf(source)
    if (status !== undefined) Object.assign(masked, { status })
    const body = (data as { text?: unknown } | undefined)?.text
    if (typeof body === 'string' && body !== '') Object.assign(masked, { body: this.mask(body).slice(0, MAX_LOGGED_CHARS) })
    if (source.cause !== undefined && depth < 3) masked.cause = this.error(source.cause, depth + 1)
    return masked
  }
}

/** A failure of an upstream in the gateway's words (`message`), with the masked real error as `cause`. */
export class UpstreamFailure extends Error {
  /**
   * What the child wrote on stderr during a start that failed, masked, for the one log entry
   * that reports the failure (not enumerable, so other logs of the error do not repeat it).
   */
  declare readonly stderr: string[] | undefined
  constructor (description: string, cause: Error | undefined, stderr?: string[]) {
    super(description, cause === undefined ? undefined : { cause })
    this.name = 'UpstreamFailure'
    Object.defineProperty(this, 'stderr', { value: stderr, enumerable: false })
  }
}

/** How a child process ended, as its `exit` event told. */
export interface ChildExit { code: number | null, signal: NodeJS.Signals | null }

/** What the gateway knows besides the error when describing a failure. */
export interface FailureContext {
  /** The child's end, for stdio links whose process exited. */
  exit?: ChildExit | undefined
  /** Whether the failure happened while starting (connecting and `initialize`). */
  starting?: boolean
}

/** A child's end in words: `the server process exited with code 1`, `... exited (killed by SIGKILL)`. */
export function describeExit (exit: ChildExit | undefined, pid?: number): string {
  const process = pid === undefined ? 'the server process' : `the server process (pid ${pid})`
  if (exit?.signal != null) return `${process} exited (killed by ${exit.signal})`
  if (exit?.code != null) return `${process} exited with code ${exit.code}`
  return `${process} exited`
}

/**
 * A failure in the gateway's words, from the error's kind (its class, code, status), never
 * from its message: `HTTP 401 from the upstream`, `connection refused`, `the command could
 * not be started (ENOENT)`, `the server process exited with code 1`.
 */
export function describeFailure (err: unknown, context: FailureContext = {}): string {
  if (err instanceof UpstreamFailure) return err.message
  // The gateway's own timeouts are worded by the gateway (`no answer to initialize within 10000 ms`).
  if (err instanceof CallError && err.code === 'REQUEST_TIMEOUT') return err.message
  if (err instanceof SdkError && err.code === 'REQUEST_TIMEOUT') {
    const timeout = (err.data as { timeout?: unknown } | undefined)?.timeout
    const within = typeof timeout === 'number' ? ` within ${timeout} ms` : ''
    return context.starting === true ? `no answer to initialize${within}` : `no answer${within}`
  }
  const status = httpStatusOf(err)
  if (status !== undefined) return `HTTP ${status} from the upstream`
  const syscall = (err as { syscall?: unknown } | undefined)?.syscall
  const code = systemCodeOf(err)
  if (typeof syscall === 'string' && syscall.startsWith('spawn')) return `the command could not be started${code === undefined ? '' : ` (${code})`}`
  if (context.exit !== undefined) return describeExit(context.exit)
  switch (code) {
    case 'ECONNREFUSED': return 'connection refused'
    case 'ECONNRESET': return 'the connection was reset'
    case 'ENOTFOUND': case 'EAI_AGAIN': return 'the upstream host name could not be resolved'
    case 'ETIMEDOUT': case 'UND_ERR_CONNECT_TIMEOUT': return 'the connection timed out'
    case 'EHOSTUNREACH': case 'ENETUNREACH': return 'the upstream host is unreachable'
    case 'EPIPE': return 'the connection closed'
    case undefined: break
    default:
      if (/CERT|TLS|SSL/.test(code)) return `the TLS handshake failed (${code})`
  }
  if (err instanceof CallError && err.code === 'PROTOCOL_ERROR') return `the upstream answered with JSON-RPC error ${err.rpcCode ?? 'without a code'}`
  if (err instanceof ProtocolError) return `the upstream ${context.starting === true ? 'refused initialize' : 'answered'} with JSON-RPC error ${err.code}`
  if (err instanceof SdkError || err instanceof CallError) return 'the connection closed'
  return context.starting === true ? 'the connection could not be opened' : 'the connection failed'
}

/** An HTTP error's status: the SDK's `SdkHttpError` (`data.status`) or the SSE transport's `SseError` (`code`). */
function httpStatusOf (err: unknown): number | undefined {
  const { data, code } = (err ?? {}) as { data?: { status?: unknown }, code?: unknown }
  const status = data?.status ?? (err instanceof SseError ? code : undefined)
  return typeof status === 'number' && status >= 100 && status <= 599 ? status : undefined
}

/**
 * A system error's code (`ECONNREFUSED`, `ENOENT`), on the error or its causes. `fetch` puts
 * it on its `cause`; the SSE transport only in its message (`SSE error: TypeError: fetch
 * failed: connect ECONNREFUSED ...`), where the code alone is read.
 */
function systemCodeOf (err: unknown, depth = 0): string | undefined {
  if (err === undefined || err === null || depth > 3) return undefined
  const { code, cause, message } = err as { code?: unknown, cause?: unknown, message?: unknown }
  if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+|[A-Z_]*(CERT|TLS|SSL)[A-Z_]*)$/.test(code)) return code
  const fromCause = systemCodeOf(cause, depth + 1)
  if (fromCause !== undefined) return fromCause
  if (err instanceof SseError && typeof message === 'string') {
    return /\b(E(?:CONNREFUSED|CONNRESET|NOTFOUND|AI_AGAIN|TIMEDOUT|HOSTUNREACH|NETUNREACH))\b/.exec(message)?.[1]
  }
  return undefined
}
