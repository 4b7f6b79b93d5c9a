#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { parseArgs } from 'node:util'
import Fastify, { type FastifyInstance } from 'fastify'
import closeWithGrace from 'close-with-grace'
import gateway, { moduleFactory } from './app.js'
import { loadConfig, redisOverride, STATE_KEY_ENV, type GatewayConfig, type RedisSettings } from './config.js'
import { printableConfig } from './config-print.js'
import { commandLogging } from './logging.js'
import { reloadingGateway, type ReloadingGateway } from './reload.js'
import { limitConnections, serverOptions, tuneGarbageCollection, type HttpLimits } from './http/server-options.js'
import { builtinServers } from '../servers/index.js'
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_SEPARATOR, GATEWAY_INFO } from './defaults.js'

/** After the drain timeout: time for cancelled calls to answer and children to stop. */
const SHUTDOWN_MARGIN_MS = 5000

/** The command's name, as installed by npm (`bin` in package.json) and in front of its messages. */
const COMMAND = 'fastify-mcp-gateway'

const USAGE = `Usage: ${COMMAND} [--config FILE [--watch]] [--port N] [--host ADDR] [--tls-cert FILE --tls-key FILE] [--redis URL]
       ${COMMAND} --check [--config FILE] [--host ADDR] [--tls-cert FILE --tls-key FILE]
       ${COMMAND} --print-config [--config FILE]

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
                 ("shared" or "session"), tools: { allow: [...], deny: [...] },
                 and namespace / rename (its names in /mcp).
                 \${VAR} and \${VAR:-default} are read from the environment.
                 Top level "gateway": { "aggregate": true, "separator": "_" }.
                 An invalid config exits with code 2 and starts nothing.
                 SIGHUP re-reads the file and applies the changes without a restart:
                 servers left untouched keep their sessions and child processes; an
                 invalid file is refused and the running config keeps serving
  --watch        Reload the config file whenever it changes, as SIGHUP does
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
  --redis URL    Share sessions, resumable streams and rate limits with the other
                 instances through this Redis (redis:// or rediss://; env REDIS_URL),
                 in place of the config's gateway.redis url. Needs the same secret of
                 32+ characters on every instance: gateway.redis.requestStateKey or env
                 ${STATE_KEY_ENV}. A Redis down at boot or later does not stop the
                 gateway: /ready shows it down (still 200) and it reconnects
  --drain-timeout MS
                 On SIGTERM or SIGINT, how long calls in flight may finish before
                 they are cancelled (env DRAIN_TIMEOUT_MS, default 10000); a second
                 signal exits at once
  --check        Validate the config as a start would (the file, module entries, TLS
                 files, --host against gateway.auth), print its warnings and one
                 line naming the servers, and exit: 0 when it would start, 2 with
                 the same messages as a start otherwise. Listens on nothing and
                 starts no upstream
  --print-config Print the config the gateway would run, as JSON: defaults applied,
                 \${VAR} filled in, every secret masked (header and env values,
                 API keys, credentials and secret-looking query values in URLs)
  -v, --version  Print the version and exit
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

function fail (message: string, code = 2): never {
  process.stderr.write(`${COMMAND}: ${message}\n`)
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
      redis: { type: 'string' },
      'log-format': { type: 'string' },
      watch: { type: 'boolean' },
      check: { type: 'boolean' },
      'print-config': { type: 'boolean' },
      version: { type: 'boolean', short: 'v' },
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
if (args.version === true) {
  process.stdout.write(`${COMMAND} ${GATEWAY_INFO.version}\n`)
  process.exit(0)
}
if (args.check === true && args['print-config'] === true) fail(`--check and --print-config: give one (--print-config validates the config too)\n\n${USAGE}`)

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
  for (const warning of config.warnings) process.stderr.write(`${COMMAND}: warning: ${warning}\n`)
}

// The shared Redis: --redis over REDIS_URL over the config's `gateway.redis`, whose prefix and
// key a flag or variable keeps. Applied at start and at every reload alike.
const redisUrl = args.redis ?? (process.env.REDIS_URL === '' ? undefined : process.env.REDIS_URL)
const redisSource = args.redis !== undefined ? '--redis' : 'REDIS_URL'
function withRedis<C extends GatewayConfig | undefined> (loaded: C): C {
  if (redisUrl === undefined || loaded === undefined) return loaded
  return { ...loaded, redis: redisOverride(redisUrl, loaded.redis, redisSource) }
}
let redis: RedisSettings | undefined
try {
  config = withRedis(config)
  redis = config === undefined && redisUrl !== undefined ? redisOverride(redisUrl, undefined, redisSource) : config?.redis
} catch (err) {
  fail((err as Error).message)
}

const noAuth = args['no-auth'] === true
const tlsFlags = args['tls-cert'] !== undefined
const watchConfig = args.watch === true
const loopback = host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host)
/**
 * What the flags make of a config, at start and on every reload alike: --no-auth over its
 * `gateway.auth`, and, secure by default, a refusal to serve an address beyond loopback
 * (reachable by others) open unless the operator says so (`"auth": { "mode": "none" }` or
 * --no-auth).
 */
function withFlags (loaded: GatewayConfig | undefined): { config: GatewayConfig | undefined, authIgnored: boolean, refusal?: string } {
  let flagged = loaded
  const authIgnored = noAuth && loaded?.security.auth !== undefined && loaded.security.auth.mode !== 'none'
  if (authIgnored && loaded?.security.auth !== undefined) flagged = { ...loaded, security: { ...loaded.security, auth: { ...loaded.security.auth, mode: 'none' } } }
  if (!loopback && flagged?.security.auth === undefined && !noAuth) {
    return { config: flagged, authIgnored, refusal: `refusing to listen on ${host} without authentication: add "gateway": { "auth": { "apiKeys": [...] } } (or "jwt") to the config, or say "auth": { "mode": "none" } (or --no-auth) to run open on purpose` }
  }
  return { config: flagged, authIgnored }
}
const flagged = withFlags(config)
if (flagged.authIgnored) process.stderr.write(`${COMMAND}: warning: --no-auth: the config's gateway.auth is ignored, every route is open\n`)
if (flagged.refusal !== undefined) fail(flagged.refusal)
config = flagged.config

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

