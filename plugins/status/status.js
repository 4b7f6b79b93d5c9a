// The status page: reads /status.json every POLL_MS and draws it. Plain browser JavaScript,
// no build step and no dependency, so the page works offline. Every text that comes from a
// server (names, descriptions, stderr) goes in through textContent, never as HTML.
'use strict'

const POLL_MS = 1500
const CREDENTIAL_KEY = 'mcp-gateway-credential'
let next

/** An element: `h('td', { class: 'n' }, 'text', child)`. */
function h (tag, attributes, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value)
    else if (name === 'hidden' || name === 'required' || name === 'open') element[name] = Boolean(value)
    else element.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue
    element.append(child instanceof Node ? child : String(child))
  }
  return element
}

function credentialHeaders () {
  const credential = sessionStorage.getItem(CREDENTIAL_KEY)
  return credential ? { authorization: `Bearer ${credential}` } : {}
}

const time = at => new Date(at).toLocaleTimeString([], { hour12: false })
function ago (at, now) {
  let seconds = Math.max(0, Math.round((now - new Date(at).getTime()) / 1000))
  if (seconds < 60) return `${seconds} s ago`
  const minutes = Math.floor(seconds / 60)
  seconds %= 60
  if (minutes < 60) return `${minutes} min ${seconds} s ago`
  const hours = Math.floor(minutes / 60)
  return hours < 48 ? `${hours} h ${minutes % 60} min ago` : `${Math.floor(hours / 24)} days ago`
}
const ms = value => value === null || value === undefined ? '–' : value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value).toString()
const percent = value => `${(value * 100).toFixed(value > 0 && value < 0.1 ? 1 : 0)} %`

function copyButton (text) {
  return h('button', {
    type: 'button',
    class: 'copy',
    onclick: async event => {
      const button = event.currentTarget
      try {
        await navigator.clipboard.writeText(text())
        button.textContent = 'copied'
      } catch {
        button.textContent = 'select and copy'
      }
      setTimeout(() => { button.textContent = 'copy' }, 1500)
    }
  }, 'copy')
}

function codeBlock (text) {
  return h('div', {}, copyButton(() => text), h('pre', {}, text))
}

// --- Client setup ------------------------------------------------------------------------

/** Copy-paste setup for one MCP endpoint in each client. */
function clientSetups (name, url, restBase, example, auth) {
  const header = auth ? { 'X-API-Key': '${GATEWAY_KEY}' } : undefined
  const json = value => JSON.stringify(value, null, 2)
  return [
    ['Claude Desktop', 'claude_desktop_config.json (Claude Desktop speaks stdio; mcp-remote bridges it to this URL):',
      json({ mcpServers: { [name]: { command: 'npx', args: ['-y', 'mcp-remote', url, ...(auth ? ['--header', 'X-API-Key:${GATEWAY_KEY}'] : [])] } } })],
    ['Cursor', '~/.cursor/mcp.json (or .cursor/mcp.json in a project):',
      json({ mcpServers: { [name]: { url, ...(header && { headers: header }) } } })],
    ['VS Code', '.vscode/mcp.json:',
      json({ servers: { [name]: { type: 'http', url, ...(header && { headers: header }) } } })],
    ['MCP Inspector', 'Run it, then choose transport "Streamable HTTP" and this URL' + (auth ? ' (add the X-API-Key header under Authentication)' : '') + ':',
      `npx @modelcontextprotocol/inspector\n# URL: ${url}`],
    ['curl', example === undefined ? 'REST: list the tools' : 'REST: list the tools, then call one:',
      [`curl ${restBase}${auth ? " -H 'X-API-Key: $GATEWAY_KEY'" : ''}`,
        example === undefined ? undefined : `curl -X POST ${restBase}/${encodeURIComponent(example.name)} -H 'content-type: application/json'${auth ? " -H 'X-API-Key: $GATEWAY_KEY'" : ''} -d '${JSON.stringify(example.args).replaceAll("'", "'\\''")}'`]
        .filter(Boolean).join('\n')]
  ]
}

