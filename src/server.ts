#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import { prettyFactory } from 'pino-pretty'
import gateway from './app.js'
import { loadConfig, type GatewayConfig } from './config.js'
import { limitConnections, serverOptions, type HttpLimits } from './http/server-options.js'
import { builtinServers } from '../servers/index.js'
import { DEFAULT_DRAIN_TIMEOUT_MS } from './defaults.js'

/** After the drain timeout: time for cancelled calls to answer and children to stop. */
const SHUTDOWN_MARGIN_MS = 5000

const USAGE = `Usage: mcp-gateway [--config FILE] [--port N] [--host ADDR] [--tls-cert FILE --tls-key FILE]

Runs the MCP gateway: with the built-in servers (greet, bye, math), or with the
servers a config file declares.

Options:
  --config FILE  Config file in the mcpServers format (JSON or YAML), as used by
                 Claude Desktop, Cursor and mcpo (env MCP_GATEWAY_CONFIG).
                 Each entry is one of:
                   { "command": "npx", "args": [...], "env": {...}, "cwd": "..." }   stdio
                   { "url": "https://.../mcp", "headers": {...} }    Streamable HTTP
                   { "type": "sse", "url": "http://.../sse" }        legacy HTTP+SSE
                   { "builtin": "greet" }                            built-in server
                   { "module": "./server.js", "export": "default" }  in-process factory
                 and may set prefix, stateless, required, timeoutMs, connectTimeoutMs, retry
                 ({ initialMs, maxMs }), disabled, isolation
                 ("shared" or "session") and tools: { allow: [...], deny: [...] }.
                 \${VAR} and \${VAR:-default} are read from the environment.
                 Top level "gateway": { "aggregate": true, "separator": "_" }.
                 An invalid config exits with code 2 and starts nothing.
  --port N       Port to listen on (env PORT, default 3000)
  --host ADDR    Address to bind (env HOST, default 127.0.0.1). Beyond loopback the
                 gateway refuses to start without authentication (gateway.auth in
                 the config) unless told to run open: "auth": { "mode": "none" }
                 or --no-auth
  --no-auth      Run without authentication, whatever the config's gateway.auth says
  --log-format json|pretty
                 Log lines as JSON (pino, for log collectors) or as readable
                 coloured lines (env LOG_FORMAT; default pretty when stdout is a
                 terminal, JSON otherwise)
  --tls-cert FILE, --tls-key FILE
                 Serve HTTPS with this PEM certificate (chain) and private key,
                 in place of the config's gateway.tls; plain HTTP is then refused
  --drain-timeout MS
                 On SIGTERM or SIGINT, how long calls in flight may finish before
                 they are cancelled (env DRAIN_TIMEOUT_MS, default 10000); a second
                 signal exits at once
  -h, --help     Show this help

Environment:
  LOG_LEVEL      pino level (default info)
  ALLOWED_HOSTS  Comma-separated Host names accepted on MCP and tool routes,
                 '*' for any (default: localhost, 127.0.0.1, [::1])
  ALLOWED_ORIGINS Comma-separated browser Origin hostnames accepted (default: localhost-class)
  REQUEST_TIMEOUT_MS  Longest time to receive a whole request, headers and body; a
                 slower client gets 408 and is disconnected (default 30000)
  HEADERS_TIMEOUT_MS  Longest time to receive the headers (default 10000)
  MAX_HEADER_SIZE     Largest request head in bytes; larger is a 431 (default 16384)
  MAX_REQUESTS_PER_SOCKET  Requests per keep-alive connection, 0 for no limit (default 0)
  MAX_CONNECTIONS     Most connections open at once; more are closed on accept (default 4096)
`

/**
 * pino-pretty run in line, not as a transport: a transport formats in a worker thread, whose
 * lines would land on stdout in any order with the banner. Colours only on a terminal.
 */
function prettyLines (out: NodeJS.WriteStream): { write (line: string): void } {
  const prettify = prettyFactory({
    colorize: out.isTTY === true && process.env.NO_COLOR === undefined,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true
  })
  return { write (line) { out.write(prettify(line)) } }
}

