import t from 'tap'
import { checkParamHeaders, HEADER_MISMATCH, paramHeaders, paramHeaderValues, type ParamHeader } from '../../../src/mcp/param-headers.js'

/** An object schema with `properties`, and any other keywords. */
function object (properties: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'object', properties, ...extra }
}

/** `value` wrapped in the Base64 sentinel. */
function base64 (value: string): string {
  return `=?base64?${Buffer.from(value).toString('base64')}?=`
}

/** The rejection `checkParamHeaders` returns, from the detail the SDK puts in `data.mismatch.body`. */
function rejection (header: string, body: string): ReturnType<typeof checkParamHeaders> {
  return { message: `Bad Request: the request headers and body disagree: ${body}`, data: { mismatch: { header, body } } }
}

const schema = object({
  region: { type: 'string', 'x-mcp-header': 'Region' },
  count: { type: 'integer', 'x-mcp-header': 'Count' },
  dryRun: { type: 'boolean', 'x-mcp-header': 'Dry-Run' },
  note: { type: 'string' }
})

t.equal(HEADER_MISMATCH, -32020)

t.test('declarations of string, integer and boolean properties, in schema order', async t => {
  t.same(paramHeaders(schema), [
    { header: 'Region', path: ['region'], type: 'string' },
    { header: 'Count', path: ['count'], type: 'integer' },
    { header: 'Dry-Run', path: ['dryRun'], type: 'boolean' }
  ])
})

t.test('a schema with no declarations, or no schema at all', async t => {
  t.same(paramHeaders(object({ a: { type: 'string' } })), [])
  t.same(paramHeaders({ type: 'object' }), [])
  t.same(paramHeaders(undefined), [])
  t.same(paramHeaders(null), [])
  t.same(paramHeaders('x-mcp-header'), [])
  // Nothing declared: nothing to check, whatever the headers.
  t.equal(checkParamHeaders([], { a: 'x' }, {}), undefined)
})

t.test('declarations at any depth of properties', async t => {
  const nested = object({ target: object({ where: object({ zone: { type: 'string', 'x-mcp-header': 'Zone' } }) }) })
  const declared = paramHeaders(nested)
  t.same(declared, [{ header: 'Zone', path: ['target', 'where', 'zone'], type: 'string' }])
  const args = { target: { where: { zone: 'eu-1' } } }
  t.equal(checkParamHeaders(declared, args, { 'mcp-param-zone': 'eu-1' }), undefined)
  t.same(checkParamHeaders(declared, args, { 'mcp-param-zone': 'us-1' }), rejection('Mcp-Param-Zone',
    'the Mcp-Param-Zone header decodes to "us-1" but the body carries target.where.zone="eu-1"'))
  // An absent or non-object step on the way means no value, so no header is required.
  t.equal(checkParamHeaders(declared, { target: {} }, {}), undefined)
  t.equal(checkParamHeaders(declared, { target: { where: 'eu-1' } }, {}), undefined)
})

t.test('invalid declarations make the whole schema yield none, as the SDK does', async t => {
  const valid = { region: { type: 'string', 'x-mcp-header': 'Region' } }
  const invalid: Record<string, unknown> = {
    'at the root': { type: 'object', 'x-mcp-header': 'Root', properties: valid },
    'under items': object({ ...valid, list: { type: 'array', items: { type: 'string', 'x-mcp-header': 'Item' } } }),
    'under anyOf': object(valid, { anyOf: [object({ b: { type: 'string', 'x-mcp-header': 'B' } })] }),
    'under $defs': object(valid, { $defs: { b: { type: 'string', 'x-mcp-header': 'B' } } }),
    'under additionalProperties': object(valid, { additionalProperties: { type: 'string', 'x-mcp-header': 'B' } }),
    'an object type': object({ ...valid, o: { type: 'object', 'x-mcp-header': 'O' } }),
    'no type': object({ ...valid, o: { 'x-mcp-header': 'O' } }),
    'a type array': object({ ...valid, o: { type: ['string', 'null'], 'x-mcp-header': 'O' } }),
    'an empty name': object({ ...valid, o: { type: 'string', 'x-mcp-header': '' } }),
    'a name that is not a string': object({ ...valid, o: { type: 'string', 'x-mcp-header': 7 } }),
    'a name with a space': object({ ...valid, o: { type: 'string', 'x-mcp-header': 'Bad Name' } }),
    'a name with CR LF': object({ ...valid, o: { type: 'string', 'x-mcp-header': 'A\r\nX-Injected: 1' } }),
    'names equal but for case': object({ ...valid, o: { type: 'string', 'x-mcp-header': 'REGION' } })
  }
  for (const [name, schema] of Object.entries(invalid)) t.same(paramHeaders(schema), [], name)
  // Keywords that carry no subschema with a declaration are fine.
  t.same(paramHeaders(object(valid, { additionalProperties: false, required: ['region'] })).length, 1)
})

