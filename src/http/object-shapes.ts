import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { Duplex } from 'node:stream'

/**
 * How many requests settle the shapes: one more than V8's in-object slack tracking counts
 * (7 constructions) before it fixes the size of a constructor's objects.
 */
const SETTLING_REQUESTS = 8

const SETTLING_REQUEST = 'POST /settle HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'

let settled: Promise<void> | undefined

/**
 * Serves a few requests through Node's own HTTP server over in-memory sockets, once per
 * process, before the gateway serves any, so that V8 fixes the size of every later
 * `IncomingMessage` and `ServerResponse` from objects that went through a whole request.
 *
 * V8 sizes the objects of a constructor from the first seven it builds (in-object slack
 * tracking, https://v8.dev/blog/slack-tracking): at the seventh construction it keeps as many
 * in-object fields as the largest shape grown from the constructor's first map so far. Those
 * shapes are held weakly; a full garbage collection with no request alive drops them. A
 * process that served exactly six requests (a few health checks, the first calls), then
 * stood idle until such a collection, builds its seventh `ServerResponse` with no shape
 * grown yet: V8 settles on no in-object field at all, and once Node's constructor has added
 * more than a dozen fields outside the object, the next added with a computed key
 * (`this[kNeedDrain] = false`) sends the object to dictionary mode. Every response of that
 * process goes there, for its whole life.
 * Measured on the REST path (`npm run bench`, where the runner's probes happen to make six
 * requests before a pause): 30 µs and 23.6 KB allocated a call instead of 24 µs and 17.4 KB.
 * Plain `node:http` shows the same: six requests, `gc()`, then every response in dictionary
 * mode (`%HasFastProperties`); five or seven, none. Node has no option for it, hence this.
 *
 * The requests never touch the network, a route, a hook or a log: a bare Node server of
 * their own answers them. Where this process already built seven responses, it changes
 * nothing.
 */
export async function settleHttpObjectShapes (): Promise<void> {
  // Only speed depends on it: a Node where this fails serves as it would without.
  settled ??= serveSettlingRequests().catch(() => {})
  return await settled
}

async function serveSettlingRequests (): Promise<void> {
  const server = createServer()
  // Every request and response stays referenced until the last is built, so their shapes
  // stay alive while the count runs, whatever the collector does meanwhile.
  const held: Array<IncomingMessage | ServerResponse> = []
  let answered = (): void => {}
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    held.push(request, response)
    request.resume()
    response.once('finish', answered)
    response.setHeader('content-type', 'application/json')
    response.end('{}')
  })
  for (let i = 0; i < SETTLING_REQUESTS; i++) {
    await new Promise<void>((resolve, reject) => {
      const socket = new Duplex({
        read () {},
        write (_chunk, _encoding, callback) { callback() }
      })
      let finished = false
      answered = () => {
        finished = true
        socket.destroy()
      }
      // Node closes the socket itself on a request it cannot parse.
      socket.once('close', () => { if (finished) resolve(); else reject(new Error('the settling request was not answered')) })
      server.emit('connection', socket)
      socket.push(SETTLING_REQUEST)
    })
  }
  held.length = 0
}
