import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { createHash } from 'node:crypto'
import { ConfigError } from './errors.js'
import { DEFAULT_RATE_LIMIT, DEFAULT_REDIS_PREFIX, MIN_REQUEST_STATE_KEY_LENGTH } from './defaults.js'
import type { ObservabilityOptions } from './observability.js'
import {
  DEFAULT_CLOCK_TOLERANCE_SEC,
  DEFAULT_JWT_ALGORITHMS,
  type ApiKey,
  type AuthOptions,
  type CorsOptions,
  type JwtOptions,
  type Limit,
  type PolicyRule,
  type RateLimitOptions,
  type SecurityOptions,
  type TlsOptions
} from './security.js'

// The config file is the `mcpServers` file that Claude Desktop, Cursor, VS Code and mcpo
// users already have, so an existing file works as it is: the fields other clients keep in it
// are warned about (see FOREIGN_FIELDS). Any other field the gateway does not know is an
// error, with the known name it is closest to: a misspelt setting would otherwise run the
// gateway with its default without a word.

export type Isolation = 'shared' | 'session'

interface CommonServerConfig {
  /** The entry's key: the server's identity in routes, logs and aggregated tool names. */
  name: string
  /** Where the server is mounted; the caller defaults it to `/<name>`. */
  prefix?: string
  stateless?: boolean
  /** Scopes a caller's token or key must hold for any call of this server (403 `insufficient_scope` otherwise). */
  scopes?: string[]
  /** The gateway is not ready (`/ready` 503) while this server is down. */
  required?: boolean
  timeoutMs?: number
  /** Kept in `servers` so the caller can say it skipped it. */
  disabled?: boolean
  tools?: { allow?: string[], deny?: string[] }
  /** One upstream for all clients, or one per session: stdio, http and sse servers only. */
  isolation?: Isolation
  /** Longest wait for an upstream to start and answer `initialize`: stdio, http and sse servers only. */
  connectTimeoutMs?: number
  /** Reconnect backoff of an upstream: the first delay, doubled per failure up to `maxMs`. */
  retry?: { initialMs?: number, maxMs?: number }
  /** With `isolation: "session"`: most per-session upstream connections (child processes, for stdio) at once. */
  maxIsolated?: number
  /** With `isolation: "session"`: a per-session upstream connection unused this long is closed (and reopened on the session's next request). */
  isolatedIdleMs?: number
  /**
   * The prefix of this server's tool and prompt names in `/mcp` (`<namespace><separator><name>`);
   * absent means the entry's name, `false` lists its names as they are. Two enabled servers never
   * share one (a config error); names that still collide are the aggregate's to report.
   */
  namespace?: string | false
  /**
   * Upstream tool name → the name `/mcp` shows instead, before the namespace is put in front.
   * Only `/mcp` sees it: the server's own endpoint, REST, `tools` filters, policy and metrics
   * keep the upstream's name. Every target is a valid tool name and no two are the same.
   */
  rename?: Record<string, string>
}
export interface StdioServerConfig extends CommonServerConfig { kind: 'stdio', command: string, args: string[], env: Record<string, string>, cwd?: string }
export interface RemoteServerConfig extends CommonServerConfig { kind: 'http' | 'sse', url: string, headers: Record<string, string> }
export interface BuiltinServerConfig extends CommonServerConfig { kind: 'builtin', builtin: string }
export interface ModuleServerConfig extends CommonServerConfig {
  kind: 'module'
  /** Absolute path or package name; a relative path is resolved against the config file's directory. */
  module: string
  /** The export that builds the server. Default `default`. */
  export: string
}
export type ServerConfig = StdioServerConfig | RemoteServerConfig | BuiltinServerConfig | ModuleServerConfig

export interface GatewayConfig {
  /** Absolute path of the file read. */
  file: string
  /** In file order, disabled ones included. */
  servers: ServerConfig[]
  aggregate: { enabled: boolean, separator: string }
  /** Authentication, policy, rate limits, CORS, TLS: the rest of the `gateway` section. */
  security: SecurityOptions
  /** Metrics, traces and the status page. */
  observability: ObservabilityOptions
  /** The Redis that instances serving the same clients share (`gateway.redis`); absent, each keeps its state in memory. */
  redis?: RedisSettings
  /** One sentence per ignored field, naming the file. */
  warnings: string[]
}

/**
 * `gateway.redis`, as the gateway uses it (plugins/redis.ts). Written in the file as a URL, or
 * as an object with `url` and the fields below.
 */
export interface RedisSettings {
  /** `redis://` or `rediss://` (TLS), with the credentials and the database number: `redis://:password@host:6379/0`. */
  url: string
  /** In front of every key and channel the gateway writes. Default `mcp-gateway:` (DEFAULT_REDIS_PREFIX). */
  prefix: string
  /**
   * Seals the `requestState` the gateway hands clients, which may come back to any instance:
   * the same secret on every instance, at least 32 characters. Default: the environment's
   * `MCP_GATEWAY_STATE_KEY`; one of the two is required. Not derived from the URL (anyone who
   * reads the config could forge states) nor stored in Redis on first connect (the cluster is
   * built before Redis answers, and a Redis down at boot must not stop the gateway).
   */
  requestStateKey: string
}

/** Where `requestStateKey` is read from when `gateway.redis` gives none (and for `--redis`/`REDIS_URL` without one). */
export const STATE_KEY_ENV = 'MCP_GATEWAY_STATE_KEY'

type Kind = ServerConfig['kind']
type Entry = Record<string, unknown>
/** One parse. `dir` anchors relative paths, so they do not depend on where the gateway was started. */
interface Context { file: string, dir: string, env: NodeJS.ProcessEnv, builtins: readonly string[] | undefined, problems: string[], warnings: string[] }