t.test('number-typed declarations: invalid by the spec, yet kept and checked, as the SDK does', async t => {
  const declared = paramHeaders(object({
    ratio: { type: 'number', 'x-mcp-header': 'Ratio' },
    region: { type: 'string', 'x-mcp-header': 'Region' }
  }))
  t.same(declared, [
    { header: 'Ratio', path: ['ratio'], type: 'number' },
    { header: 'Region', path: ['region'], type: 'string' }
  ])
  t.equal(checkParamHeaders(declared, { ratio: 0.5 }, { 'mcp-param-ratio': '0.50' }), undefined)
  t.same(checkParamHeaders(declared, { ratio: 0.5 }, {}), rejection('Mcp-Param-Ratio',
    'the body carries ratio=0.5 but the Mcp-Param-Ratio header is absent'))
  // Any other fault besides still yields none.
  t.same(paramHeaders(object({
    ratio: { type: 'number', 'x-mcp-header': 'Ratio' },
    o: { type: 'object', 'x-mcp-header': 'O' }
  })), [])
})

t.test('checking headers', async t => {
  const declared = paramHeaders(schema)
  const args = { region: 'eu', count: 42, dryRun: false, note: 'n' }
  const headers = { 'mcp-param-region': 'eu', 'mcp-param-count': '42', 'mcp-param-dry-run': 'false' }

  t.test('headers that agree', async t => {
    t.equal(checkParamHeaders(declared, args, headers), undefined)
    t.equal(checkParamHeaders(declared, { ...args, dryRun: true }, { ...headers, 'mcp-param-dry-run': 'true' }), undefined)
    t.equal(checkParamHeaders(declared, { region: '' }, { 'mcp-param-region': '' }), undefined, 'an empty string')
    t.equal(checkParamHeaders(declared, { count: -7 }, { 'mcp-param-count': '-7' }), undefined)
  })

  t.test('integers are compared numerically', async t => {
    for (const value of ['42.0', '042', '42.000']) {
      t.equal(checkParamHeaders(declared, { count: 42 }, { 'mcp-param-count': value }), undefined, value)
    }
    // Only plain decimals are read as numbers; anything else is compared as a string.
    for (const value of ['4.2e1', '+42', ' 42', '0x2a', '42.']) {
      t.same(checkParamHeaders(declared, { count: 42 }, { 'mcp-param-count': value }), rejection('Mcp-Param-Count',
        `the Mcp-Param-Count header decodes to ${JSON.stringify(value)} but the body carries count=42`), value)
    }
    t.same(checkParamHeaders(declared, { count: 42 }, { 'mcp-param-count': '43' }), rejection('Mcp-Param-Count',
      'the Mcp-Param-Count header decodes to "43" but the body carries count=42'))
  })

  t.test('strings and booleans are compared exactly', async t => {
    t.same(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': 'EU' }), rejection('Mcp-Param-Region',
      'the Mcp-Param-Region header decodes to "EU" but the body carries region="eu"'))
    t.same(checkParamHeaders(declared, { dryRun: true }, { 'mcp-param-dry-run': 'True' }), rejection('Mcp-Param-Dry-Run',
      'the Mcp-Param-Dry-Run header decodes to "True" but the body carries dryRun=true'))
    // A string argument that looks like a number is still a string.
    t.same(checkParamHeaders(declared, { region: '42' }, { 'mcp-param-region': '42.0' }), rejection('Mcp-Param-Region',
      'the Mcp-Param-Region header decodes to "42.0" but the body carries region="42"'))
  })

  t.test('a missing header', async t => {
    const { 'mcp-param-count': _, ...rest } = headers
    t.same(checkParamHeaders(declared, args, rest), rejection('Mcp-Param-Count',
      'the body carries count=42 but the Mcp-Param-Count header is absent'))
    t.same(checkParamHeaders(declared, args, {}), rejection('Mcp-Param-Region',
      'the body carries region="eu" but the Mcp-Param-Region header is absent'), 'the first declaration is reported')
  })

  t.test('an absent or null argument needs no header, and a header sent for it is ignored', async t => {
    t.equal(checkParamHeaders(declared, {}, {}), undefined)
    t.equal(checkParamHeaders(declared, undefined, {}), undefined)
    t.equal(checkParamHeaders(declared, { region: null, count: null, dryRun: null }, {}), undefined)
    t.equal(checkParamHeaders(declared, { region: null }, { 'mcp-param-region': 'anything' }), undefined)
  })

  t.test('arguments with no header form are not checked', async t => {
    t.equal(checkParamHeaders(declared, { region: { nested: 1 } }, {}), undefined)
    t.equal(checkParamHeaders(declared, { region: ['eu'] }, {}), undefined)
    t.equal(checkParamHeaders(declared, { count: 2 ** 60 }, {}), undefined, 'past Number.MAX_SAFE_INTEGER')
  })

  t.test('the Base64 sentinel', async t => {
    t.equal(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': base64('eu') }), undefined)
    t.equal(checkParamHeaders(declared, { region: 'Zürich, 東京' }, { 'mcp-param-region': base64('Zürich, 東京') }), undefined)
    t.equal(checkParamHeaders(declared, { region: '' }, { 'mcp-param-region': '=?base64??=' }), undefined, 'empty')
    t.equal(checkParamHeaders(declared, { count: 42 }, { 'mcp-param-count': base64('42.0') }), undefined)
    t.equal(checkParamHeaders(declared, { dryRun: true }, { 'mcp-param-dry-run': base64('true') }), undefined)
    t.same(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': base64('us') }), rejection('Mcp-Param-Region',
      'the Mcp-Param-Region header decodes to "us" but the body carries region="eu"'))
    const invalid = rejection('Mcp-Param-Region', 'the Mcp-Param-Region header carries an invalid Base64 sentinel value')
    for (const value of ['=?base64?ZXU?=', '=?base64?!!!!?=', '=?base64?ZX U=?=', '=?base64?/w==?=']) {
      // Unpadded, bad characters, a space, and bytes that are not UTF-8.
      t.same(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': value }), invalid, value)
    }
    // Without both ends of the sentinel, the value is taken as it is.
    t.same(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': '=?base64?ZXU=' }), rejection('Mcp-Param-Region',
      'the Mcp-Param-Region header decodes to "=?base64?ZXU=" but the body carries region="eu"'))
  })

  t.test('a repeated header is a mismatch', async t => {
    t.same(checkParamHeaders(declared, { region: 'eu' }, { 'mcp-param-region': ['eu', 'eu'] }), rejection('Mcp-Param-Region',
      'the Mcp-Param-Region header is repeated (["eu","eu"]) but the body carries region="eu"'))
  })
})