if (args.check === true || args['print-config'] === true) await checkOnly({ config, tls, certificate, redis, print: args['print-config'] === true })

// A certificate and key that are not PEM, or do not match, stop the start here, in one line.
if (certificate !== undefined) {
  try {
    createSecureContext(certificate)
  } catch (err) {
    fail(`cannot serve HTTPS with --tls-cert/--tls-key or gateway.tls: ${(err as Error).message}`)
  }
}

// Before the gateway is built: its objects die with their requests (see the function).
tuneGarbageCollection()
const options = serverOptions(limits)
// One line per completed request at `info`, written without blocking the event loop (src/logging.ts).
const logging = commandLogging({ format: logFormat, level: process.env.LOG_LEVEL ?? 'info' })
const fastifyOptions = {
  // Timeouts, size bounds and the answers to malformed HTTP: the same options the tests use.
  ...options,
  // https.createServer takes http.createServer's options (header size and timeouts) too;
  // Fastify hands it only these, so they are passed again with the certificate.
  ...(certificate !== undefined && { https: { ...options.http, ...certificate } }),
  ...logging.fastify
}
const gatewayOptions = {
  drainTimeoutMs,
  requestLines: true,
  // Without a config file; a config's own (flags applied) is in it.
  ...(config === undefined && redis !== undefined && { redis }),
  defaults: {
    ...(allowedHosts !== undefined && { allowedHosts }),
    ...(allowedOrigins !== undefined && { allowedOrigins })
  }
}

// With a config file, the app is rebuilt from it on SIGHUP or (--watch) when it changes
// (src/reload.ts); without one there is nothing to reload.
let app: FastifyInstance
let reloading: ReloadingGateway | undefined
try {
  if (config !== undefined) {
    const file = config.file
    const started = config
    app = reloading = await reloadingGateway({
      fastify: fastifyOptions,
      gateway: gatewayOptions,
      config,
      watch: watchConfig,
      load: async () => {
        const next = withFlags(withRedis(await loadConfig(file, process.env, Object.keys(builtinServers))))
        if (next.refusal !== undefined) throw new Error(next.refusal)
        const loaded = next.config as GatewayConfig
        // The listening server was made with the start's certificate.
        if (!tlsFlags && JSON.stringify(loaded.security.tls) !== JSON.stringify(started.security.tls)) {
          return { ...loaded, warnings: [...loaded.warnings, 'gateway.tls changed: it applies at the next start, not on a reload'] }
        }
        return loaded
      }
    })
  } else {
    app = Fastify(fastifyOptions)
    await app.register(gateway, gatewayOptions)
  }
} catch (err) {
  // A config entry the gateway could not act on (a module that does not load, names that
  // collide on /mcp): as for an invalid config.
  if ((err as { code?: string }).code === 'GW_ERR_INVALID_OPTIONS') fail((err as Error).message)
  throw err
}
limitConnections(app.server, limits)

