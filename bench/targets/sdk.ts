/**
 * The SDK's own stateless server, as its docs wire it on plain `node:http`: one handler from
 * `createMcpHandler`, a fresh server per request, 2026-07-28 requests plus stateless 2025-era
 * ones (its default `legacy: 'stateless'`). The Host and Origin guards are the ones the node
 * package tells plain `node:http` users to put in front; the gateway checks the same.
 */
import { createServer } from 'node:http'
import { createMcpHandler } from '@modelcontextprotocol/server'
import { localhostHostValidation, localhostOriginValidation, toNodeHandler } from '@modelcontextprotocol/node'
import { createGreetServer } from '../../servers/greet/index.js'
import { portFromArgs, serve } from './lifecycle.js'

const handler = toNodeHandler(createMcpHandler(() => createGreetServer()))
const validateHost = localhostHostValidation()
const validateOrigin = localhostOriginValidation()

const server = createServer((req, res) => {
  if (req.url !== '/mcp') {
    res.writeHead(404).end()
    return
  }
  if (!validateHost(req, res) || !validateOrigin(req, res)) return
  void handler(req, res)
})

server.listen(portFromArgs(), '127.0.0.1', () => {
  const address = server.address()
  serve(typeof address === 'object' && address !== null ? address.port : 0, async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  })
})