const NAME = /^[A-Za-z0-9_-]{1,64}$/
const PREFIX = /^\/\S*[^\s/]$/
const SEPARATOR = /^[A-Za-z0-9_.-]{1,3}$/
/** Paths of the gateway's own routes: the documentation, health, readiness and the aggregated endpoint. */
const RESERVED = ['/docs', '/redoc', '/health', '/ready', '/mcp', '/tools']
/** Every spelling of `type` in use: VS Code, Cursor, Cline and mcpo disagree on Streamable HTTP's. */
const TRANSPORTS = new Map<unknown, 'stdio' | 'http' | 'sse'>([
  ['stdio', 'stdio'], ['http', 'http'], ['streamable-http', 'http'], ['streamable_http', 'http'], ['streamableHttp', 'http'], ['sse', 'sse']
])
/** A name `/mcp` can list: the MCP tool name characters, at most 64 of them. */
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,64}$/
const TOP_LEVEL_FIELDS = ['mcpServers', 'servers', 'gateway']
const COMMON_FIELDS = ['type', 'prefix', 'stateless', 'scopes', 'required', 'timeoutMs', 'connectTimeoutMs', 'retry', 'disabled', 'tools', 'isolation', 'maxIsolated', 'isolatedIdleMs', 'namespace', 'rename']
/** Fields about an upstream's connection, which in-process servers do not have. */
const UPSTREAM_FIELDS = ['tools', 'isolation', 'connectTimeoutMs', 'retry', 'maxIsolated', 'isolatedIdleMs']
/** The fields that say an entry's kind: exactly one of them is given. */
const KIND_KEYS = ['command', 'url', 'builtin', 'module'] as const
/** Other clients' names for `url` (Windsurf's, Gemini CLI's for Streamable HTTP). */
const URL_ALIASES = ['serverUrl', 'httpUrl']
const KIND_FIELDS: Record<Kind, string[]> = {
  stdio: ['command', 'args', 'env', 'cwd'], http: ['url', 'headers'], sse: ['url', 'headers'], builtin: ['builtin'], module: ['module', 'export']
}
/** Every field an entry of some kind may have, for an entry whose kind is not known. */
const ENTRY_FIELDS: readonly string[] = [...new Set([...KIND_KEYS, ...Object.values(KIND_FIELDS).flat(), ...COMMON_FIELDS])]

/** Another client's field: ignored with a warning, or refused when ignoring it would undo a restriction. */
interface Foreign {
  /** What ignoring it changes, appended to the warning. */
  note?: string
  /** Why the entry cannot run without it; undefined to warn instead. */
  refuse?: (value: unknown, entry: Entry) => string | undefined
}
const upstreamOAuth: Foreign = { note: 'the gateway does not sign in to upstream servers with OAuth; give a token in headers' }
const hiddenTools: Foreign = { refuse: () => 'lists tools to hide, which the gateway does not read, so it would serve them: list them in tools.deny instead' }
const urlAlias = (client: string): Foreign => ({
  note: 'the entry\'s url is used',
  refuse: (_, entry) => entry.url === undefined ? `is ${client}'s name for url: rename it to url` : undefined
})
/**
 * Fields other clients keep in the entries of this same file, from each one's config reference:
 * - Claude Code `.mcp.json` (code.claude.com/docs/en/mcp): `headersHelper`, `oauth`.
 * - Cursor `mcp.json` (cursor.com/docs/mcp): `envFile`, `auth` (a static OAuth client).
 * - VS Code `mcp.json` (code.visualstudio.com/docs/copilot/reference/mcp-configuration):
 *   `envFile`, `dev`, `sandboxEnabled`, `sandbox`; `inputs` at the top level.
 * - Cline `cline_mcp_settings.json` (docs.cline.bot/mcp/configuring-mcp-servers): `autoApprove`,
 *   `alwaysAllow`, `timeout` (seconds), `transportType`.
 * - Roo Code `mcp_settings.json` (docs.roocode.com/features/mcp/using-mcp-in-roo): `alwaysAllow`,
 *   `timeout`, `watchPaths`, `disabledTools`.
 * - Windsurf `mcp_config.json` (docs.windsurf.com/windsurf/cascade/mcp): `serverUrl`.
 * - mcpo `config.json` (github.com/open-webui/mcpo README): `disabledTools`, `oauth`.
 * - Gemini CLI `settings.json` (github.com/google-gemini/gemini-cli docs/tools/mcp-server.md):
 *   `httpUrl`, `timeout` (milliseconds), `trust`, `description`, `includeTools`, `excludeTools`, `oauth`.
 * - Continue (docs.continue.dev/customize/deep-dives/mcp): `name` on each server block.
 * `disabled` (Cline, Roo Code), `type`, `cwd` and `headers` are the gateway's own.
 * Refused: a tool list the gateway would not apply (it would serve tools the file hides), a
 * sandbox it cannot give, and another client's name for `url` when the entry has no `url`.
 * A Map, so that a key such as `constructor` finds nothing.
 */
const FOREIGN_FIELDS = new Map<string, Foreign>([
  ['alwaysAllow', {}],
  ['auth', upstreamOAuth],
  ['autoApprove', {}],
  ['description', {}],
  ['dev', {}],
  ['disabledTools', hiddenTools],
  ['envFile', { note: 'the variables in that file do not reach the server; give them in env' }],
  ['excludeTools', hiddenTools],
  ['headersHelper', { note: 'the headers it makes are not sent; give them in headers' }],
  ['httpUrl', urlAlias('Gemini CLI')],
  ['includeTools', { refuse: () => 'lists the only tools to offer, which the gateway does not read, so it would serve every tool: list them in tools.allow instead' }],
  ['name', { note: 'the entry\'s key names the server' }],
  ['oauth', upstreamOAuth],
  ['sandbox', { note: 'the gateway does not confine the servers it starts' }],
  ['sandboxEnabled', { refuse: value => value === true ? 'asks for the server to run confined, which the gateway cannot do: remove it to run the server unconfined' : undefined }],
  ['serverUrl', urlAlias('Windsurf')],
  ['timeout', { note: 'the gateway\'s per-call timeout is timeoutMs, in milliseconds' }],
  ['transportType', { note: 'an SSE server needs "type": "sse"' }],
  ['trust', {}],
  ['watchPaths', {}]
])
/**
 * Top-level fields of other clients' files: a JSON schema reference, VS Code's `inputs` and
 * `sandbox`, and the settings Claude Desktop keeps beside `mcpServers` in
 * `claude_desktop_config.json` (`globalShortcut`, `darkMode`, `scale`, `locale`,
 * `quickWindowPosition`, as found in users' files; the app does not document them).
 */
const FOREIGN_TOP_LEVEL = new Set(['$schema', 'inputs', 'sandbox', 'globalShortcut', 'darkMode', 'scale', 'locale', 'quickWindowPosition'])

const isObject = (value: unknown): value is Entry => typeof value === 'object' && value !== null && !Array.isArray(value)
const typeOf = (value: unknown): string => value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
/** A wrong value as the user wrote it, or its type when it is not a scalar. */
const show = (value: unknown): string => typeof value === 'string' ? JSON.stringify(value) : typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeOf(value)

/** Reads and validates a config file; every problem in it is reported at once, in one `ConfigError`. */
export async function loadConfig (file: string, env: NodeJS.ProcessEnv = process.env, builtins?: readonly string[]): Promise<GatewayConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`Cannot read config file ${file}: ${(err as Error).message}`)
  }
  return parseConfig(text, file, env, builtins)
}

