import t, { type Test } from 'tap'
import { writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig, parseConfig, redisOverride, type GatewayConfig } from '../../src/config.js'

const fixtures = fileURLToPath(new URL('../fixtures/configs/', import.meta.url))

/** Parses `config` (an object is written out as JSON) as the file `gateway.json`. */
function parse (config: unknown, env: NodeJS.ProcessEnv = {}, builtins?: readonly string[]): GatewayConfig {
  return parseConfig(typeof config === 'string' ? config : JSON.stringify(config), 'gateway.json', env, builtins)
}

/** The lines of the `ConfigError` that parsing `config` throws. */
function problems (t: Test, config: unknown, env: NodeJS.ProcessEnv = {}, builtins?: readonly string[]): string[] {
  try {
    parse(config, env, builtins)
  } catch (err) {
    t.equal((err as { code?: string }).code, 'GW_ERR_CONFIG')
    return (err as Error).message.split('\n')
  }
  t.fail('expected a ConfigError')
  return []
}

t.test('each kind of entry, with every spelling of type', async t => {
  const config = parse({
    mcpServers: {
      files: { command: 'npx', args: ['-y', 'server-filesystem', '/srv'] },
      typed: { type: 'stdio', command: 'node', args: [], env: { DEBUG: '1' }, cwd: '/opt/server' },
      remote: { url: 'https://mcp.example.com/mcp', headers: { 'x-team': 'a' } },
      http: { type: 'http', url: 'http://127.0.0.1:1/mcp' },
      dashed: { type: 'streamable-http', url: 'http://127.0.0.1:2/mcp' },
      underscored: { type: 'streamable_http', url: 'http://127.0.0.1:3/mcp' },
      camel: { type: 'streamableHttp', url: 'http://127.0.0.1:4/mcp' },
      legacy: { type: 'sse', url: 'http://127.0.0.1:9000/sse' },
      greet: { builtin: 'greet' },
      pkg: { module: 'some-mcp-package', export: 'createServer' },
      plain: { module: '/opt/server.js' }
    }
  })
  t.same(config.servers, [
    { name: 'files', kind: 'stdio', command: 'npx', args: ['-y', 'server-filesystem', '/srv'], env: {} },
    { name: 'typed', kind: 'stdio', command: 'node', args: [], env: { DEBUG: '1' }, cwd: '/opt/server' },
    { name: 'remote', kind: 'http', url: 'https://mcp.example.com/mcp', headers: { 'x-team': 'a' } },
    { name: 'http', kind: 'http', url: 'http://127.0.0.1:1/mcp', headers: {} },
    { name: 'dashed', kind: 'http', url: 'http://127.0.0.1:2/mcp', headers: {} },
    { name: 'underscored', kind: 'http', url: 'http://127.0.0.1:3/mcp', headers: {} },
    { name: 'camel', kind: 'http', url: 'http://127.0.0.1:4/mcp', headers: {} },
    { name: 'legacy', kind: 'sse', url: 'http://127.0.0.1:9000/sse', headers: {} },
    { name: 'greet', kind: 'builtin', builtin: 'greet' },
    { name: 'pkg', kind: 'module', module: 'some-mcp-package', export: 'createServer' },
    { name: 'plain', kind: 'module', module: '/opt/server.js', export: 'default' }
  ])
  t.same(config.aggregate, { enabled: true, separator: '_' })
  t.same(config.warnings, [])
  t.equal(config.file, join(process.cwd(), 'gateway.json'))
})

t.test('the gateway fields of an entry', async t => {
  const { servers: [server] } = parse({
    mcpServers: {
      files: { command: 'npx', prefix: '/fs', stateless: true, timeoutMs: 5000, connectTimeoutMs: 30000, retry: { initialMs: 500, maxMs: 5000 }, disabled: false, isolation: 'session', tools: { allow: ['read_file'], deny: ['write_file'] } }
    },
    gateway: { aggregate: false, separator: '.' }
  })
  t.same(server, {
    name: 'files', kind: 'stdio', command: 'npx', args: [], env: {}, prefix: '/fs', stateless: true, timeoutMs: 5000, connectTimeoutMs: 30000, retry: { initialMs: 500, maxMs: 5000 }, disabled: false, isolation: 'session', tools: { allow: ['read_file'], deny: ['write_file'] }
  })
})

t.test('a Claude Desktop config parses as it is, its other fields warned about', async t => {
  const file = join(fixtures, 'claude-desktop.json')
  const config = await loadConfig(file, {})
  t.equal(config.file, file)
  t.same(config.servers.map(server => [server.name, server.kind]), [['filesystem', 'stdio'], ['github', 'stdio'], ['weather', 'stdio']])
  t.same(config.servers[1], {
    name: 'github', kind: 'stdio', command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'], env: { GITHUB_PERSONAL_ACCESS_TOKEN: '<YOUR_TOKEN>' }
  })
  t.same(config.warnings, [
    `${file}: mcpServers.weather.description is not used by the gateway and was ignored`,
    `${file}: globalShortcut is not used by the gateway and was ignored`
  ])
})

