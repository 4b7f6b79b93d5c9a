// The package's public face: the plugins and types a user needs to mount MCP servers into
// their own Fastify application.
export { default as gateway, builtinEntries, type GatewayOptions, type ServerEntry } from './app.js'
export { default as corePlugin, type CorePluginOptions } from '../plugins/core.js'
export { default as mcpServer, type McpServerPluginOptions } from '../plugins/mcp-server.js'
export { InProcessConnection, type McpConnection, type ServerFactory, type ServerState, type CallOptions } from './connection.js'
export { builtinServers } from '../servers/index.js'
export * as errors from './errors.js'