/** `loadConfig` without the read: `file` names the file in messages and anchors relative paths. */
export function parseConfig (text: string, file: string, env: NodeJS.ProcessEnv = process.env, builtins?: readonly string[]): GatewayConfig {
  const absolute = resolve(file)
  const ctx: Context = { file, dir: dirname(absolute), env, builtins, problems: [], warnings: [] }
  const root = parseText(text.replace(/^\uFEFF/, ''), file) // Windows editors save JSON with a BOM, which JSON.parse refuses
  if (!isObject(root)) throw new ConfigError(`${file}: the file must hold an object with mcpServers (got ${typeOf(root)})`)

  if (root.mcpServers !== undefined && root.servers !== undefined) report(ctx, 'mcpServers', 'and servers are both given: keep one')
  const key = root.mcpServers === undefined && root.servers !== undefined ? 'servers' : 'mcpServers'
  const entries = root[key]
  const servers: ServerConfig[] = []
  // A misspelt `mcpServers` (or `servers`) is reported where it is, which says more than its absence.
  const misspelt = Object.keys(root).some(field => !TOP_LEVEL_FIELDS.includes(field) && ['mcpServers', 'servers'].includes(closest(field, TOP_LEVEL_FIELDS) ?? ''))
  if (entries === undefined) {
    if (!misspelt) report(ctx, 'mcpServers', 'is missing: declare the servers under mcpServers (or VS Code\'s servers)')
  }
  else if (!isObject(entries)) report(ctx, key, `must be an object of servers by name (got ${typeOf(entries)})`)
  else if (Object.keys(entries).length === 0) report(ctx, key, 'declares no servers')
  else {
    for (const [name, entry] of Object.entries(entries)) {
      const server = parseServer(name, entry, `${key}.${name}`, ctx)
      if (server !== undefined) servers.push(server)
    }
  }
  checkPrefixes(servers, key, ctx)
  checkNamespaces(servers, key, ctx)
  const { aggregate, security, observability, redis } = parseGateway(root.gateway, ctx)
  for (const field of Object.keys(root)) {
    if (TOP_LEVEL_FIELDS.includes(field)) continue
    if (FOREIGN_TOP_LEVEL.has(field)) warnIgnored(ctx, field)
    else unknownField(ctx, field, field, TOP_LEVEL_FIELDS)
  }
  if (ctx.problems.length > 0) throw new ConfigError(ctx.problems.join('\n'))
  return { file: absolute, servers, aggregate, security, observability, ...(redis !== undefined && { redis }), warnings: ctx.warnings }
}

function parseText (text: string, file: string): unknown {
  const yaml = /\.ya?ml$/i.test(file)
  try {
    return yaml ? parseYaml(text) : JSON.parse(text)
  } catch (err) {
    // yaml appends a code frame to its first line; Node 20's JSON.parse gives only an offset.
    let message = (err as Error).message.split('\n')[0].replace(/:$/, '')
    const offset = /at position (\d+)$/.exec(message)?.[1]
    if (offset !== undefined) {
      const lines = text.slice(0, Number(offset)).split('\n')
      message += ` (line ${lines.length} column ${lines[lines.length - 1].length + 1})`
    }
    throw new ConfigError(`${file}: invalid ${yaml ? 'YAML' : 'JSON'}: ${message}`)
  }
}

/** Returns undefined so that a parser can `return report(...)` for a value it cannot use. */
function report (ctx: Context, path: string, problem: string): undefined {
  ctx.problems.push(`${ctx.file}: ${path} ${problem}`)
  return undefined
}

function warnIgnored (ctx: Context, path: string, note?: string): void {
  ctx.warnings.push(`${ctx.file}: ${path} is not used by the gateway and was ignored${note === undefined ? '' : `: ${note}`}`)
}

/** A field the gateway does not know, with the known one it is closest to when one is close. */
function unknownField (ctx: Context, path: string, field: string, known: readonly string[]): void {
  const guess = closest(field, known)
  const expected = known.length === 2 ? known.join(' or ') : `one of ${known.join(', ')}`
  report(ctx, path, guess === undefined ? `is not a known field (expected ${expected})` : `is not a known field; did you mean ${JSON.stringify(guess)}?`)
}

/** Abbreviated names are also matched as written out, so `enviroment` finds `env`. */
const SPELLED_OUT = new Map([['env', 'environment'], ['args', 'arguments']])

/**
 * The known name nearest to `field`, when it is near enough to be a slip rather than another
 * word: at most two edits, and at most one for names of up to five letters, so `ur` finds
 * `url` while `id` finds nothing. Ties go to the earlier name.
 */
function closest (field: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let fewest = Infinity
  for (const name of known) {
    for (const form of [name, SPELLED_OUT.get(name)]) {
      if (form === undefined) continue
      const edits = distance(field.toLowerCase(), form.toLowerCase())
      const limit = Math.min(2, Math.max(1, Math.floor(Math.max(field.length, form.length) / 3)))
      if (edits <= limit && edits < fewest) [best, fewest] = [name, edits]
    }
  }
  return best
}

/**
 * Damerau-Levenshtein distance in its optimal-string-alignment form: insertions, deletions,
 * substitutions and swaps of two neighbours (`hedaers`) each count one. Written here rather
 * than imported: no dependency of ours exports one (`js-levenshtein` in node_modules comes in
 * through Redoc's `@redocly/openapi-core`, may leave with it, and counts a swap as two), and it
 * is a dozen lines.
 */
function distance (a: string, b: string): number {
  const row = (i: number): number[] => Array.from({ length: b.length + 1 }, (_, j) => i === 0 ? j : j === 0 ? i : 0)
  const d = Array.from({ length: a.length + 1 }, (_, i) => row(i))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}

