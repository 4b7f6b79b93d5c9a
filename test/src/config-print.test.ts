import t from 'tap'
import { parseConfig, type GatewayConfig } from '../../src/config.js'
import { MASK, maskUrl, printableConfig } from '../../src/config-print.js'

const SECRET = 'ghp_4fJ9sQ2mX7vB1nK8wZ3e'
const env = { SECRET, KEY: 'an-api-key-long-enough-1234' }

function parse (config: unknown): GatewayConfig {
  return parseConfig(JSON.stringify(config), '/etc/gateway/gateway.json', env)
}

t.test('a stdio entry shows its command and the names of its variables, never their values', async t => {
  const config = parse({ mcpServers: { github: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'], env: { GITHUB_TOKEN: '${SECRET}', DEBUG: '1', EMPTY: '' } } } })
  const printed = printableConfig(config)
  t.same(printed.servers[0], { name: 'github', kind: 'stdio', command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'], env: { GITHUB_TOKEN: MASK, DEBUG: MASK, EMPTY: '' } })
  t.notMatch(JSON.stringify(printed), SECRET)
})

t.test('a remote entry keeps its header names and auth scheme, and its URL without credentials', async t => {
  const config = parse({
    mcpServers: {
      remote: { url: 'https://user:${SECRET}@mcp.example.com/mcp?api_key=${SECRET}&team=a', headers: { Authorization: 'Bearer ${SECRET}', 'x-api-key': '${SECRET}', 'x-team': 'a' } },
      plain: { type: 'sse', url: 'http://127.0.0.1:9000/sse' }
    }
  })
  const [remote, plain] = printableConfig(config).servers
  t.match(remote, { url: `https://${MASK}:${MASK}@mcp.example.com/mcp?api_key=${MASK}&team=a`, headers: { Authorization: `Bearer ${MASK}`, 'x-api-key': MASK, 'x-team': MASK } })
  t.match(plain, { url: 'http://127.0.0.1:9000/sse' }, 'a URL with nothing secret is shown as written')
  t.notMatch(JSON.stringify(printableConfig(config)), SECRET)
})

t.test('URLs lose credentials, fragments and secret-looking query values, and keep the rest', async t => {
  t.equal(maskUrl('https://mcp.example.com'), 'https://mcp.example.com', 'no trailing slash added')
  t.equal(maskUrl('https://h.example/sse?token=abc&v=2'), `https://h.example/sse?token=${MASK}&v=2`)
  t.equal(maskUrl(`https://h.example/sse?id=${SECRET}`), `https://h.example/sse?id=${MASK}`, 'a value shaped like a generated key')
  t.equal(maskUrl('https://h.example/cb#access_token=abc'), `https://h.example/cb#${MASK}`)
  t.equal(maskUrl('https://alice@h.example/'), `https://${MASK}@h.example/`)
  t.equal(maskUrl('not a url'), 'not a url')
})

t.test('a child\'s arguments lose the values of secret flags, and keep paths and package names', async t => {
  const config = parse({ mcpServers: { s: { command: 'server', args: ['--token', '${SECRET}', '--api-key=${SECRET}', 'PASSWORD=hunter2hunter2', '--root', '/srv/data', 'postgres://app:${SECRET}@db/app', SECRET] } } })
  t.same(printableConfig(config).servers[0], {
    name: 's',
    kind: 'stdio',
    command: 'server',
    args: ['--token', MASK, `--api-key=${MASK}`, `PASSWORD=${MASK}`, '--root', '/srv/data', `postgres://${MASK}:${MASK}@db/app`, MASK],
    env: {}
  })
})

t.test('API keys keep their id and scopes, not their hash; TLS files and policy ids stay', async t => {
  const config = parse({
    mcpServers: { greet: { builtin: 'greet' } },
    gateway: {
      auth: { apiKeys: [{ id: 'ci', key: '${KEY}', scopes: ['tools'] }] },
      policy: [{ match: { apiKey: 'ci' }, allow: ['greet/*'] }],
      tls: { cert: '/etc/tls/cert.pem', key: '/etc/tls/key.pem' },
      tracing: { endpoint: 'https://otel.example.com/v1/traces?auth=${SECRET}' }
    }
  })
  const printed = printableConfig(config)
  t.same(printed.security.auth?.apiKeys, [{ id: 'ci', sha256: MASK, scopes: ['tools'] }])
  t.same(printed.security.policy?.[0]?.match, { apiKey: 'ci' })
  t.same(printed.security.tls, { cert: '/etc/tls/cert.pem', key: '/etc/tls/key.pem' })
  t.equal(printed.observability.tracing?.endpoint, `https://otel.example.com/v1/traces?auth=${MASK}`)
  t.notMatch(JSON.stringify(printed), config.security.auth?.apiKeys[0]?.sha256 as string)
})

t.test('a field named for a secret is masked wherever it is, so settings added later are covered', async t => {
  const config = parse({ mcpServers: { greet: { builtin: 'greet' } }, gateway: { auth: { jwt: { issuer: 'https://id.example.com', jwksUri: 'https://id.example.com/jwks' } } } })
  const withSecret = { ...config, security: { ...config.security, auth: { ...config.security.auth, jwt: { ...config.security.auth?.jwt, secret: SECRET, clientSecret: SECRET } } } } as GatewayConfig
  const printed = printableConfig(withSecret)
  t.match(printed.security.auth?.jwt, { issuer: 'https://id.example.com', jwksUri: 'https://id.example.com/jwks', secret: MASK, clientSecret: MASK })
})

t.test('the rest is the config as parsed, without the warnings', async t => {
  // autoApprove belongs to other clients' files: a warning, not an error.
  const config = parse({ mcpServers: { greet: { builtin: 'greet', prefix: '/hello' }, old: { builtin: 'bye', disabled: true }, up: { command: 'node', autoApprove: [] } }, gateway: { separator: '.' } })
  t.ok(config.warnings.length > 0)
  const { warnings: _warnings, ...rest } = config
  t.same(printableConfig(config), rest)
  t.same(config.warnings.length, 1, 'the config itself is not changed')
})