t.test('header names are looked up lower-cased', async t => {
  const declared: ParamHeader[] = [{ header: 'TenantID', path: ['tenant'], type: 'string' }]
  t.equal(checkParamHeaders(declared, { tenant: 't1' }, { 'mcp-param-tenantid': 't1' }), undefined)
  t.same(checkParamHeaders(declared, { tenant: 't1' }, { 'Mcp-Param-TenantID': 't1' }), rejection('Mcp-Param-TenantID',
    'the body carries tenant="t1" but the Mcp-Param-TenantID header is absent'))
})

t.test('the headers a client sends: plain when they can be, Base64 otherwise, and they pass the check', async t => {
  const declared = paramHeaders(schema)
  const lower = (headers: Record<string, string>): Record<string, string> =>
    Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))
  t.same(paramHeaderValues(declared, { region: 'eu-west 1', count: 3, dryRun: false, note: 'x' }), {
    'Mcp-Param-Region': 'eu-west 1', 'Mcp-Param-Count': '3', 'Mcp-Param-Dry-Run': 'false'
  })
  t.same(paramHeaderValues(declared, { region: 'Zürich' }), { 'Mcp-Param-Region': base64('Zürich') })
  t.same(paramHeaderValues(declared, { region: ' padded ' }), { 'Mcp-Param-Region': base64(' padded ') })
  t.same(paramHeaderValues(declared, { region: '=?base64?SGVsbG8=?=' }), { 'Mcp-Param-Region': base64('=?base64?SGVsbG8=?=') }, 'a value that looks like a sentinel is wrapped')
  t.same(paramHeaderValues(declared, { region: null }), {}, 'no header for a null or absent value')
  for (const args of [{ region: 'Zürich', count: 7 }, { region: 'line\nbreak', dryRun: true }, { region: '=?base64?x?=' }]) {
    t.equal(checkParamHeaders(declared, args, lower(paramHeaderValues(declared, args))), undefined, JSON.stringify(args))
  }
})