function parseServer (name: string, entry: unknown, path: string, ctx: Context): ServerConfig | undefined {
  if (!NAME.test(name)) report(ctx, path, 'is not a valid server name: use 1 to 64 letters, digits, \'_\' or \'-\'')
  if (!isObject(entry)) return report(ctx, path, `must be an object (got ${typeOf(entry)})`)
  const kind = detectKind(entry, path, ctx)
  checkFields(entry, path, kind, ctx)
  if (kind === undefined) return undefined

  const at = (field: string): string => `${path}.${field}`
  const { prefix, timeoutMs, connectTimeoutMs, isolation, maxIsolated, isolatedIdleMs } = entry
  if (typeof prefix === 'string' && !PREFIX.test(prefix)) {
    report(ctx, at('prefix'), `must start with '/', not end with '/' and have no spaces (got ${show(prefix)})`)
  }
  for (const [field, value] of [['timeoutMs', timeoutMs], ['connectTimeoutMs', connectTimeoutMs], ['isolatedIdleMs', isolatedIdleMs]] as const) {
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 1)) {
      report(ctx, at(field), `must be a whole number of milliseconds, at least 1 (got ${show(value)})`)
    }
  }
  if (maxIsolated !== undefined && !(Number.isInteger(maxIsolated) && (maxIsolated as number) >= 1)) {
    report(ctx, at('maxIsolated'), `must be a whole number, at least 1 (got ${show(maxIsolated)})`)
  }
  // In-process servers have no upstream to connect, share or start per session, and their
  // own endpoint serves every tool they define, so a filter there could not be kept.
  const inProcess = kind === 'builtin' || kind === 'module'
  for (const field of UPSTREAM_FIELDS) {
    if (inProcess && entry[field] !== undefined) report(ctx, at(field), `applies only to stdio, http and sse servers, not to ${kind} ones`)
  }
  if (!inProcess && isolation !== undefined && isolation !== 'shared' && isolation !== 'session') {
    report(ctx, at('isolation'), `must be "shared" or "session" (got ${show(isolation)})`)
  }
  const common = defined({
    prefix: string(prefix, at('prefix'), ctx),
    stateless: boolean(entry.stateless, at('stateless'), ctx),
    required: boolean(entry.required, at('required'), ctx),
    scopes: strings(entry.scopes, at('scopes'), ctx, false),
    timeoutMs: timeoutMs as number | undefined,
    connectTimeoutMs: connectTimeoutMs as number | undefined,
    disabled: boolean(entry.disabled, at('disabled'), ctx),
    tools: parseTools(entry.tools, at('tools'), ctx),
    retry: inProcess ? undefined : parseRetry(entry.retry, at('retry'), ctx),
    isolation: isolation as Isolation | undefined,
    maxIsolated: maxIsolated as number | undefined,
    isolatedIdleMs: isolatedIdleMs as number | undefined,
    namespace: parseNamespace(entry.namespace, at('namespace'), ctx),
    rename: parseRename(entry.rename, at('rename'), ctx)
  })

  // The field that chose the kind, interpolated before it is checked so the check sees what
  // will be used. Undefined once a problem with it is reported.
  const main = (field: string, interpolated = true): string | undefined => {
    const before = ctx.problems.length
    const raw = string(entry[field], at(field), ctx)
    if (raw === '') report(ctx, at(field), 'must not be empty')
    const value = raw !== undefined && interpolated ? interpolate(raw, at(field), ctx) : raw
    return ctx.problems.length === before ? value : undefined
  }
  switch (kind) {
    case 'stdio': {
      const cwd = string(entry.cwd, at('cwd'), ctx)
      return defined({
        name,
        kind,
        ...common,
        command: main('command') ?? '',
        args: strings(entry.args, at('args'), ctx, true) ?? [],
        env: record(entry.env, at('env'), ctx),
        cwd: cwd === undefined ? undefined : resolve(ctx.dir, interpolate(cwd, at('cwd'), ctx))
      })
    }
    case 'http':
    case 'sse': {
      const url = main('url')
      if (url !== undefined && !(URL.canParse(url) && /^https?:$/.test(new URL(url).protocol))) {
        // Quotes the file's text, not the interpolated URL, which may hold a secret.
        report(ctx, at('url'), `must be an http: or https: URL (got ${show(entry.url)})`)
      }
      return { name, kind, ...common, url: url ?? '', headers: record(entry.headers, at('headers'), ctx) }
    }
    case 'builtin': {
      const builtin = main('builtin', false)
      if (builtin !== undefined && ctx.builtins !== undefined && !ctx.builtins.includes(builtin)) {
        report(ctx, at('builtin'), `is ${show(builtin)}, which is not a built-in server (expected one of ${ctx.builtins.join(', ')})`)
      }
      return { name, kind, ...common, builtin: builtin ?? '' }
    }
    case 'module': {
      const module = main('module') ?? ''
      const exported = string(entry.export, at('export'), ctx) ?? 'default'
      return { name, kind, ...common, module: /^\.\.?[\\/]/.test(module) ? resolve(ctx.dir, module) : module, export: exported }
    }
  }
}

/**
 * Every field of an entry is the gateway's, another client's (warned about, or refused when
 * ignoring it would undo what it restricts) or unknown (an error). Without a kind, any kind's
 * fields are accepted: the entry is refused already, and only its other problems are left to say.
 */
function checkFields (entry: Entry, path: string, kind: Kind | undefined, ctx: Context): void {
  const own = kind === undefined ? ENTRY_FIELDS : [...KIND_FIELDS[kind], ...COMMON_FIELDS]
  for (const [field, value] of Object.entries(entry)) {
    const at = `${path}.${field}`
    if (own.includes(field)) continue
    if (ENTRY_FIELDS.includes(field)) {
      // Clients write `env` or `args` on a url entry, harmlessly; saying so beats refusing the file.
      const kinds = (Object.keys(KIND_FIELDS) as Kind[]).filter(other => KIND_FIELDS[other].includes(field))
      ctx.warnings.push(`${ctx.file}: ${at} applies only to ${kinds.join(' and ')} servers and was ignored`)
      continue
    }
    const foreign = FOREIGN_FIELDS.get(field)
    if (foreign === undefined) {
      unknownField(ctx, at, field, own)
      continue
    }
    const refused = foreign.refuse?.(value, entry)
    if (refused !== undefined) report(ctx, at, refused)
    else warnIgnored(ctx, at, foreign.note)
  }
}

function detectKind (entry: Entry, path: string, ctx: Context): Kind | undefined {
  const given = KIND_KEYS.filter(field => entry[field] !== undefined)
  if (given.length === 0) {
    // `"comand"`, `"ur"` or Windsurf's `serverUrl` is reported on its own key (checkFields),
    // which tells the user what to change; this sentence would only add a vaguer one.
    const kindKey = (field: string): boolean => (KIND_KEYS as readonly string[]).includes(closest(field, ENTRY_FIELDS) ?? '')
    const named = Object.keys(entry).some(field => URL_ALIASES.includes(field) || (!ENTRY_FIELDS.includes(field) && !FOREIGN_FIELDS.has(field) && kindKey(field)))
    return named ? undefined : report(ctx, path, 'needs one of command (a stdio server), url (an http or sse server), builtin or module')
  }
  // Guessing which one was meant would start the wrong server.
  if (given.length > 1) return report(ctx, path, `must have only one of command, url, builtin or module (has ${given.join(' and ')})`)
  const field = given[0]
  if (entry.type === undefined) return field === 'command' ? 'stdio' : field === 'url' ? 'http' : field
  const transport = TRANSPORTS.get(entry.type)
  if (transport === undefined) return report(ctx, `${path}.type`, `must be one of ${[...TRANSPORTS.keys()].join(', ')} (got ${show(entry.type)})`)
  const needs = transport === 'stdio' ? 'command' : 'url'
  if (field !== needs) return report(ctx, `${path}.type`, `is ${show(entry.type)}, which needs ${needs}, but the entry has ${field}`)
  return transport
}

