import type { ServerFactory } from '../src/connections/connection.js'
import { createByeServer } from './bye/index.js'
import { createGreetServer } from './greet/index.js'
import { createMathServer } from './math/index.js'

/** The built-in servers, mounted at `/<name>`. Adding a server is one file in `servers/` and one line here. */
export const builtinServers: Record<string, ServerFactory> = {
  greet: createGreetServer,
  bye: createByeServer,
  math: createMathServer
}
