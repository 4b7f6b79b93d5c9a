import Fastify, { type FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import gateway, { type GatewayOptions } from '../src/app.js'

/** A gateway as the command builds it, minus logging and listening; closed when the test ends. */
export async function build (t: Test, options: GatewayOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(gateway, options)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

/** The same, listening on an ephemeral loopback port, for real HTTP clients. */
export async function listen (t: Test, options: GatewayOptions = {}): Promise<{ app: FastifyInstance, base: string }> {
  const app = await build(t, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('expected a TCP address')
  return { app, base: `http://127.0.0.1:${address.port}` }
}

export const json = { 'content-type': 'application/json' }

/** Whether a process is still running (signal 0 checks without sending anything). */
export function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