/** `${VAR}`, `${VAR:-default}` (the default also when VAR is empty, as in the shell) and VS Code's `${env:VAR}`. */
function interpolate (value: string, path: string, ctx: Context): string {
  return value.replace(/\$\{([^}]*)\}/g, (reference, inner: string) => {
    const match = /^(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s.exec(inner)
    if (match === null) {
      report(ctx, path, `has ${reference}, which the gateway cannot fill in (use \${VAR}, \${VAR:-default} or \${env:VAR})`)
      return reference
    }
    const [, name, fallback] = match
    const set = ctx.env[name]
    if (set !== undefined && (set !== '' || fallback === undefined)) return set
    if (fallback !== undefined) return fallback
    report(ctx, path, `refers to ${reference}, which is not set`)
    return reference
  })
}

function string (value: unknown, path: string, ctx: Context): string | undefined {
  if (value === undefined || typeof value === 'string') return value
  return report(ctx, path, `must be a string (got ${typeOf(value)})`)
}

function boolean (value: unknown, path: string, ctx: Context): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value
  return report(ctx, path, `must be true or false (got ${typeOf(value)})`)
}

function strings (value: unknown, path: string, ctx: Context, interpolated: boolean): string[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) return report(ctx, path, `must be an array of strings (got ${typeOf(value)})`)
  return value.map((item, i) => {
    const text = string(item, `${path}[${i}]`, ctx) ?? ''
    return interpolated ? interpolate(text, `${path}[${i}]`, ctx) : text
  })
}

function record (value: unknown, path: string, ctx: Context): Record<string, string> {
  if (value === undefined) return {}
  if (!isObject(value)) {
    report(ctx, path, `must be an object of strings (got ${typeOf(value)})`)
    return {}
  }
  return Object.fromEntries(Object.entries(value).map(([key, item]) =>
    [key, interpolate(string(item, `${path}.${key}`, ctx) ?? '', `${path}.${key}`, ctx)]))
}

function parseTools (value: unknown, path: string, ctx: Context): CommonServerConfig['tools'] {
  if (value === undefined) return undefined
  if (!isObject(value)) return report(ctx, path, `must be an object with allow and/or deny lists (got ${typeOf(value)})`)
  for (const field of Object.keys(value)) {
    if (field !== 'allow' && field !== 'deny') unknownField(ctx, `${path}.${field}`, field, ['allow', 'deny'])
  }
  return defined({ allow: strings(value.allow, `${path}.allow`, ctx, false), deny: strings(value.deny, `${path}.deny`, ctx, false) })
}

function parseRetry (value: unknown, path: string, ctx: Context): CommonServerConfig['retry'] {
  if (value === undefined) return undefined
  if (!isObject(value)) return report(ctx, path, `must be an object with initialMs and/or maxMs (got ${typeOf(value)})`)
  const retry: { initialMs?: number, maxMs?: number } = {}
  for (const [field, given] of Object.entries(value)) {
    if (field !== 'initialMs' && field !== 'maxMs') unknownField(ctx, `${path}.${field}`, field, ['initialMs', 'maxMs'])
    else if (!(Number.isInteger(given) && (given as number) >= 1)) report(ctx, `${path}.${field}`, `must be a whole number of milliseconds, at least 1 (got ${show(given)})`)
    else retry[field] = given as number
  }
  if (retry.initialMs !== undefined && retry.maxMs !== undefined && retry.maxMs < retry.initialMs) {
    report(ctx, `${path}.maxMs`, `must be at least initialMs (${retry.initialMs}) (got ${retry.maxMs})`)
  }
  return retry
}

function parseNamespace (value: unknown, path: string, ctx: Context): string | false | undefined {
  if (value === undefined || value === false || (typeof value === 'string' && NAME.test(value))) return value
  return report(ctx, path, `must be false or 1 to 64 letters, digits, '_' or '-' (got ${show(value)})`)
}

function parseRename (value: unknown, path: string, ctx: Context): Record<string, string> | undefined {
  if (value === undefined) return undefined
  if (!isObject(value)) return report(ctx, path, `must be an object of upstream tool names to the names /mcp shows (got ${typeOf(value)})`)
  const renamed: Array<[string, string]> = []
  const sources = new Map<string, string>()
  for (const [upstream, exposed] of Object.entries(value)) {
    const at = `${path}.${upstream}`
    if (upstream === '') report(ctx, path, 'has an empty key: name the upstream tool to rename')
    else if (typeof exposed !== 'string') report(ctx, at, `must be a string (got ${typeOf(exposed)})`)
    else if (!TOOL_NAME.test(exposed)) report(ctx, at, `must be a tool name: 1 to 64 of the characters A-Z a-z 0-9 _ . - (got ${show(exposed)})`)
    else if (sources.has(exposed)) report(ctx, `${path}.${sources.get(exposed) as string}`, `and ${at} both rename to ${show(exposed)}: give each tool its own name`)
    else {
      sources.set(exposed, upstream)
      renamed.push([upstream, exposed])
    }
  }
  // fromEntries defines own properties, so an upstream tool named `__proto__` stays a key.
  return Object.fromEntries(renamed)
}

/** The gateway's own settings: every field known, since a typo here would silently change behaviour. */
const GATEWAY_FIELDS = ['aggregate', 'separator', 'publicUrl', 'auth', 'policy', 'rateLimit', 'cors', 'tls', 'metrics', 'tracing', 'statusPage', 'redis']

