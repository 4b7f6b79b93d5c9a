import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import core from '../plugins/core.js'
import mcpServer, { type McpServerPluginOptions } from '../plugins/mcp-server.js'
import { builtinServers } from '../servers/index.js'
import type { ServerFactory } from './connection.js'

/** One mounted server: the mount plugin's options, its prefix defaulting to `/<name>`. */
export type ServerEntry = McpServerPluginOptions & { prefix?: string }

export interface GatewayOptions {
  /** Servers to mount. Default: the built-in servers (greet, bye, math). */
  servers?: ServerEntry[]
  /** Applied to every server that does not set its own: see the mount plugin's options. */
  defaults?: Omit<McpServerPluginOptions, 'name' | 'factory' | 'connection'>
  /** Title of the OpenAPI document. */
  title?: string
}

/** The built-in servers as entries, so callers can tweak one and keep the rest. */
export function builtinEntries (factories: Record<string, ServerFactory> = builtinServers): ServerEntry[] {
  return Object.entries(factories).map(([name, factory]) => ({ name, factory }))
}

/**
 * The whole gateway as one plugin: the core plugin, then each server under its prefix.
 * It never listens; `src/server.ts` does.
 */
async function gateway (app: FastifyInstance, options: GatewayOptions): Promise<void> {
  await app.register(core, { ...(options.title !== undefined && { title: options.title }) })
  for (const entry of options.servers ?? builtinEntries()) {
    const { prefix, ...serverOptions } = entry
    await app.register(mcpServer, { ...options.defaults, ...serverOptions, prefix: prefix ?? `/${entry.name}` })
  }
}

export default fp(gateway, { name: 'gateway', fastify: '5.x' })