function setupPanel (name, url, restBase, example, auth) {
  const setups = clientSetups(name, url, restBase, example, auth)
  const body = h('div', {})
  const tabs = h('div', { class: 'setup-tabs', role: 'tablist' })
  const show = index => {
    const [, note, text] = setups[index]
    body.replaceChildren(h('div', { class: 'muted' }, note), codeBlock(text))
    for (const [i, tab] of [...tabs.children].entries()) tab.setAttribute('aria-selected', String(i === index))
  }
  setups.forEach(([client], index) => tabs.append(h('button', { type: 'button', role: 'tab', onclick: () => show(index) }, client)))
  show(0)
  return h('details', { class: 'setup' }, h('summary', {}, 'Connect a client'), tabs, body)
}

// --- Try-it forms ---------------------------------------------------------------------------

/** Example arguments from a schema: what the curl line shows. */
function exampleArguments (schema) {
  const args = {}
  for (const [key, property] of Object.entries(schema?.properties ?? {})) {
    if (!(schema.required ?? []).includes(key)) continue
    const type = Array.isArray(property.type) ? property.type[0] : property.type
    args[key] = property.default ?? property.enum?.[0] ?? (type === 'number' || type === 'integer' ? 1 : type === 'boolean' ? true : type === 'string' ? 'text' : type === 'array' ? [] : type === 'object' ? {} : null)
  }
  return args
}

/** One field of the try-it form for a schema property, and how to read its value back. */
function field (key, property, required, id) {
  const type = Array.isArray(property.type) ? property.type.find(t => t !== 'null') : property.type
  const label = h('label', { for: id, title: property.description ?? '' }, key, required ? ' *' : '', property.description ? h('span', { class: 'muted' }, ` ${property.description}`) : '')
  if (Array.isArray(property.enum) && property.enum.every(value => typeof value === 'string' || typeof value === 'number')) {
    const select = h('select', { id, name: key },
      required ? undefined : h('option', { value: '' }, '(none)'),
      property.enum.map((value, index) => h('option', { value: String(index) }, String(value))))
    return { label, input: select, read: () => select.value === '' ? undefined : property.enum[Number(select.value)] }
  }
  if (type === 'boolean') {
    const box = h('input', { id, name: key, type: 'checkbox' })
    if (property.default === true) box.checked = true
    return { label, input: box, read: () => box.checked }
  }
  if (type === 'string') {
    const input = h('input', { id, name: key, type: 'text', placeholder: property.default ?? '' })
    return { label, input, read: () => input.value === '' && !required ? undefined : input.value }
  }
  if (type === 'number' || type === 'integer') {
    const input = h('input', { id, name: key, type: 'number', step: type === 'integer' ? '1' : 'any', placeholder: property.default ?? '' })
    return {
      label,
      input,
      read: () => {
        if (input.value === '') return required ? NaN : undefined
        return Number(input.value)
      }
    }
  }
  // Arrays, objects, unions: JSON, checked before sending.
  const area = h('textarea', { id, name: key, placeholder: 'JSON' })
  return {
    label,
    input: area,
    read: () => {
      if (area.value.trim() === '') return undefined
      try {
        return JSON.parse(area.value)
      } catch {
        throw new Error(`${key}: not valid JSON`)
      }
    }
  }
}

let formIds = 0

