import { LogController } from 'fastify'
import { destination as pinoDestination } from 'pino'
import { prettyFactory } from 'pino-pretty'

/** Request headers that never reach a log line. */
export const REDACTED = ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]', 'req.headers["proxy-authorization"]']

/**
 * Fastify's request logging without its two lines per request (`incoming request`, `request
 * completed`): the gateway writes one line per completed request itself (plugins/filters.ts,
 * `requestLines`). Its other lines (errors of the default handler, streams cut off, routes
 * not found) stay as they are.
 */
class OneLineRequests extends LogController {
  override incomingRequest (): void {}
  override requestCompleted (): void {}
}

/** The command's logging: the Fastify options, a writer for the banner in line with the log, and a flush. */
export interface CommandLogging {
  /** Fastify options: the logger, and one line per request instead of Fastify's two. */
  fastify: {
    logger: { level: string, redact: string[], stream: { write: (line: string) => void } }
    logController: LogController
  }
  /** Writes text (the banner) in order with the log lines. */
  write: (text: string) => void
  /** Writes out what is buffered, synchronously: at shutdown and on the way out of a crash. */
  flush: () => void
}

/**
 * How the command logs. JSON lines go through pino's asynchronous destination (SonicBoom): a
 * pipe or file on Linux is written synchronously by `process.stdout`, a syscall per line on
 * the event loop; buffered, the lines leave in batches, and `flush` writes the rest at
 * shutdown and at exit (a crash included). Pretty lines are for a person at a terminal and
 * stay synchronous, formatted in line rather than by a transport, whose worker thread would
 * put them on stdout in any order with the banner. No `minLength`: a line is written as soon as
 * the previous write is done, so a quiet gateway's lines are never held back, and under load
 * the lines that arrive meanwhile go out in one write.
 *
 * Fastify's own request logging (a line when a request arrives and one when it completes) is
 * off: the gateway writes one line per completed request, or none when the request's call
 * wrote its audit line (plugins/filters.ts).
 */
export function commandLogging (options: { format: 'json' | 'pretty', level: string, fd?: number, onLine?: () => void }): CommandLogging {
  const { format, level, fd = 1, onLine } = options
  if (format === 'pretty') {
    const out = fd === 2 ? process.stderr : process.stdout
    const prettify = prettyFactory({
      colorize: out.isTTY === true && process.env.NO_COLOR === undefined,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
      singleLine: true
    })
    return {
      fastify: { logger: { level, redact: REDACTED, stream: { write (line) { onLine?.(); out.write(prettify(line)) } } }, logController: new OneLineRequests() },
      write (text) { out.write(text) },
      flush () {}
    }
  }
  // Buffer mode: in its text mode SonicBoom (4.2, 5.0) measures the whole text still waiting
  // to be written (Buffer.byteLength of its growing last chunk) again for every line, which
  // under load flattens and copies kilobytes per line: 5.5 KB allocated for each audit line at
  // c=50. In buffer mode it keeps each line's bytes as they come and joins them once per write.
  const destination = pinoDestination({ dest: fd, sync: false, contentMode: 'buffer' })
  // SonicBoom's typings know only its text mode's `write`.
  const put = (text: string): void => { destination.write(Buffer.from(text) as unknown as string) }
  const flush = (): void => {
    try {
      destination.flushSync()
    } catch {
      // Nothing buffered yet (SonicBoom refuses a flush before its file is open), or the
      // reader is gone: nothing more can be written either way.
    }
  }
  process.once('exit', flush)
  return {
    fastify: { logger: { level, redact: REDACTED, stream: { write (line) { onLine?.(); put(line) } } }, logController: new OneLineRequests() },
    write (text) { put(text) },
    flush
  }
}