function parseGateway (value: unknown, ctx: Context): Pick<GatewayConfig, 'aggregate' | 'security' | 'observability' | 'redis'> {
  const defaults = { aggregate: { enabled: true, separator: '_' }, security: {}, observability: {} }
  if (value === undefined) return defaults
  if (!isObject(value)) {
    report(ctx, 'gateway', `must be an object (got ${typeOf(value)})`)
    return defaults
  }
  for (const field of Object.keys(value)) {
    if (!GATEWAY_FIELDS.includes(field)) unknownField(ctx, `gateway.${field}`, field, GATEWAY_FIELDS)
  }
  const separator = string(value.separator, 'gateway.separator', ctx)
  if (separator !== undefined && !SEPARATOR.test(separator)) {
    report(ctx, 'gateway.separator', `must be 1 to 3 of the characters A-Z a-z 0-9 _ . - (got ${show(separator)})`)
  }
  const publicUrl = string(value.publicUrl, 'gateway.publicUrl', ctx)
  if (publicUrl !== undefined && !/^https?:\/\/[^/\s]+$/.test(publicUrl)) report(ctx, 'gateway.publicUrl', `must be an origin such as https://mcp.example.com, with no path (got ${show(publicUrl)})`)
  const auth = parseAuth(value.auth, 'gateway.auth', ctx)
  const policy = parsePolicy(value.policy, 'gateway.policy', ctx)
  const rateLimit = parseRateLimit(value.rateLimit, 'gateway.rateLimit', ctx)
  const cors = parseCors(value.cors, 'gateway.cors', ctx)
  const tls = parseTls(value.tls, 'gateway.tls', ctx)
  return {
    aggregate: { enabled: boolean(value.aggregate, 'gateway.aggregate', ctx) ?? true, separator: separator ?? '_' },
    security: defined({ publicUrl, auth, policy, rateLimit, cors, tls }),
    observability: parseObservability(value, ctx),
    ...defined({ redis: parseRedis(value.redis, 'gateway.redis', ctx) })
  }
}

const REDIS_FIELDS = ['url', 'prefix', 'requestStateKey']
const REDIS_PREFIX = /^\S{1,100}$/

/** `gateway.redis`: a URL, or `{ url, prefix, requestStateKey }`. */
function parseRedis (value: unknown, path: string, ctx: Context): RedisSettings | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' && !isObject(value)) return report(ctx, path, `must be a redis:// URL or an object with url (got ${typeOf(value)})`)
  const redis = typeof value === 'string' ? { url: value } : section(value, path, REDIS_FIELDS, ctx) ?? {}
  const at = typeof value === 'string' ? path : `${path}.url`
  const raw = string(redis.url, `${path}.url`, ctx)
  const unset = ctx.problems.length
  const url = raw === undefined || raw === '' ? undefined : interpolate(raw, at, ctx)
  if (url === undefined) report(ctx, at, 'needs the URL of the Redis, such as "redis://localhost:6379" or "${REDIS_URL}"')
  else if (ctx.problems.length === unset) {
    const problem = redisUrlProblem(url)
    if (problem !== undefined) report(ctx, at, problem)
  }
  const prefix = string(redis.prefix, `${path}.prefix`, ctx) ?? DEFAULT_REDIS_PREFIX
  if (!REDIS_PREFIX.test(prefix)) report(ctx, `${path}.prefix`, `must be 1 to 100 characters and no spaces (got ${show(prefix)})`)
  const given = string(redis.requestStateKey, `${path}.requestStateKey`, ctx)
  if (given !== undefined && !given.includes('${')) ctx.warnings.push(`${ctx.file}: ${path}.requestStateKey holds a key in plain text; use "\${ENV_VAR}"`)
  const before = ctx.problems.length
  const key = stateKey(given === undefined ? undefined : interpolate(given, `${path}.requestStateKey`, ctx), ctx.env)
  // A `${VAR}` that is not set is reported already; its length says nothing more.
  if (key.problem !== undefined && ctx.problems.length === before) report(ctx, `${path}.requestStateKey`, key.problem)
  return { url: url ?? '', prefix, requestStateKey: key.value ?? '' }
}

/** What is wrong with a Redis URL, quoted without the URL itself, which may hold a password. */
function redisUrlProblem (url: string): string | undefined {
  if (!URL.canParse(url)) return 'must be a redis:// or rediss:// URL (got text that is not a URL)'
  const { protocol, hostname } = new URL(url)
  if (protocol !== 'redis:' && protocol !== 'rediss:') return `must be a redis:// or rediss:// URL (got a ${protocol} URL)`
  if (hostname === '') return 'must name the Redis host: redis://host:6379'
  return undefined
}

/** The request-state key given, else the environment's; a problem when neither is a long enough secret. */
function stateKey (given: string | undefined, env: NodeJS.ProcessEnv): { value?: string, problem?: string } {
  const value = given ?? env[STATE_KEY_ENV]
  if (value === undefined || value === '') {
    return { problem: `is required with Redis: a secret of at least ${MIN_REQUEST_STATE_KEY_LENGTH} characters, the same on every instance (it seals the requestState clients hand back to any instance); set ${STATE_KEY_ENV} or give "requestStateKey": "\${SOME_VAR}" (make one with: openssl rand -base64 32)` }
  }
  if (value.length < MIN_REQUEST_STATE_KEY_LENGTH) return { value, problem: `is too short to be a secret (${value.length} characters; use at least ${MIN_REQUEST_STATE_KEY_LENGTH})` }
  return { value }
}

/**
 * `--redis` or `REDIS_URL` (`source`) over a config's `gateway.redis`: its URL replaced, its
 * prefix and key kept; without one, the default prefix and the key from the environment.
 * Validated as the file's field is; a `ConfigError` names the flag or variable.
 */
export function redisOverride (url: string, base: RedisSettings | undefined, source: string, env: NodeJS.ProcessEnv = process.env): RedisSettings {
  const problems: string[] = []
  const urlProblem = redisUrlProblem(url)
  if (urlProblem !== undefined) problems.push(`${source} ${urlProblem}`)
  if (base !== undefined) {
    if (problems.length > 0) throw new ConfigError(problems.join('\n'))
    return { ...base, url }
  }
  const key = stateKey(undefined, env)
  if (key.problem !== undefined) problems.push(`${source}: the request-state key (${STATE_KEY_ENV}) ${key.problem}`)
  if (problems.length > 0) throw new ConfigError(problems.join('\n'))
  return { url, prefix: DEFAULT_REDIS_PREFIX, requestStateKey: key.value as string }
}

