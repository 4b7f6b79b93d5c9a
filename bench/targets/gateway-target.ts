/**
 * What every gateway target shares: the command's server options and garbage-collection
 * setting, the two `greet` mounts the runner loads (`greet` with 2025-era sessions answered
 * as JSON, `greet-stateless` answering each 2025-era request on its own), listening on the
 * runner's port on 127.0.0.1. Each target adds what it measures (a log level, metrics off,
 * authentication).
 */
import Fastify, { type FastifyServerOptions } from 'fastify'
import gateway, { type GatewayOptions } from '../../src/app.js'
import { limitConnections, serverOptions, tuneGarbageCollection } from '../../src/http/server-options.js'
import { createGreetServer } from '../../servers/greet/index.js'
import { portFromArgs, serve } from './lifecycle.js'

export async function startGatewayTarget (options: Omit<GatewayOptions, 'servers'> = {}, fastify: FastifyServerOptions = { logger: { level: 'warn' } }, close?: () => void): Promise<void> {
  // As the command does before it builds the gateway.
  tuneGarbageCollection()
  const app = Fastify({ ...serverOptions(), ...fastify })
  limitConnections(app.server)
  await app.register(gateway, {
    ...options,
    servers: [
      { name: 'greet', factory: createGreetServer, jsonResponse: true },
      { name: 'greet-stateless', factory: createGreetServer, stateless: true }
    ]
  })
  await app.listen({ port: portFromArgs(), host: '127.0.0.1' })
  const address = app.server.address()
  serve(typeof address === 'object' && address !== null ? address.port : 0, async () => {
    await app.close()
    close?.()
  })
}
