/**
 * The gateway of bench/targets/gateway.ts with authentication and a policy on: every call
 * carries an RS256 JWT, verified against a JWKS, and passes a policy rule, so the bench
 * measures what they cost against the same gateway without them.
 *
 * The issuer is this process: it makes a key pair with `jose`, serves the public key as a JWKS
 * on 127.0.0.1 (node:http), and signs one token with the right `iss` and `aud`, which it
 * prints as `bearer <token>` before `port <n>`; bench/run.ts sends it as
 * `Authorization: Bearer`. The token outlives any run (the runner caps a run's time).
 */
import { createServer } from 'node:http'
import { once } from 'node:events'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { startGatewayTarget } from './gateway-target.js'

const AUDIENCE = 'bench-gateway'
const KEY_ID = 'bench'

const { publicKey, privateKey } = await generateKeyPair('RS256')
const jwks = JSON.stringify({ keys: [{ ...await exportJWK(publicKey), kid: KEY_ID, alg: 'RS256', use: 'sig' }] })
const issuerServer = createServer((request, response) => {
  if (request.url !== '/jwks.json') {
    response.writeHead(404).end()
    return
  }
  response.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
})
issuerServer.listen(0, '127.0.0.1')
await once(issuerServer, 'listening')
const issuerAddress = issuerServer.address()
const issuer = `http://127.0.0.1:${typeof issuerAddress === 'object' && issuerAddress !== null ? issuerAddress.port : 0}`

const token = await new SignJWT({ scope: 'mcp' })
  .setProtectedHeader({ alg: 'RS256', kid: KEY_ID, typ: 'JWT' })
  .setIssuer(issuer)
  .setAudience(AUDIENCE)
  .setSubject('bench')
  .setIssuedAt()
  .setExpirationTime('12h')
  .sign(privateKey)

// Printed before the port line, which the target prints once it listens.
process.stdout.write(`bearer ${token}\n`)
await startGatewayTarget({
  security: {
    auth: {
      mode: 'required',
      apiKeys: [],
      jwt: { issuer, jwksUri: `${issuer}/jwks.json`, audience: [AUDIENCE], algorithms: ['RS256'], clockToleranceSec: 30 },
      protectDocs: false,
      authorizationServers: [issuer],
      forwardIdentity: {}
    },
    policy: [{ match: {}, allow: ['*'], deny: [] }]
  }
}, undefined, () => { issuerServer.close() })