function parseObservability (gateway: Entry, ctx: Context): ObservabilityOptions {
  const metrics = section(gateway.metrics, 'gateway.metrics', ['enabled', 'port', 'protect'], ctx)
  const port = metrics?.port
  if (port !== undefined && (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)) report(ctx, 'gateway.metrics.port', `must be a port number (got ${show(port)})`)
  const tracing = section(gateway.tracing, 'gateway.tracing', ['endpoint', 'serviceName'], ctx)
  const endpoint = tracing?.endpoint === undefined ? undefined : interpolate(string(tracing.endpoint, 'gateway.tracing.endpoint', ctx) ?? '', 'gateway.tracing.endpoint', ctx)
  if (endpoint !== undefined && !/^https?:\/\//.test(endpoint)) report(ctx, 'gateway.tracing.endpoint', `must be an http(s) URL of an OTLP/HTTP traces endpoint (got ${show(endpoint)})`)
  return defined({
    metrics: metrics === undefined ? undefined : defined({ enabled: boolean(metrics.enabled, 'gateway.metrics.enabled', ctx), port: typeof port === 'number' ? port : undefined, protect: boolean(metrics.protect, 'gateway.metrics.protect', ctx) }),
    tracing: tracing === undefined ? undefined : defined({ endpoint, serviceName: string(tracing.serviceName, 'gateway.tracing.serviceName', ctx) }),
    statusPage: boolean(gateway.statusPage, 'gateway.statusPage', ctx)
  })
}

/** An object of known fields, or undefined (reported) when it is not one. */
function section (value: unknown, path: string, fields: string[], ctx: Context): Entry | undefined {
  if (value === undefined) return undefined
  if (!isObject(value)) return report(ctx, path, `must be an object (got ${typeOf(value)})`)
  for (const field of Object.keys(value)) {
    if (!fields.includes(field)) unknownField(ctx, `${path}.${field}`, field, fields)
  }
  return value
}

function parseAuth (value: unknown, path: string, ctx: Context): AuthOptions | undefined {
  const auth = section(value, path, ['mode', 'apiKeys', 'jwt', 'protectDocs', 'authorizationServers', 'forwardIdentity'], ctx)
  if (auth === undefined) return undefined
  const mode = auth.mode ?? 'required'
  if (mode !== 'required' && mode !== 'none') report(ctx, `${path}.mode`, `must be "required" or "none" (got ${show(mode)})`)
  const apiKeys: ApiKey[] = []
  if (auth.apiKeys !== undefined && !Array.isArray(auth.apiKeys)) report(ctx, `${path}.apiKeys`, `must be an array (got ${typeOf(auth.apiKeys)})`)
  for (const [i, entry] of (Array.isArray(auth.apiKeys) ? auth.apiKeys : []).entries()) {
    const at = `${path}.apiKeys[${i}]`
    const item = section(entry, at, ['id', 'key', 'scopes'], ctx)
    if (item === undefined) continue
    const id = string(item.id, `${at}.id`, ctx)
    if (id === undefined || id === '') report(ctx, `${at}.id`, 'is required: it names the caller in logs and policies')
    const raw = string(item.key, `${at}.key`, ctx)
    const key = raw === undefined ? undefined : interpolate(raw, `${at}.key`, ctx)
    let sha256: string | undefined
    if (key === undefined || key === '') report(ctx, `${at}.key`, 'is required: "${ENV_VAR}" or "sha256:<hex>"')
    else if (key.startsWith('sha256:')) {
      sha256 = key.slice('sha256:'.length).toLowerCase()
      if (!/^[0-9a-f]{64}$/.test(sha256)) report(ctx, `${at}.key`, 'must be sha256: followed by 64 hex digits')
    } else {
      if (raw !== undefined && !raw.includes('${')) ctx.warnings.push(`${ctx.file}: ${at}.key holds a key in plain text; use "\${ENV_VAR}" or "sha256:<hex>"`)
      if (key.length < 16) report(ctx, `${at}.key`, `is too short to be a secret (${key.length} characters; use at least 16)`)
      sha256 = createHash('sha256').update(key).digest('hex')
    }
    if (id !== undefined && apiKeys.some(other => other.id === id)) report(ctx, `${at}.id`, `repeats the id ${show(id)}`)
    if (id !== undefined && sha256 !== undefined) apiKeys.push({ id, sha256, scopes: strings(item.scopes, `${at}.scopes`, ctx, false) ?? [] })
  }
  const jwt = parseJwt(auth.jwt, `${path}.jwt`, ctx)
  if (mode === 'required' && apiKeys.length === 0 && jwt === undefined) report(ctx, path, 'gives no apiKeys and no jwt: callers could not authenticate (say "mode": "none" to run without authentication)')
  const forwardIdentity = record(auth.forwardIdentity, `${path}.forwardIdentity`, ctx)
  for (const [header, field] of Object.entries(forwardIdentity)) {
    if (/^(authorization|cookie|x-api-key|proxy-authorization)$/i.test(header)) report(ctx, `${path}.forwardIdentity.${header}`, 'names a credential header, which the gateway never forwards')
    if (field === '') report(ctx, `${path}.forwardIdentity.${header}`, 'must name id, sub or a claim')
  }
  return {
    mode: mode === 'none' ? 'none' : 'required',
    apiKeys,
    ...(jwt !== undefined && { jwt }),
    protectDocs: boolean(auth.protectDocs, `${path}.protectDocs`, ctx) ?? false,
    authorizationServers: strings(auth.authorizationServers, `${path}.authorizationServers`, ctx, true) ?? (jwt === undefined ? [] : [jwt.issuer]),
    forwardIdentity
  }
}

function parseJwt (value: unknown, path: string, ctx: Context): JwtOptions | undefined {
  const jwt = section(value, path, ['issuer', 'jwksUri', 'audience', 'algorithms', 'clockToleranceSec'], ctx)
  if (jwt === undefined) return undefined
  const issuer = interpolate(string(jwt.issuer, `${path}.issuer`, ctx) ?? '', `${path}.issuer`, ctx)
  if (issuer === '') report(ctx, `${path}.issuer`, 'is required: the exact iss of the tokens')
  const jwksUri = interpolate(string(jwt.jwksUri, `${path}.jwksUri`, ctx) ?? '', `${path}.jwksUri`, ctx)
  if (!/^https?:\/\//.test(jwksUri)) report(ctx, `${path}.jwksUri`, `must be an http(s) URL (got ${show(jwksUri)})`)
  const audience = typeof jwt.audience === 'string' ? [interpolate(jwt.audience, `${path}.audience`, ctx)] : strings(jwt.audience, `${path}.audience`, ctx, true) ?? []
  const algorithms = strings(jwt.algorithms, `${path}.algorithms`, ctx, false) ?? DEFAULT_JWT_ALGORITHMS
  for (const algorithm of algorithms) {
    if (!DEFAULT_JWT_ALGORITHMS.includes(algorithm)) report(ctx, `${path}.algorithms`, `names ${show(algorithm)}: only asymmetric algorithms are accepted (${DEFAULT_JWT_ALGORITHMS.join(', ')})`)
  }
  const tolerance = jwt.clockToleranceSec ?? DEFAULT_CLOCK_TOLERANCE_SEC
  if (typeof tolerance !== 'number' || !Number.isInteger(tolerance) || tolerance < 0 || tolerance > 300) report(ctx, `${path}.clockToleranceSec`, `must be a whole number of seconds from 0 to 300 (got ${show(tolerance)})`)
  return { issuer, jwksUri, audience, algorithms, clockToleranceSec: typeof tolerance === 'number' ? tolerance : DEFAULT_CLOCK_TOLERANCE_SEC }
}

function parsePolicy (value: unknown, path: string, ctx: Context): PolicyRule[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) return report(ctx, path, `must be an array of rules (got ${typeOf(value)})`)
  const rules: PolicyRule[] = []
  for (const [i, entry] of value.entries()) {
    const at = `${path}[${i}]`
    const rule = section(entry, at, ['match', 'allow', 'deny'], ctx)
    if (rule === undefined) continue
    const match = section(rule.match ?? {}, `${at}.match`, ['apiKey', 'sub', 'scope', 'claim'], ctx) ?? {}
    const claim = match.claim === undefined ? undefined : record(match.claim, `${at}.match.claim`, ctx)
    rules.push({
      match: defined({ apiKey: string(match.apiKey, `${at}.match.apiKey`, ctx), sub: string(match.sub, `${at}.match.sub`, ctx), scope: string(match.scope, `${at}.match.scope`, ctx), claim }),
      allow: strings(rule.allow, `${at}.allow`, ctx, false) ?? [],
      deny: strings(rule.deny, `${at}.deny`, ctx, false) ?? []
    })
  }
  return rules
}

/** A time window: milliseconds, or `"1 minute"`, `"30 seconds"`, `"500 ms"`, `"1 hour"`. */
function duration (value: unknown, path: string, ctx: Context): number | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value
  const match = typeof value === 'string' ? /^(\d+)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)$/i.exec(value.trim()) : null
  if (match === null) return report(ctx, path, `must be milliseconds or a duration such as "1 minute" (got ${show(value)})`)
  const unit = (match[2] as string).toLowerCase()
  const factor = unit.startsWith('h') ? 3_600_000 : unit === 'm' || unit.startsWith('min') ? 60_000 : unit === 'ms' || unit.startsWith('milli') ? 1 : 1000
  return Number(match[1]) * factor
}