t.test('a VS Code mcp.json, with its servers key and ${env:VAR}', async t => {
  const file = join(fixtures, 'vscode-mcp.json')
  const config = await loadConfig(file, { HOME: '/home/ada' })
  t.same(config.servers, [
    { name: 'memory', kind: 'stdio', command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'], env: { MEMORY_FILE_PATH: '/home/ada/memory.json' } },
    { name: 'github', kind: 'http', url: 'https://api.githubcopilot.com/mcp/', headers: {} }
  ])
  t.same(config.warnings, [
    `${file}: servers.memory.envFile is not used by the gateway and was ignored: the variables in that file do not reach the server; give them in env`,
    `${file}: inputs is not used by the gateway and was ignored`
  ])
})

t.test('mcpServers and servers together are refused', async t => {
  t.same(problems(t, { mcpServers: { a: { builtin: 'greet' } }, servers: { b: { builtin: 'bye' } } }),
    ['gateway.json: mcpServers and servers are both given: keep one'])
})

t.test('a YAML file, read from disk', async t => {
  const file = join(fixtures, 'gateway.yaml')
  const config = await loadConfig(file, { REMOTE_TOKEN: 's3cret' }, ['greet', 'bye'])
  t.same(config.servers, [
    { name: 'files', kind: 'stdio', command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/srv/data'], env: {}, isolation: 'session' },
    { name: 'remote', kind: 'http', url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer s3cret' }, tools: { deny: ['delete_everything'] } },
    { name: 'legacy', kind: 'sse', url: 'http://127.0.0.1:9000/sse', headers: {}, timeoutMs: 5000 },
    { name: 'greet', kind: 'builtin', builtin: 'greet', prefix: '/hello' },
    { name: 'mine', kind: 'module', module: join(fixtures, 'my-server.js'), export: 'createServer', disabled: true }
  ])
  t.same(config.aggregate, { enabled: false, separator: '.' })
})

t.test('interpolation', async t => {
  t.test('fills ${VAR}, ${VAR:-default} and ${env:VAR} in every field that takes it', async t => {
    const env = { BIN: 'node', DIR: '/srv', TOKEN: 'abc', EMPTY: '', HOST: 'mcp.example.com' }
    const { servers } = parse({
      mcpServers: {
        local: { command: '${BIN}', args: ['${env:DIR}/data', '${MISSING:-fallback}', '${EMPTY:-used when empty}', '${EMPTY}'], env: { KEY: '${TOKEN}' }, cwd: '${DIR}' },
        remote: { url: 'https://${HOST}/mcp', headers: { Authorization: 'Bearer ${TOKEN}' } },
        mod: { module: '${DIR}/server.js' }
      }
    }, env)
    t.same(servers, [
      { name: 'local', kind: 'stdio', command: 'node', args: ['/srv/data', 'fallback', 'used when empty', ''], env: { KEY: 'abc' }, cwd: '/srv' },
      { name: 'remote', kind: 'http', url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer abc' } },
      { name: 'mod', kind: 'module', module: '/srv/server.js', export: 'default' }
    ])
  })

  t.test('leaves $$, a lone $ and $NAME alone', async t => {
    const { servers: [server] } = parse({ mcpServers: { s: { command: 'sh', args: ['-c', 'echo $HOME $$ costs $5 $'] } } }, { HOME: '/home/ada' })
    t.same((server as { args: string[] }).args, ['-c', 'echo $HOME $$ costs $5 $'])
  })

  t.test('an unset variable without a default names the field and the variable', async t => {
    t.same(problems(t, {
      mcpServers: {
        remote: { url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer ${REMOTE_TOKEN}' } },
        local: { command: 'node', args: ['--key', '${env:API_KEY}'] }
      }
    }), [
      'gateway.json: mcpServers.remote.headers.Authorization refers to ${REMOTE_TOKEN}, which is not set',
      'gateway.json: mcpServers.local.args[1] refers to ${env:API_KEY}, which is not set'
    ])
  })

  t.test('a reference the gateway cannot fill is an error, not passed on as text', async t => {
    t.same(problems(t, { servers: { s: { command: 'node', env: { KEY: '${input:api-key}' } } } }), [
      'gateway.json: servers.s.env.KEY has ${input:api-key}, which the gateway cannot fill in (use ${VAR}, ${VAR:-default} or ${env:VAR})'
    ])
  })
})

t.test('a relative module path or cwd is resolved against the config file\'s directory', async t => {
  const { servers } = parseConfig(JSON.stringify({
    mcpServers: {
      here: { module: './my-server.js' },
      up: { module: '../lib/server.js', export: 'build' },
      scoped: { module: '@acme/mcp-server' },
      tool: { command: 'python', args: ['server.py'], cwd: 'tools' }
    }
  }), '/etc/gateway/gateway.json', {})
  t.same(servers.map(server => server.kind === 'module' ? server.module : server.kind === 'stdio' ? server.cwd : undefined),
    ['/etc/gateway/my-server.js', '/etc/lib/server.js', '@acme/mcp-server', '/etc/gateway/tools'])
})

t.test('every problem in the file is reported together, one per line, each naming the file', async t => {
  t.same(problems(t, {
    mcpServers: {
      files: { command: 'npx', args: 5, env: { PORT: 3000 } },
      remote: { type: 'sse', command: 'node' },
      bad: { description: 'nothing to start' },
      'my server': { command: 'node', stateless: 'yes', timeoutMs: 0, connectTimeoutMs: 1.5, prefix: 'greet/', tools: { allow: 'add' }, retry: { initialMs: 5000, maxMs: 1000, jitter: true } },
      hello: { builtin: 'greet', connectTimeoutMs: 1000, retry: { maxMs: 1000 } }
    },
    gateway: { aggregate: 'yes', separator: '::::', seperator: '_' }
  }), [
    'gateway.json: mcpServers.files.args must be an array of strings (got number)',
    'gateway.json: mcpServers.files.env.PORT must be a string (got number)',
    'gateway.json: mcpServers.remote.type is "sse", which needs url, but the entry has command',
    'gateway.json: mcpServers.bad needs one of command (a stdio server), url (an http or sse server), builtin or module',
    'gateway.json: mcpServers.my server is not a valid server name: use 1 to 64 letters, digits, \'_\' or \'-\'',
    'gateway.json: mcpServers.my server.prefix must start with \'/\', not end with \'/\' and have no spaces (got "greet/")',
    'gateway.json: mcpServers.my server.timeoutMs must be a whole number of milliseconds, at least 1 (got 0)',
    'gateway.json: mcpServers.my server.connectTimeoutMs must be a whole number of milliseconds, at least 1 (got 1.5)',
    'gateway.json: mcpServers.my server.stateless must be true or false (got string)',
    'gateway.json: mcpServers.my server.tools.allow must be an array of strings (got string)',
    'gateway.json: mcpServers.my server.retry.jitter is not a known field (expected initialMs or maxMs)',
    'gateway.json: mcpServers.my server.retry.maxMs must be at least initialMs (5000) (got 1000)',
    'gateway.json: mcpServers.hello.connectTimeoutMs applies only to stdio, http and sse servers, not to builtin ones',
    'gateway.json: mcpServers.hello.retry applies only to stdio, http and sse servers, not to builtin ones',
    'gateway.json: gateway.seperator is not a known field; did you mean "separator"?',
    'gateway.json: gateway.separator must be 1 to 3 of the characters A-Z a-z 0-9 _ . - (got "::::")',
    'gateway.json: gateway.aggregate must be true or false (got string)'
  ])
})

t.test('what the entries must look like', async t => {
  t.same(problems(t, { mcpServers: { a: { command: 'node', url: 'http://127.0.0.1/mcp' } } }),
    ['gateway.json: mcpServers.a must have only one of command, url, builtin or module (has command and url)'])
  t.same(problems(t, { mcpServers: { a: { type: 'websocket', url: 'ws://127.0.0.1/mcp' } } }),
    ['gateway.json: mcpServers.a.type must be one of stdio, http, streamable-http, streamable_http, streamableHttp, sse (got "websocket")'])
  t.same(problems(t, { mcpServers: { a: { type: 'stdio', builtin: 'greet' } } }),
    ['gateway.json: mcpServers.a.type is "stdio", which needs command, but the entry has builtin'])
  t.same(problems(t, { mcpServers: { a: 'npx server' } }), ['gateway.json: mcpServers.a must be an object (got string)'])
  t.same(problems(t, { mcpServers: { a: { command: '' } } }), ['gateway.json: mcpServers.a.command must not be empty'])
  t.same(problems(t, { mcpServers: { a: { command: ['npx'] } } }), ['gateway.json: mcpServers.a.command must be a string (got array)'])
  t.same(problems(t, { mcpServers: {} }), ['gateway.json: mcpServers declares no servers'])
  t.same(problems(t, { mcpServers: [] }), ['gateway.json: mcpServers must be an object of servers by name (got array)'])
  t.same(problems(t, { gateway: {} }), ['gateway.json: mcpServers is missing: declare the servers under mcpServers (or VS Code\'s servers)'])
  t.same(problems(t, '[]'), ['gateway.json: the file must hold an object with mcpServers (got array)'])
  t.same(problems(t, { mcpServers: { a: { command: 'node', tools: { allow: ['x'], only: ['y'] } } } }),
    ['gateway.json: mcpServers.a.tools.only is not a known field (expected allow or deny)'])
})

t.test('fields other tools use are warnings, not errors', async t => {
  const config = parse({
    mcpServers: {
      cline: { command: 'node', autoApprove: ['read'], alwaysAllow: ['read'], transportType: 'stdio', timeout: 60 },
      remote: { url: 'https://mcp.example.com/mcp', env: { A: 'b' } }
    },
    $schema: 'https://example.com/schema.json'
  })
  t.same(config.servers.map(server => server.name), ['cline', 'remote'])
  t.same(config.warnings, [
    'gateway.json: mcpServers.cline.autoApprove is not used by the gateway and was ignored',
    'gateway.json: mcpServers.cline.alwaysAllow is not used by the gateway and was ignored',
    'gateway.json: mcpServers.cline.transportType is not used by the gateway and was ignored: an SSE server needs "type": "sse"',
    'gateway.json: mcpServers.cline.timeout is not used by the gateway and was ignored: the gateway\'s per-call timeout is timeoutMs, in milliseconds',
    'gateway.json: mcpServers.remote.env applies only to stdio servers and was ignored',
    'gateway.json: $schema is not used by the gateway and was ignored'
  ])
})

t.test('an unknown field anywhere is an error naming its path and the closest known name', async t => {
  t.same(problems(t, {
    mcpServers: {
      math: { builtin: 'math', timeoutMS: 5000 },
      files: { command: 'npx', stateles: true, ars: ['-y'], enviroment: {}, retry: { initalMs: 5 }, tools: { dney: [] } },
      remote: { url: 'https://mcp.example.com/mcp', hedaers: { a: 'b' }, Prefix: '/r', isolaton: 'session' },
      up: { url: 'https://up.example.com/mcp', enabled: true }
    },
    gateway: {
      agregate: false,
      auth: { mode: 'none', apikeys: [], jwt: { issuer: 'https://idp', jwksUri: 'https://idp/jwks', audiance: 'x' } },
      policy: [{ match: { apikey: 'x' }, alow: ['a/*'] }],
      rateLimit: { max: 5, timewindow: '1 minute', servers: { files: { mxa: 1, tools: { t: { max: 1, window: 5 } } } } },
      cors: { origin: ['*'] },
      tls: { cert: 'c', key: 'k', ca: 'x' },
      metrics: { port: 1, protected: true },
      tracing: { endpoint: 'http://x', service: 'gw' }
    },
    gatway: {}
  }), [
    'gateway.json: mcpServers.math.timeoutMS is not a known field; did you mean "timeoutMs"?',
    'gateway.json: mcpServers.files.stateles is not a known field; did you mean "stateless"?',
    'gateway.json: mcpServers.files.ars is not a known field; did you mean "args"?',
    'gateway.json: mcpServers.files.enviroment is not a known field; did you mean "env"?',
    'gateway.json: mcpServers.files.tools.dney is not a known field; did you mean "deny"?',
    'gateway.json: mcpServers.files.retry.initalMs is not a known field; did you mean "initialMs"?',
    'gateway.json: mcpServers.remote.hedaers is not a known field; did you mean "headers"?',
    'gateway.json: mcpServers.remote.Prefix is not a known field; did you mean "prefix"?',
    'gateway.json: mcpServers.remote.isolaton is not a known field; did you mean "isolation"?',
    // Nothing close: the fields an http entry may have.
    'gateway.json: mcpServers.up.enabled is not a known field (expected one of url, headers, type, prefix, stateless, scopes, required, timeoutMs, connectTimeoutMs, retry, disabled, tools, isolation, maxIsolated, isolatedIdleMs, namespace, rename)',
    'gateway.json: gateway.agregate is not a known field; did you mean "aggregate"?',
    'gateway.json: gateway.auth.apikeys is not a known field; did you mean "apiKeys"?',
    'gateway.json: gateway.auth.jwt.audiance is not a known field; did you mean "audience"?',
    'gateway.json: gateway.policy[0].alow is not a known field; did you mean "allow"?',
    'gateway.json: gateway.policy[0].match.apikey is not a known field; did you mean "apiKey"?',
    'gateway.json: gateway.rateLimit.timewindow is not a known field; did you mean "timeWindow"?',
    'gateway.json: gateway.rateLimit.servers.files.mxa is not a known field; did you mean "max"?',
    'gateway.json: gateway.rateLimit.servers.files.tools.t.window is not a known field (expected max or timeWindow)',
    'gateway.json: gateway.cors.origin is not a known field; did you mean "origins"?',
    'gateway.json: gateway.tls.ca is not a known field (expected cert or key)',
    'gateway.json: gateway.metrics.protected is not a known field; did you mean "protect"?',
    'gateway.json: gateway.tracing.service is not a known field (expected endpoint or serviceName)',
    'gateway.json: gatway is not a known field; did you mean "gateway"?'
  ])
})

t.test('an unknown top-level field is an error; a misspelt mcpServers is named instead of missing', async t => {
  t.same(problems(t, { mcpServer: { a: { builtin: 'greet' } } }), ['gateway.json: mcpServer is not a known field; did you mean "mcpServers"?'])
  t.same(problems(t, { mcp_servers: { a: { builtin: 'greet' } } }), ['gateway.json: mcp_servers is not a known field; did you mean "mcpServers"?'])
  t.same(problems(t, { server: { a: { builtin: 'greet' } } }), ['gateway.json: server is not a known field; did you mean "servers"?'])
  // A key that exists on every object is not mistaken for a known one.
  t.same(problems(t, { mcpServers: { a: { builtin: 'greet', constructor: 1 } }, theme: 'dark' }), [
    'gateway.json: mcpServers.a.constructor is not a known field (expected one of builtin, type, prefix, stateless, scopes, required, timeoutMs, connectTimeoutMs, retry, disabled, tools, isolation, maxIsolated, isolatedIdleMs, namespace, rename)',
    'gateway.json: theme is not a known field (expected one of mcpServers, servers, gateway)'
  ])
})

t.test('a misspelt command or url, or another client\'s name for url, is named rather than "needs one of"', async t => {
  t.same(problems(t, {
    mcpServers: {
      a: { comand: 'npx', args: ['-y', 'server'] },
      b: { ur: 'http://127.0.0.1:1/mcp' },
      c: { Command: 'node' },
      windsurf: { serverUrl: 'https://w.example.com/mcp' },
      gemini: { httpUrl: 'https://g.example.com/mcp' },
      none: { args: ['x'], enabled: true }
    }
  }), [
    'gateway.json: mcpServers.a.comand is not a known field; did you mean "command"?',
    'gateway.json: mcpServers.b.ur is not a known field; did you mean "url"?',
    'gateway.json: mcpServers.c.Command is not a known field; did you mean "command"?',
    'gateway.json: mcpServers.windsurf.serverUrl is Windsurf\'s name for url: rename it to url',
    'gateway.json: mcpServers.gemini.httpUrl is Gemini CLI\'s name for url: rename it to url',
    'gateway.json: mcpServers.none needs one of command (a stdio server), url (an http or sse server), builtin or module',
    'gateway.json: mcpServers.none.enabled is not a known field (expected one of command, url, builtin, module, args, env, cwd, headers, export, type, prefix, stateless, scopes, required, timeoutMs, connectTimeoutMs, retry, disabled, tools, isolation, maxIsolated, isolatedIdleMs, namespace, rename)'
  ])
  const { warnings } = parse({ mcpServers: { w: { url: 'https://w.example.com/mcp', serverUrl: 'https://w.example.com/mcp' } } })
  t.same(warnings, ['gateway.json: mcpServers.w.serverUrl is not used by the gateway and was ignored: the entry\'s url is used'])
})

t.test('other clients\' fields are warnings, saying what ignoring them changes', async t => {
  const config = parse({
    mcpServers: {
      cursor: { url: 'https://c.example.com/mcp', auth: { CLIENT_ID: 'x' } },
      vscode: { type: 'stdio', command: 'node', envFile: '${workspaceFolder}/.env', dev: { watch: 'src/**' }, sandboxEnabled: false, sandbox: {} },
      claude: { type: 'http', url: 'https://cc.example.com/mcp', headersHelper: '/bin/token', oauth: { clientId: 'x' } },
      roo: { command: 'node', alwaysAllow: [], watchPaths: ['dist'], disabled: true },
      gemini: { command: 'node', trust: true, description: 'the server', timeout: 30000 },
      continue: { command: 'node', name: 'My server' }
    },
    inputs: [],
    globalShortcut: 'Alt+Space'
  })
  t.same(config.servers.map(server => server.name), ['cursor', 'vscode', 'claude', 'roo', 'gemini', 'continue'])
  t.same(config.warnings, [
    'gateway.json: mcpServers.cursor.auth is not used by the gateway and was ignored: the gateway does not sign in to upstream servers with OAuth; give a token in headers',
    'gateway.json: mcpServers.vscode.envFile is not used by the gateway and was ignored: the variables in that file do not reach the server; give them in env',
    'gateway.json: mcpServers.vscode.dev is not used by the gateway and was ignored',
    'gateway.json: mcpServers.vscode.sandboxEnabled is not used by the gateway and was ignored',
    'gateway.json: mcpServers.vscode.sandbox is not used by the gateway and was ignored: the gateway does not confine the servers it starts',
    'gateway.json: mcpServers.claude.headersHelper is not used by the gateway and was ignored: the headers it makes are not sent; give them in headers',
    'gateway.json: mcpServers.claude.oauth is not used by the gateway and was ignored: the gateway does not sign in to upstream servers with OAuth; give a token in headers',
    'gateway.json: mcpServers.roo.alwaysAllow is not used by the gateway and was ignored',
    'gateway.json: mcpServers.roo.watchPaths is not used by the gateway and was ignored',
    'gateway.json: mcpServers.gemini.trust is not used by the gateway and was ignored',
    'gateway.json: mcpServers.gemini.description is not used by the gateway and was ignored',
    'gateway.json: mcpServers.gemini.timeout is not used by the gateway and was ignored: the gateway\'s per-call timeout is timeoutMs, in milliseconds',
    'gateway.json: mcpServers.continue.name is not used by the gateway and was ignored: the entry\'s key names the server',
    'gateway.json: inputs is not used by the gateway and was ignored',
    'gateway.json: globalShortcut is not used by the gateway and was ignored'
  ])
})

t.test('other clients\' fields whose loss would serve what the file hides, or unconfine a server, are refused', async t => {
  t.same(problems(t, {
    mcpServers: {
      mcpo: { command: 'uvx', args: ['mcp-server-time'], disabledTools: ['convert_time'] },
      gemini: { command: 'node', includeTools: ['read'], excludeTools: ['write'] },
      vscode: { command: 'node', sandboxEnabled: true }
    }
  }), [
    'gateway.json: mcpServers.mcpo.disabledTools lists tools to hide, which the gateway does not read, so it would serve them: list them in tools.deny instead',
    'gateway.json: mcpServers.gemini.includeTools lists the only tools to offer, which the gateway does not read, so it would serve every tool: list them in tools.allow instead',
    'gateway.json: mcpServers.gemini.excludeTools lists tools to hide, which the gateway does not read, so it would serve them: list them in tools.deny instead',
    'gateway.json: mcpServers.vscode.sandboxEnabled asks for the server to run confined, which the gateway cannot do: remove it to run the server unconfined'
  ])
})

t.test('namespace and rename: how /mcp names a server\'s tools', async t => {
  const { servers } = parse({
    mcpServers: {
      greet: { builtin: 'greet', namespace: 'hello', rename: { greet: 'say_hi' } },
      files: { command: 'node', namespace: false, rename: { read_file: 'read.file', write_file: 'fs-write' } },
      plain: { url: 'https://mcp.example.com/mcp' },
      // `__proto__` is a tool name like any other.
      odd: { module: '/opt/odd.js', rename: JSON.parse('{ "__proto__": "proto" }') as unknown }
    }
  })
  t.same(servers.map(({ name, namespace, rename }) => ({ name, namespace, rename })), [
    { name: 'greet', namespace: 'hello', rename: { greet: 'say_hi' } },
    { name: 'files', namespace: false, rename: { read_file: 'read.file', write_file: 'fs-write' } },
    { name: 'plain', namespace: undefined, rename: undefined },
    { name: 'odd', namespace: undefined, rename: JSON.parse('{ "__proto__": "proto" }') }
  ])
  t.notOk('namespace' in (servers[2] as object), 'absent when not given: the entry\'s name')
  t.same(Object.keys(servers[3]?.rename ?? {}), ['__proto__'])
})

t.test('bad namespace and rename values, and names that would collide in /mcp, are refused', async t => {
  t.same(problems(t, {
    mcpServers: {
      a: { builtin: 'greet', namespace: 'my ns' },
      b: { builtin: 'greet', prefix: '/b1', namespace: true },
      c: { builtin: 'greet', namespace: 'x'.repeat(65) },
      d: { builtin: 'greet', rename: ['greet', 'hi'] },
      e: { builtin: 'greet', rename: { greet: 5, bye: '', hi: 'say hi', long: 'x'.repeat(65), '': 'empty' } },
      f: { command: 'node', rename: { add: 'plus', sum: 'plus', total: 'plus' } }
    }
  }), [
    'gateway.json: mcpServers.a.namespace must be false or 1 to 64 letters, digits, \'_\' or \'-\' (got "my ns")',
    'gateway.json: mcpServers.b.namespace must be false or 1 to 64 letters, digits, \'_\' or \'-\' (got true)',
    `gateway.json: mcpServers.c.namespace must be false or 1 to 64 letters, digits, '_' or '-' (got "${'x'.repeat(65)}")`,
    'gateway.json: mcpServers.d.rename must be an object of upstream tool names to the names /mcp shows (got array)',
    'gateway.json: mcpServers.e.rename.greet must be a string (got number)',
    'gateway.json: mcpServers.e.rename.bye must be a tool name: 1 to 64 of the characters A-Z a-z 0-9 _ . - (got "")',
    'gateway.json: mcpServers.e.rename.hi must be a tool name: 1 to 64 of the characters A-Z a-z 0-9 _ . - (got "say hi")',
    `gateway.json: mcpServers.e.rename.long must be a tool name: 1 to 64 of the characters A-Z a-z 0-9 _ . - (got "${'x'.repeat(65)}")`,
    'gateway.json: mcpServers.e.rename has an empty key: name the upstream tool to rename',
    'gateway.json: mcpServers.f.rename.add and mcpServers.f.rename.sum both rename to "plus": give each tool its own name',
    'gateway.json: mcpServers.f.rename.add and mcpServers.f.rename.total both rename to "plus": give each tool its own name'
  ])
  t.same(problems(t, {
    mcpServers: {
      math: { builtin: 'math' },
      calc: { builtin: 'math', namespace: 'math' },
      one: { builtin: 'greet', namespace: 'tools' },
      two: { builtin: 'bye', namespace: 'tools' }
    }
  }), [
    'gateway.json: mcpServers.math and mcpServers.calc.namespace both give the namespace "math" in /mcp: give one a different namespace',
    'gateway.json: mcpServers.one.namespace and mcpServers.two.namespace both give the namespace "tools" in /mcp: give one a different namespace'
  ])
  // A disabled server is not in /mcp, and servers without a namespace are the aggregate's to check by tool name.
  const { servers } = parse({
    mcpServers: {
      math: { builtin: 'math' },
      calc: { builtin: 'math', namespace: 'math', disabled: true },
      raw: { builtin: 'greet', namespace: false },
      raw2: { builtin: 'bye', namespace: false }
    }
  })
  t.same(servers.map(server => server.name), ['math', 'calc', 'raw', 'raw2'])
})

t.test('two servers mounted at one prefix', async t => {
  t.same(problems(t, { mcpServers: { a: { builtin: 'greet', prefix: '/t' }, b: { builtin: 'bye', prefix: '/t' } } }),
    ['gateway.json: mcpServers.a and mcpServers.b are both mounted at /t: give one a different prefix'])
  t.same(problems(t, { mcpServers: { math: { builtin: 'math' }, calc: { builtin: 'math', prefix: '/math' } } }),
    ['gateway.json: mcpServers.math and mcpServers.calc are both mounted at /math: give one a different prefix'])
  // One disabled is not mounted: swapping which of two is enabled must not need a prefix edit.
  const { servers } = parse({ mcpServers: { local: { command: 'node', prefix: '/files' }, hosted: { url: 'https://files.example.com/mcp', prefix: '/files', disabled: true } } })
  t.same(servers.map(server => [server.name, server.disabled ?? false]), [['local', false], ['hosted', true]])
})

t.test('a url must be http: or https:, checked after interpolation', async t => {
  t.same(problems(t, {
    mcpServers: {
      ftp: { url: 'ftp://files.example.com/mcp' },
      words: { type: 'sse', url: 'not a url' },
      filled: { url: '${BASE}/mcp' },
      unset: { url: '${NOPE}/mcp' }
    }
  }, { BASE: 'localhost:3000' }), [
    'gateway.json: mcpServers.ftp.url must be an http: or https: URL (got "ftp://files.example.com/mcp")',
    'gateway.json: mcpServers.words.url must be an http: or https: URL (got "not a url")',
    'gateway.json: mcpServers.filled.url must be an http: or https: URL (got "${BASE}/mcp")',
    // One problem, not also a bad URL made of the unfilled reference.
    'gateway.json: mcpServers.unset.url refers to ${NOPE}, which is not set'
  ])
})

t.test('isolation applies to upstream servers only', async t => {
  t.same(problems(t, { mcpServers: { greet: { builtin: 'greet', isolation: 'session' }, mine: { module: './m.js', isolation: 'shared' }, up: { command: 'node', isolation: 'per-user' } } }), [
    'gateway.json: mcpServers.greet.isolation applies only to stdio, http and sse servers, not to builtin ones',
    'gateway.json: mcpServers.mine.isolation applies only to stdio, http and sse servers, not to module ones',
    'gateway.json: mcpServers.up.isolation must be "shared" or "session" (got "per-user")'
  ])
})

t.test('a builtin must be one of the built-in servers, when they are given', async t => {
  t.same(problems(t, { mcpServers: { x: { builtin: 'nope' } } }, {}, ['greet', 'bye', 'math']),
    ['gateway.json: mcpServers.x.builtin is "nope", which is not a built-in server (expected one of greet, bye, math)'])
  t.equal(parse({ mcpServers: { x: { builtin: 'nope' } } }).servers[0].kind, 'builtin')
})

t.test('invalid JSON or YAML names the file and where the parser stopped', async t => {
  const [line, ...more] = problems(t, '{\n  "mcpServers": {\n    "a": { "builtin": "greet" },\n  }\n}')
  t.match(line, /^gateway\.json: invalid JSON: .+ \(line 4 column 3\)$/)
  t.same(more, [])
  const file = join(fixtures, 'broken.yaml')
  await t.rejects(loadConfig(file, {}), {
    code: 'GW_ERR_CONFIG',
    message: `${file}: invalid YAML: All mapping items must start at the same column at line 4, column 1`
  })
})

t.test('a missing file is named in the error', async t => {
  const file = join(t.testdirName, 'nope.json')
  await t.rejects(loadConfig(file), { code: 'GW_ERR_CONFIG', message: `Cannot read config file ${file}: ENOENT: no such file or directory, open '${file}'` })
})

t.test('any other extension is read as JSON, with or without a byte order mark', async t => {
  const dir = t.testdir({})
  const file = join(dir, 'gateway.conf')
  await writeFile(file, '\uFEFF{ "mcpServers": { "greet": { "builtin": "greet" } } }')
  t.same((await loadConfig(file)).servers, [{ name: 'greet', kind: 'builtin', builtin: 'greet' }])
})

t.test('a prefix the gateway serves itself, and a tool filter on an in-process server, are refused', async t => {
  const err = t.throws(() => parseConfig(JSON.stringify({
    mcpServers: {
      docs: { command: 'node' },
      other: { url: 'http://127.0.0.1:1/mcp', prefix: '/ready' },
      greet: { builtin: 'greet', tools: { deny: ['greet'] } }
    }
  }), 'g.json')) as Error & { code: string }
  t.equal(err.code, 'GW_ERR_CONFIG')
  t.match(err.message, "g.json: mcpServers.docs would be mounted at /docs, which the gateway serves itself")
  t.match(err.message, "g.json: mcpServers.other would be mounted at /ready")
  t.match(err.message, 'g.json: mcpServers.greet.tools applies only to stdio, http and sse servers, not to builtin ones')
})

t.test('the security settings: API keys kept as SHA-256, JWT, policy, rate limits, CORS, TLS, scopes', async t => {
  const digest = 'a'.repeat(64)
  const config = parse({
    mcpServers: { math: { builtin: 'math', scopes: ['math'] } },
    gateway: {
      publicUrl: 'https://mcp.example.com',
      auth: {
        apiKeys: [{ id: 'ci-bot', key: '${CI_BOT_KEY}', scopes: ['math'] }, { id: 'ops', key: `sha256:${digest.toUpperCase()}` }],
        jwt: { issuer: 'https://idp.example.com/', jwksUri: 'https://idp.example.com/jwks', audience: 'https://mcp.example.com' }
      },
      policy: [{ match: { apiKey: 'ci-bot' }, allow: ['math/*'] }, { match: { claim: { groups: 'readers' } }, allow: ['files/read_*'], deny: ['files/write_*'] }],
      rateLimit: { max: 600, timeWindow: '1 minute', servers: { files: { max: 60, tools: { write_file: { max: 5, timeWindow: '10 seconds' } } } } },
      cors: { origins: ['https://app.example.com'] },
      tls: { cert: './cert.pem', key: '/etc/tls/key.pem' }
    }
  }, { CI_BOT_KEY: 'k'.repeat(32) })
  const security = config.security
  t.equal(security.publicUrl, 'https://mcp.example.com')
  t.same(security.auth?.apiKeys, [
    { id: 'ci-bot', sha256: createHash('sha256').update('k'.repeat(32)).digest('hex'), scopes: ['math'] },
    { id: 'ops', sha256: digest, scopes: [] }
  ], 'keys are kept as their digests, never in plain text')
  t.notMatch(JSON.stringify(config), /kkkkkkkk/)
  t.match(security.auth, { mode: 'required', jwt: { issuer: 'https://idp.example.com/', audience: ['https://mcp.example.com'], clockToleranceSec: 30 }, authorizationServers: ['https://idp.example.com/'] })
  t.notOk(security.auth?.jwt?.algorithms.some(algorithm => algorithm.startsWith('HS') || algorithm === 'none'))
  t.same(security.policy, [
    { match: { apiKey: 'ci-bot' }, allow: ['math/*'], deny: [] },
    { match: { claim: { groups: 'readers' } }, allow: ['files/read_*'], deny: ['files/write_*'] }
  ])
  t.same(security.rateLimit, { max: 600, timeWindow: 60_000, servers: { files: { max: 60, tools: { write_file: { max: 5, timeWindow: 10_000 } } } } })
  t.same(security.cors, { origins: ['https://app.example.com'] })
  t.same(security.tls, { cert: join(process.cwd(), 'cert.pem'), key: '/etc/tls/key.pem' })
  t.same(config.servers[0]?.scopes, ['math'])
  t.same(parse({ mcpServers: { math: { builtin: 'math' } } }).security, {}, 'no gateway section: nothing on')
})

t.test('bad security settings are each reported, naming the field', async t => {
  t.same(problems(t, {
    mcpServers: { math: { builtin: 'math' } },
    gateway: {
      publicUrl: 'https://mcp.example.com/path',
      auth: {
        apiKeys: [{ id: 'short', key: 'abc' }, { key: 'sha256:xyz' }],
        jwt: { issuer: 'https://idp', jwksUri: 'ftp://idp/jwks', algorithms: ['HS256', 'none'] }
      },
      rateLimit: { max: 0, timeWindow: 'a while' },
      cors: { origins: ['app.example.com'] },
      gatway: true
    }
  }), [
    'gateway.json: gateway.gatway is not a known field (expected one of aggregate, separator, publicUrl, auth, policy, rateLimit, cors, tls, metrics, tracing, statusPage, redis)',
    'gateway.json: gateway.publicUrl must be an origin such as https://mcp.example.com, with no path (got "https://mcp.example.com/path")',
    'gateway.json: gateway.auth.apiKeys[0].key is too short to be a secret (3 characters; use at least 16)',
    'gateway.json: gateway.auth.apiKeys[1].id is required: it names the caller in logs and policies',
    'gateway.json: gateway.auth.apiKeys[1].key must be sha256: followed by 64 hex digits',
    'gateway.json: gateway.auth.jwt.jwksUri must be an http(s) URL (got "ftp://idp/jwks")',
    'gateway.json: gateway.auth.jwt.algorithms names "HS256": only asymmetric algorithms are accepted (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)',
    'gateway.json: gateway.auth.jwt.algorithms names "none": only asymmetric algorithms are accepted (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)',
    'gateway.json: gateway.rateLimit.max must be a whole number above 0 (got 0)',
    'gateway.json: gateway.rateLimit.timeWindow must be milliseconds or a duration such as "1 minute" (got "a while")',
    'gateway.json: gateway.cors.origins names "app.example.com": an origin is scheme://host[:port], with no path, or *'
  ])
  t.same(problems(t, { mcpServers: { math: { builtin: 'math' } }, gateway: { auth: {} } }), [
    'gateway.json: gateway.auth gives no apiKeys and no jwt: callers could not authenticate (say "mode": "none" to run without authentication)'
  ])
  const plain = parse({ mcpServers: { math: { builtin: 'math' } }, gateway: { auth: { apiKeys: [{ id: 'x', key: 'a-key-written-in-the-file' }] } } })
  t.match(plain.warnings, [/gateway\.auth\.apiKeys\[0\]\.key holds a key in plain text/], 'a key in plain text works, with a warning')
  t.same(parse({ mcpServers: { math: { builtin: 'math' } }, gateway: { auth: { mode: 'none' } } }).security.auth?.mode, 'none')
})

t.test('the observability settings: metrics, tracing, the status page', async t => {
  const config = parse({
    mcpServers: { math: { builtin: 'math' } },
    gateway: { metrics: { port: 9464, protect: true }, tracing: { endpoint: '${OTLP:-http://127.0.0.1:4318/v1/traces}', serviceName: 'gw' }, statusPage: false }
  })
  t.same(config.observability, { metrics: { port: 9464, protect: true }, tracing: { endpoint: 'http://127.0.0.1:4318/v1/traces', serviceName: 'gw' }, statusPage: false })
  t.same(parse({ mcpServers: { math: { builtin: 'math' } } }).observability, {})
  t.same(problems(t, { mcpServers: { math: { builtin: 'math' } }, gateway: { metrics: { port: 'x', enabled: 1 }, tracing: { endpoint: 'collector:4318' } } }), [
    'gateway.json: gateway.metrics.port must be a port number (got "x")',
    'gateway.json: gateway.tracing.endpoint must be an http(s) URL of an OTLP/HTTP traces endpoint (got "collector:4318")',
    'gateway.json: gateway.metrics.enabled must be true or false (got number)'
  ])
})

t.test('gateway.redis: a URL or an object; defaults, ${VAR} in the URL and the key, the key from MCP_GATEWAY_STATE_KEY', async t => {
  const key = 'k'.repeat(32)
  const servers = { mcpServers: { greet: { builtin: 'greet' } } }
  t.same(parse({ ...servers, gateway: { redis: '${REDIS_URL}' } }, { REDIS_URL: 'redis://cache:6379/1', MCP_GATEWAY_STATE_KEY: key }).redis,
    { url: 'redis://cache:6379/1', prefix: 'mcp-gateway:', requestStateKey: key })
  const config = parse({ ...servers, gateway: { redis: { url: 'rediss://:${REDIS_PASSWORD}@cache:6380', prefix: 'team-a:', requestStateKey: '${STATE_KEY}' } } }, { REDIS_PASSWORD: 'pw', STATE_KEY: key })
  t.same(config.redis, { url: 'rediss://:pw@cache:6380', prefix: 'team-a:', requestStateKey: key })
  t.same(config.warnings, [])
  t.notOk('redis' in parse(servers), 'absent: no redis, each instance on its own')
  const plain = parse({ ...servers, gateway: { redis: { url: 'redis://cache', requestStateKey: key } } })
  t.equal(plain.redis?.requestStateKey, key)
  t.match(plain.warnings, [/gateway\.redis\.requestStateKey holds a key in plain text; use "\$\{ENV_VAR\}"/])
})

t.test('gateway.redis: each mistake is reported, with the known field a misspelt one is closest to', async t => {
  const servers = { mcpServers: { greet: { builtin: 'greet' } } }
  const env = { MCP_GATEWAY_STATE_KEY: 'k'.repeat(32) }
  t.same(problems(t, { ...servers, gateway: { redis: { url: 'redis://cache', prefx: 'a:' } } }, env),
    ['gateway.json: gateway.redis.prefx is not a known field; did you mean "prefix"?'])
  t.same(problems(t, { ...servers, gateway: { redis: 'http://cache:6379' } }, env),
    ['gateway.json: gateway.redis must be a redis:// or rediss:// URL (got a http: URL)'])
  t.same(problems(t, { ...servers, gateway: { redis: { prefix: 'a:' } } }, env),
    ['gateway.json: gateway.redis.url needs the URL of the Redis, such as "redis://localhost:6379" or "${REDIS_URL}"'])
  t.same(problems(t, { ...servers, gateway: { redis: 6379 } }, env),
    ['gateway.json: gateway.redis must be a redis:// URL or an object with url (got number)'])
  t.same(problems(t, { ...servers, gateway: { redis: { url: 'redis://cache', prefix: 'a b' } } }, env),
    ['gateway.json: gateway.redis.prefix must be 1 to 100 characters and no spaces (got "a b")'])
  t.match(problems(t, { ...servers, gateway: { redis: 'redis://cache' } }),
    [/^gateway\.json: gateway\.redis\.requestStateKey is required with Redis: a secret of at least 32 characters, the same on every instance .*set MCP_GATEWAY_STATE_KEY/])
  t.same(problems(t, { ...servers, gateway: { redis: { url: 'redis://cache', requestStateKey: '${SHORT}' } } }, { SHORT: 'short' }),
    ['gateway.json: gateway.redis.requestStateKey is too short to be a secret (5 characters; use at least 32)'])
  t.same(problems(t, { ...servers, gateway: { redis: { url: 'redis://cache', requestStateKey: '${UNSET}' } } }),
    ['gateway.json: gateway.redis.requestStateKey refers to ${UNSET}, which is not set'], 'an unset variable is reported once')
  t.same(problems(t, { ...servers, gateway: { redis: '${REDIS_URL}' } }, env),
    ['gateway.json: gateway.redis refers to ${REDIS_URL}, which is not set'])
  t.same(problems(t, { ...servers, gateway: { rediss: 'redis://cache' } }, env),
    ['gateway.json: gateway.rediss is not a known field; did you mean "redis"?'])
})

t.test('redisOverride: a flag\'s or variable\'s URL over gateway.redis keeps its prefix and key; alone it needs the key from the environment', async t => {
  const key = 'k'.repeat(32)
  t.same(redisOverride('redis://other:6379', { url: 'redis://cache', prefix: 'team-a:', requestStateKey: key }, '--redis', {}),
    { url: 'redis://other:6379', prefix: 'team-a:', requestStateKey: key })
  t.same(redisOverride('redis://other:6379', undefined, 'REDIS_URL', { MCP_GATEWAY_STATE_KEY: key }),
    { url: 'redis://other:6379', prefix: 'mcp-gateway:', requestStateKey: key })
  t.throws(() => redisOverride('redis://other:6379', undefined, '--redis', {}), { code: 'GW_ERR_CONFIG', message: /^--redis: the request-state key \(MCP_GATEWAY_STATE_KEY\) is required with Redis/ })
  t.throws(() => redisOverride('localhost:6379', undefined, 'REDIS_URL', { MCP_GATEWAY_STATE_KEY: key }), { code: 'GW_ERR_CONFIG', message: 'REDIS_URL must be a redis:// or rediss:// URL (got a localhost: URL)' })
})