function fail (message: string, code = 2): never {
  process.stderr.write(`mcp-gateway: ${message}\n`)
  process.exit(code)
}

let args
try {
  args = parseArgs({
    options: {
      config: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'no-auth': { type: 'boolean' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'log-format': { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    },
    strict: true
  }).values
} catch (err) {
  fail(`${(err as Error).message}\n\n${USAGE}`)
}
if (args.help === true) {
  process.stdout.write(USAGE)
  process.exit(0)
}

const port = Number(args.port ?? process.env.PORT ?? 3000)
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid port '${args.port ?? process.env.PORT}'`)
const host = args.host ?? process.env.HOST ?? '127.0.0.1'
const drainTimeoutMs = Number(args['drain-timeout'] ?? process.env.DRAIN_TIMEOUT_MS ?? DEFAULT_DRAIN_TIMEOUT_MS)
if (!Number.isInteger(drainTimeoutMs) || drainTimeoutMs < 0) fail(`invalid drain timeout '${args['drain-timeout'] ?? process.env.DRAIN_TIMEOUT_MS}'`)
const list = (value: string | undefined): string[] | undefined => value?.split(',').map(s => s.trim()).filter(Boolean)
const allowedHosts = list(process.env.ALLOWED_HOSTS)
const allowedOrigins = list(process.env.ALLOWED_ORIGINS)

// Logs: JSON for machines unless a person is watching (a terminal), or as told.
const logFormat = args['log-format'] ?? process.env.LOG_FORMAT ?? (process.stdout.isTTY === true ? 'pretty' : 'json')
if (logFormat !== 'json' && logFormat !== 'pretty') fail(`invalid log format '${logFormat}' (expected json or pretty)`)

const configFile = args.config ?? process.env.MCP_GATEWAY_CONFIG
let config: GatewayConfig | undefined
if (configFile !== undefined && configFile !== '') {
  try {
    config = await loadConfig(configFile, process.env, Object.keys(builtinServers))
  } catch (err) {
    fail((err as Error).message)
  }
  for (const warning of config.warnings) process.stderr.write(`mcp-gateway: warning: ${warning}\n`)
}

// Secure by default: an address beyond loopback is reachable by others, so the gateway does
// not serve it open unless the operator says so (`"auth": { "mode": "none" }` or --no-auth).
if (args['no-auth'] === true && config?.security.auth !== undefined && config.security.auth.mode !== 'none') {
  process.stderr.write('mcp-gateway: warning: --no-auth: the config\'s gateway.auth is ignored, every route is open\n')
  config = { ...config, security: { ...config.security, auth: { ...config.security.auth, mode: 'none' } } }
}
const loopback = host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host)
if (!loopback && config?.security.auth === undefined && args['no-auth'] !== true) {
  fail(`refusing to listen on ${host} without authentication: add "gateway": { "auth": { "apiKeys": [...] } } (or "jwt") to the config, or say "auth": { "mode": "none" } (or --no-auth) to run open on purpose`)
}

// HTTPS: the flags (both or neither) over the config's `gateway.tls`.
if ((args['tls-cert'] === undefined) !== (args['tls-key'] === undefined)) fail('--tls-cert and --tls-key go together: give both')
const tls = args['tls-cert'] !== undefined && args['tls-key'] !== undefined
  ? { cert: args['tls-cert'], key: args['tls-key'] }
  : config?.security.tls
const pem = (path: string, what: string): Buffer => {
  try {
    return readFileSync(path)
  } catch (err) {
    fail(`cannot read the TLS ${what} '${path}': ${(err as Error).message}`)
  }
}
const certificate = tls === undefined ? undefined : { cert: pem(tls.cert, 'certificate'), key: pem(tls.key, 'key') }

const count = (name: string): number | undefined => {
  const value = process.env[name]
  if (value === undefined || value === '') return undefined
  const parsed = Number(value)
  if (!Number.isInteger(parsed) || parsed < 0) fail(`invalid ${name} '${value}' (expected a whole number)`)
  return parsed
}
const limits: HttpLimits = {}
for (const [key, name] of [
  ['requestTimeoutMs', 'REQUEST_TIMEOUT_MS'],
  ['headersTimeoutMs', 'HEADERS_TIMEOUT_MS'],
  ['maxHeaderSize', 'MAX_HEADER_SIZE'],
  ['maxRequestsPerSocket', 'MAX_REQUESTS_PER_SOCKET'],
  ['maxConnections', 'MAX_CONNECTIONS']
] as const) {
  const value = count(name)
  if (value !== undefined) limits[key] = value
}

const options = serverOptions(limits)
let app
try {
  app = Fastify({
    // Timeouts, size bounds and the answers to malformed HTTP: the same options the tests use.
    ...options,
    // https.createServer takes http.createServer's options (header size and timeouts) too;
    // Fastify hands it only these, so they are passed again with the certificate.
    ...(certificate !== undefined && { https: { ...options.http, ...certificate } }),
    logger: {
      level: process.env.LOG_LEVEL ?? 'info',
      redact: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]', 'req.headers["proxy-authorization"]'],
      // Log lines and the banner go through process.stdout, one stream, so the banner is never
      // cut into or overtaken by a log line (pino's own destination writes asynchronously).
      stream: logFormat === 'pretty' ? prettyLines(process.stdout) : process.stdout
    }
  })
} catch (err) {
  // A certificate and key that are not PEM, or do not match.
  fail(`cannot serve HTTPS with --tls-cert/--tls-key or gateway.tls: ${(err as Error).message}`)
}
limitConnections(app.server, limits)

try {
  await app.register(gateway, {
    ...(config !== undefined && { config }),
    drainTimeoutMs,
    defaults: {
      ...(allowedHosts !== undefined && { allowedHosts }),
      ...(allowedOrigins !== undefined && { allowedOrigins })
    }
  })
} catch (err) {
  // A config entry the gateway could not act on (a module that does not load): as for an invalid config.
  if ((err as { code?: string }).code === 'GW_ERR_INVALID_OPTIONS') fail((err as Error).message)
  throw err
}


// The gateway cancels what is left at the drain timeout; the margin lets those calls answer,
// sessions close and children stop before close-with-grace gives up (exit 1). A second
// signal exits at once.
closeWithGrace({ delay: drainTimeoutMs + SHUTDOWN_MARGIN_MS }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
  else app.log.info({ signal }, 'shutting down')
  await app.close()
})

try {
  await app.listen({ port, host })
} catch (err) {
  if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') fail(`port ${port} on ${host} is already in use`, 1)
  if ((err as NodeJS.ErrnoException).code === 'EACCES') fail(`no permission to listen on port ${port}`, 1)
  throw err
}

const address = app.server.address()
const base = `${certificate === undefined ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${typeof address === 'object' && address !== null ? address.port : port}`
const lines = [`MCP gateway listening on ${base}`]
for (const { name, prefix, connection: server } of app.mcpRegistry.servers()) {
  const tools = server.tools().map(tool => tool.name).join(', ')
  lines.push(`  ${name.padEnd(8)} ${base}${prefix}/mcp   tools: ${server.state === 'up' ? tools : `DOWN (${server.failure ?? server.state})`}`)
}
if (app.hasRoute({ method: 'POST', url: '/mcp' })) lines.push(`  all      ${base}/mcp   (every server's tools as <server>_<tool>)`)
if (app.hasRoute({ method: 'GET', url: '/status.json' })) lines.push(`  status   ${base}/   (the status page; JSON: ${base}/status.json)`)
lines.push(`  docs     ${base}/docs   (ReDoc: ${base}/redoc, OpenAPI: ${base}/docs/json)`)
lines.push(`  health   ${base}/health   readiness: ${base}/ready`)
process.stdout.write(lines.join('\n') + '\n')