function parseLimit (value: Entry, path: string, ctx: Context): Partial<Limit> {
  const max = value.max
  if (max !== undefined && (typeof max !== 'number' || !Number.isInteger(max) || max < 1)) report(ctx, `${path}.max`, `must be a whole number above 0 (got ${show(max)})`)
  return defined({ max: typeof max === 'number' ? max : undefined, timeWindow: duration(value.timeWindow, `${path}.timeWindow`, ctx) })
}

function parseRateLimit (value: unknown, path: string, ctx: Context): RateLimitOptions | undefined {
  const limit = section(value, path, ['max', 'timeWindow', 'servers'], ctx)
  if (limit === undefined) return undefined
  const servers: RateLimitOptions['servers'] = {}
  const byServer = section(limit.servers ?? {}, `${path}.servers`, Object.keys(isObject(limit.servers) ? limit.servers : {}), ctx) ?? {}
  for (const [name, entry] of Object.entries(byServer)) {
    const at = `${path}.servers.${name}`
    const server = section(entry, at, ['max', 'timeWindow', 'tools'], ctx)
    if (server === undefined) continue
    const tools: Record<string, Partial<Limit>> = {}
    const byTool = section(server.tools ?? {}, `${at}.tools`, Object.keys(isObject(server.tools) ? server.tools : {}), ctx) ?? {}
    for (const [tool, toolEntry] of Object.entries(byTool)) {
      const toolLimit = section(toolEntry, `${at}.tools.${tool}`, ['max', 'timeWindow'], ctx)
      if (toolLimit !== undefined) tools[tool] = parseLimit(toolLimit, `${at}.tools.${tool}`, ctx)
    }
    servers[name] = { ...parseLimit(server, at, ctx), tools }
  }
  const { max, timeWindow } = parseLimit(limit, path, ctx)
  return { max: max ?? DEFAULT_RATE_LIMIT.max, timeWindow: timeWindow ?? DEFAULT_RATE_LIMIT.timeWindow, servers }
}

function parseCors (value: unknown, path: string, ctx: Context): CorsOptions | undefined {
  const cors = section(value, path, ['origins'], ctx)
  if (cors === undefined) return undefined
  const origins = strings(cors.origins, `${path}.origins`, ctx, true) ?? []
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) report(ctx, `${path}.origins`, `names ${show(origin)}: an origin is scheme://host[:port], with no path, or *`)
  }
  return { origins }
}

function parseTls (value: unknown, path: string, ctx: Context): TlsOptions | undefined {
  const tls = section(value, path, ['cert', 'key'], ctx)
  if (tls === undefined) return undefined
  const file = (field: 'cert' | 'key'): string => {
    const given = interpolate(string(tls[field], `${path}.${field}`, ctx) ?? '', `${path}.${field}`, ctx)
    if (given === '') report(ctx, `${path}.${field}`, 'is required: the path of a PEM file')
    return given === '' ? '' : resolve(ctx.dir, given)
  }
  return { cert: file('cert'), key: file('key') }
}

/** Disabled servers are not mounted, so one may keep the prefix of the server that replaces it. */
function checkPrefixes (servers: ServerConfig[], key: string, ctx: Context): void {
  const owners = new Map<string, string>()
  for (const server of servers.filter(server => server.disabled !== true)) {
    const prefix = server.prefix ?? `/${server.name}`
    if (RESERVED.includes(prefix)) {
      report(ctx, `${key}.${server.name}`, `would be mounted at ${prefix}, which the gateway serves itself: give it another prefix`)
      continue
    }
    const owner = owners.get(prefix)
    if (owner !== undefined) report(ctx, `${key}.${owner}`, `and ${key}.${server.name} are both mounted at ${prefix}: give one a different prefix`)
    else owners.set(prefix, server.name)
  }
}

/**
 * Tools and prompts in `/mcp` are `<namespace><separator><name>`: two enabled servers with one
 * namespace would list each other's names (disabled ones are skipped, as for prefixes).
 */
function checkNamespaces (servers: ServerConfig[], key: string, ctx: Context): void {
  const owners = new Map<string, ServerConfig>()
  const label = (server: ServerConfig): string => `${key}.${server.name}${server.namespace === undefined ? '' : '.namespace'}`
  for (const server of servers.filter(server => server.disabled !== true && server.namespace !== false)) {
    const namespace = server.namespace === undefined ? server.name : server.namespace as string
    const owner = owners.get(namespace)
    if (owner !== undefined) report(ctx, label(owner), `and ${label(server)} both give the namespace ${show(namespace)} in /mcp: give one a different namespace`)
    else owners.set(namespace, server)
  }
}

/** Drops keys whose value is undefined, so a parsed entry has only the fields the file gave. */
function defined<T extends object> (object: T): T {
  for (const key of Object.keys(object) as Array<keyof T>) if (object[key] === undefined) Reflect.deleteProperty(object, key)
  return object
}