// The gateway cancels what is left at the drain timeout; the margin lets those calls answer,
// sessions close and children stop before close-with-grace gives up (exit 1). A second
// signal exits at once. SIGHUP reloads the config instead.
closeWithGrace({ delay: drainTimeoutMs + SHUTDOWN_MARGIN_MS, skip: ['SIGHUP'] }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
  else app.log.info({ signal }, 'shutting down')
  await (reloading?.shutdown() ?? app.close())
  logging.flush()
})
process.on('SIGHUP', () => {
  if (reloading === undefined) {
    app.log.warn('SIGHUP: no config file to reload (start with --config)')
    return
  }
  app.log.info('SIGHUP: reloading the config')
  reloading.reload().catch(err => { app.log.error({ err }, 'config reload failed') })
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
if (app.hasRoute({ method: 'POST', url: '/mcp' })) lines.push(`  all      ${base}/mcp   (every server's tools, as <namespace>_<tool> unless configured otherwise)`)
if (app.hasRoute({ method: 'GET', url: '/status.json' })) lines.push(`  status   ${base}/   (the status page; JSON: ${base}/status.json)`)
lines.push(`  docs     ${base}/docs   (ReDoc: ${base}/redoc, OpenAPI: ${base}/docs/json)`)
lines.push(`  health   ${base}/health   readiness: ${base}/ready`)
// Through the log's own stream, so the banner is never cut into or overtaken by a log line.
logging.write(lines.join('\n') + '\n')

/**
 * --check and --print-config: everything a start validates, and nothing it does (no listening,
 * no upstream started). Called once every flag and the config are read, so the same checks,
 * with the same messages, have already run.
 */
async function checkOnly ({ config, tls, certificate, redis, print }: {
  config: GatewayConfig | undefined
  /** The TLS files of the flags or the config. */
  tls: { cert: string, key: string } | undefined
  certificate: { cert: Buffer, key: Buffer } | undefined
  /** The shared Redis, from the flags, the environment or the config. */
  redis: RedisSettings | undefined
  /** --print-config rather than --check. */
  print: boolean
}): Promise<never> {
  const effective: GatewayConfig = config ?? {
    file: '',
    servers: Object.keys(builtinServers).map(name => ({ name, kind: 'builtin', builtin: name })),
    aggregate: { enabled: true, separator: DEFAULT_SEPARATOR },
    security: {},
    observability: {},
    ...(redis !== undefined && { redis }),
    warnings: []
  }
  if (print) {
    const shown = printableConfig(tls === undefined ? effective : { ...effective, security: { ...effective.security, tls } })
    process.stdout.write(JSON.stringify(config === undefined ? { ...shown, file: null } : shown, null, 2) + '\n')
    process.exit(0)
  }
  // What the HTTPS server would refuse at start: a certificate and key that are not PEM, or do not match.
  if (certificate !== undefined) {
    try {
      createSecureContext(certificate)
    } catch (err) {
      fail(`cannot serve HTTPS with --tls-cert/--tls-key or gateway.tls: ${(err as Error).message}`)
    }
  }
  // A module entry that does not load stops a start, so it is imported here by the gateway's
  // own loader (moduleFactory, src/app.ts), with the same messages; its factory is not called.
  for (const server of effective.servers) {
    if (server.kind !== 'module' || server.disabled === true) continue
    try {
      await moduleFactory(server)
    } catch (err) {
      fail((err as Error).message)
    }
  }
  const enabled = effective.servers.filter(server => server.disabled !== true)
  const disabled = effective.servers.filter(server => server.disabled === true)
  const source = config === undefined ? 'no config file' : effective.file
  const listed = enabled.map(server => `${server.name} (${server.kind} at ${server.prefix ?? `/${server.name}`})`).join(', ')
  process.stdout.write(`OK: ${source}: ${enabled.length} server${enabled.length === 1 ? '' : 's'}: ${listed}${disabled.length > 0 ? `; disabled: ${disabled.map(server => server.name).join(', ')}` : ''}\n`)
  process.exit(0)
}