function tryItForm (prefix, tool) {
  const schema = tool.inputSchema ?? {}
  const properties = schema.properties
  const required = schema.required ?? []
  const form = h('form', { class: 'try', 'data-tool': tool.name })
  // Outside the form's grid, so a long answer does not widen its columns.
  const output = h('div', { class: 'result' })
  let read
  // A schema the form cannot show field by field (composition at the top): the arguments as JSON.
  if (properties === undefined || schema.oneOf || schema.anyOf || schema.allOf || schema.$ref) {
    const id = `f${++formIds}`
    const area = h('textarea', { id, name: 'arguments' })
    area.value = JSON.stringify(exampleArguments(schema), null, 2)
    form.append(h('label', { for: id, class: 'full' }, 'arguments (JSON)'), h('div', { class: 'full' }, area))
    read = () => JSON.parse(area.value === '' ? '{}' : area.value)
  } else {
    const fields = Object.entries(properties).map(([key, property]) => [key, field(key, property ?? {}, required.includes(key), `f${++formIds}`)])
    for (const [, { label, input }] of fields) form.append(label, input)
    read = () => {
      const args = {}
      for (const [key, { read: value }] of fields) {
        const v = value()
        if (v !== undefined) args[key] = v
      }
      return args
    }
  }
  form.append(h('div', { class: 'full' }, h('button', { type: 'submit' }, 'Call ', tool.name)))
  form.addEventListener('submit', async event => {
    event.preventDefault()
    let args
    try {
      args = read()
    } catch (err) {
      output.replaceChildren(h('div', { class: 'result-status error' }, err.message))
      return
    }
    output.replaceChildren(h('div', { class: 'muted' }, 'calling…'))
    const started = performance.now()
    try {
      const response = await fetch(`${prefix}/tools/${encodeURIComponent(tool.name)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...credentialHeaders() },
        body: JSON.stringify(args)
      })
      const text = await response.text()
      let shown = text
      try { shown = JSON.stringify(JSON.parse(text), null, 2) } catch {}
      output.replaceChildren(
        h('div', { class: `result-status ${response.ok ? 'ok' : 'error'}` }, `HTTP ${response.status} in ${Math.round(performance.now() - started)} ms`),
        h('pre', { class: 'result-body' }, shown))
    } catch (err) {
      output.replaceChildren(h('div', { class: 'result-status error' }, `the call failed: ${err.message}`))
    }
  })
  return h('div', { class: 'try-it' }, form, output)
}

// --- Servers --------------------------------------------------------------------------------

/** Cards by server name, rebuilt only when what they are built from changes, so open panels and typed arguments survive each refresh. */
const cards = new Map()

function serverCard (server, status) {
  const base = status.gateway.baseUrl
  const url = base + server.endpoints.mcp
  const restBase = base + server.endpoints.rest
  const firstTool = server.tools[0]
  const example = firstTool === undefined ? undefined : { name: firstTool.name, args: exampleArguments(firstTool.inputSchema) }
  const live = {
    badge: h('span', { class: 'badge state' }),
    since: h('span', { class: 'muted since' }),
    failure: h('p', { class: 'failure', hidden: true }),
    stderr: h('pre', { class: 'stderr' }),
    stderrBox: undefined,
    figures: new Map()
  }
  live.stderrBox = h('details', { class: 'stderr-box' }, h('summary', {}, 'Last stderr lines'), live.stderr)
  const toolItems = server.tools.map(tool => {
    const figures = h('span', { class: 'muted tool-figures' })
    live.figures.set(tool.name, figures)
    return h('details', { class: 'tool', 'data-tool': tool.name },
      h('summary', {}, h('code', {}, tool.name), ' ', tool.title && tool.title !== tool.name ? tool.title : '',
        tool.description ? h('span', { class: 'muted' }, ` ${tool.description.split('\n')[0]}`) : '', figures),
      tool.description?.includes('\n') ? h('p', { class: 'muted' }, tool.description) : undefined,
      tryItForm(server.prefix, tool))
  })
  const card = h('article', { class: 'card server', 'data-server': server.name },
    h('div', { class: 'card-head' }, h('h3', {}, server.name), live.badge, live.since, h('span', { class: 'muted' }, server.kind + (server.required ? ', required' : ''))),
    live.failure,
    h('dl', { class: 'endpoints' },
      h('dt', {}, 'MCP'), h('dd', {}, h('code', {}, url)),
      h('dt', {}, 'REST'), h('dd', {}, h('code', {}, `POST ${restBase}/<tool>`), '  ', h('a', { href: server.endpoints.rest }, 'list')),
      server.endpoints.prompts ? [h('dt', {}, 'prompts'), h('dd', {}, h('a', { href: server.endpoints.prompts }, server.endpoints.prompts))] : undefined,
      server.endpoints.resources ? [h('dt', {}, 'resources'), h('dd', {}, h('a', { href: server.endpoints.resources }, server.endpoints.resources))] : undefined,
      h('dt', {}, 'readiness'), h('dd', {}, h('a', { href: server.endpoints.ready }, server.endpoints.ready)),
      server.scopes ? [h('dt', {}, 'scopes'), h('dd', {}, server.scopes.join(' '))] : undefined),
    server.stderr === undefined ? undefined : live.stderrBox,
    h('h4', {}, `Tools (${server.tools.length})`),
    toolItems.length === 0 ? h('p', { class: 'muted' }, server.state === 'up' ? 'none' : 'listed again once the server is up') : toolItems,
    server.prompts.length > 0 ? [h('h4', {}, `Prompts (${server.prompts.length})`), h('ul', { class: 'plain prompts' }, server.prompts.map(prompt =>
      h('li', {}, h('code', {}, prompt.name), prompt.description ? ` ${prompt.description}` : '',
        (prompt.arguments ?? []).length > 0 ? h('span', { class: 'muted' }, ` (${prompt.arguments.map(a => a.name + (a.required ? '*' : '')).join(', ')})`) : '')))] : undefined,
    server.resources.length + server.resourceTemplates.length > 0 ? [h('h4', {}, `Resources (${server.resources.length + server.resourceTemplates.length})`), h('ul', { class: 'plain resources' },
      server.resources.map(resource => h('li', {}, h('code', {}, resource.uri), resource.name ? ` ${resource.name}` : '', resource.mimeType ? h('span', { class: 'muted' }, ` ${resource.mimeType}`) : '')),
      server.resourceTemplates.map(template => h('li', {}, h('code', {}, template.uriTemplate), template.name ? ` ${template.name}` : '', h('span', { class: 'muted' }, ' (template)'))))] : undefined,
    server.listError ? h('p', { class: 'muted' }, server.listError) : undefined,
    setupPanel(server.name, url, restBase, example, status.gateway.auth))
  return { card, live }
}

function updateCard ({ card, live }, server, status, now) {
  card.className = `card server ${server.state}`
  live.badge.className = `badge state ${server.state}`
  live.badge.textContent = server.state
  live.since.textContent = `since ${time(server.since)} (${ago(server.since, now)})`
  live.failure.hidden = server.failure === undefined
  live.failure.textContent = server.failure === undefined ? '' : server.failure + (server.retryAfter !== undefined ? `; next attempt in ${server.retryAfter} s` : '')
  if (server.stderr !== undefined) {
    const text = server.stderr.length === 0 ? '(nothing yet)' : server.stderr.join('\n')
    if (live.stderr.textContent !== text) live.stderr.textContent = text
    // Open by itself while the server is down: that is when these lines matter.
    if (server.state === 'down' && !live.stderrBox.dataset.touched) live.stderrBox.open = true
  }
  for (const [tool, element] of live.figures) {
    const figures = status.tools.find(f => f.server === server.name && f.tool === tool)
    element.textContent = figures === undefined || figures.window.calls === 0
      ? ''
      : ` · ${figures.window.calls} calls, ${percent(figures.window.errorRate)} errors, p50 ${ms(figures.window.p50Ms)} ms`
  }
}

function drawServers (status, now) {
  const container = document.getElementById('servers')
  const seen = new Set()
  for (const server of status.servers) {
    seen.add(server.name)
    const shape = JSON.stringify([server.tools, server.prompts, server.resources, server.resourceTemplates, server.endpoints, server.stderr === undefined, server.listError, status.gateway.baseUrl, status.gateway.auth])
    let entry = cards.get(server.name)
    if (entry === undefined || entry.shape !== shape) {
      const built = serverCard(server, status)
      built.live.stderrBox.addEventListener('toggle', () => { built.live.stderrBox.dataset.touched = '1' })
      const next = { ...built, shape }
      if (entry === undefined) container.append(next.card)
      else entry.card.replaceWith(next.card)
      cards.set(server.name, next)
      entry = next
    }
    updateCard(entry, server, status, now)
  }
  for (const [name, entry] of cards) {
    if (!seen.has(name)) {
      entry.card.remove()
      cards.delete(name)
    }
  }
  // Keep the config's order.
  for (const server of status.servers) container.append(cards.get(server.name).card)
}

// --- Tables ---------------------------------------------------------------------------------

function drawToolStats (status) {
  const body = document.querySelector('#tool-stats tbody')
  const rows = status.tools
    .slice()
    .sort((a, b) => b.window.calls - a.window.calls || b.calls - a.calls || a.server.localeCompare(b.server) || a.tool.localeCompare(b.tool))
    .map(f => h('tr', { 'data-tool': `${f.server}/${f.tool}` },
      h('td', {}, f.server), h('td', {}, h('code', {}, f.tool)),
      h('td', { class: 'n calls' }, f.window.calls), h('td', { class: 'n' }, f.window.errors),
      h('td', { class: 'n' }, percent(f.window.errorRate)), h('td', { class: 'n' }, ms(f.window.p50Ms)), h('td', { class: 'n' }, ms(f.window.p99Ms)),
      h('td', { class: 'n' }, f.calls)))
  body.replaceChildren(...(rows.length > 0 ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'No tool called yet'))]))
  document.getElementById('window').textContent = `(the last ${Math.round(status.gateway.windowMs / 60000)} minutes)`
}

function drawRecentCalls (status) {
  const body = document.querySelector('#recent-calls tbody')
  const rows = status.recentCalls.slice(0, 50).map(call => h('tr', { class: 'call' },
    h('td', {}, time(call.at)), h('td', {}, call.server),
    h('td', {}, h('code', {}, call.name ?? ''), call.method === 'tools/call' ? '' : h('span', { class: 'muted' }, ` ${call.method}`)),
    h('td', {}, call.clientId ?? h('span', { class: 'muted' }, 'anonymous')),
    h('td', {}, call.way),
    h('td', { class: call.outcome === 'ok' ? 'outcome-ok' : 'outcome-bad' }, call.outcome, call.code ? h('span', { class: 'muted' }, ` ${call.code}`) : ''),
    h('td', { class: 'n' }, ms(call.durationMs))))
  body.replaceChildren(...(rows.length > 0 ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No call yet'))]))
}

// --- The loop -------------------------------------------------------------------------------

function overallOf (servers) {
  if (servers.some(server => server.required && server.state !== 'up')) return 'unavailable'
  return servers.every(server => server.state === 'up') ? 'ready' : 'degraded'
}

function draw (status) {
  const now = new Date(status.gateway.now).getTime()
  const overall = overallOf(status.servers)
  const badge = document.getElementById('overall')
  badge.className = `badge ${overall}`
  badge.textContent = overall
  document.getElementById('meta').textContent = `v${status.gateway.version} · up since ${time(status.gateway.startedAt)} · ${status.gateway.auth ? 'authentication on' : 'authentication off'}` +
    (status.gateway.aggregate ? ` · every tool at ${status.gateway.baseUrl}${status.gateway.aggregate}` : '') + ` · updated ${time(now)}`
  // A config reload that was refused: the running config still serves, and says why here.
  const reload = document.getElementById('reload')
  const refused = status.gateway.reload !== null && status.gateway.reload !== undefined && !status.gateway.reload.ok
  reload.hidden = !refused
  reload.textContent = refused ? `config reload refused at ${time(status.gateway.reload.at)}: ${status.gateway.reload.error}` : ''
  drawServers(status, now)
  drawToolStats(status)
  drawRecentCalls(status)
}

function problem (text) {
  const element = document.getElementById('problem')
  element.hidden = text === undefined
  element.textContent = text ?? ''
}

async function refresh () {
  try {
    const response = await fetch('/status.json', { headers: { accept: 'application/json', ...credentialHeaders() }, cache: 'no-store' })
    if (response.status === 401 || response.status === 403) {
      document.getElementById('credentials').hidden = false
      problem(`The gateway answered ${response.status}: ${(await response.json().catch(() => ({}))).message ?? 'credentials needed'}`)
      return
    }
    if (!response.ok) {
      problem(`/status.json answered ${response.status}`)
      return
    }
    document.getElementById('credentials').hidden = true
    problem(undefined)
    draw(await response.json())
  } catch (err) {
    problem(`The gateway cannot be reached (${err.message}); trying again.`)
  } finally {
    clearTimeout(next)
    next = setTimeout(refresh, POLL_MS)
  }
}

document.getElementById('credentials').addEventListener('submit', event => {
  event.preventDefault()
  const credential = document.getElementById('credential').value.trim()
  if (credential === '') sessionStorage.removeItem(CREDENTIAL_KEY)
  else sessionStorage.setItem(CREDENTIAL_KEY, credential)
  refresh()
})

refresh()
