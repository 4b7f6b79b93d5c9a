// The package's public face: the plugins and types a user needs to mount MCP servers into
// their own Fastify application.
export { default as gateway, builtinEntries, type GatewayOptions, type ServerEntry } from './app.js'
export { default as corePlugin, type CorePluginOptions } from '../plugins/core.js'
export { default as mcpServer, type McpServerPluginOptions } from '../plugins/mcp-server.js'
export type { McpConnection, ServerFactory, ServerState, CallOptions } from './connections/connection.js'
export { InProcessConnection } from './connections/in-process.js'
export { ServerRegistry, type MountedServer } from './connections/registry.js'
export { CallPipeline, type CallFilter, type CallContext, type CallOutcome, type Outcome, type WayIn } from './pipeline/pipeline.js'
export { builtinServers } from '../servers/index.js'
export * as errors from './errors.js'
