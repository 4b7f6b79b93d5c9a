import type { AuthInfo } from '@modelcontextprotocol/server'
import type { PolicyMatch, PolicyRule } from '../security.js'
import type { CallContext, CallFilter } from './pipeline.js'

// Per-tool authorization: the config's `gateway.policy`, an ordered list of rules. The first
// rule whose `match` fits the caller decides, with its globs over `<server>/<name>` (a tool's
// or prompt's name, or a resource URI); inside a rule `deny` wins over `allow`; what the
// deciding rule does not allow, or what no rule decides, is denied. An anonymous caller fits
// only a rule with an empty `match`. As an `allows` filter of the call pipeline it is one
// decision for listing and calling, on every way in: a denied item is hidden from every list
// and answers as an unknown name.

/** A compiled glob: `*` matches any run of characters, `/` included; everything else is literal. */
function glob (pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map(part => part.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`)
}

interface CompiledRule {
  match: PolicyMatch
  /** Whether `match` is empty: the only kind of rule an anonymous caller fits. */
  anyone: boolean
  allow: RegExp[]
  deny: RegExp[]
}

/** What the auth plugin puts in `AuthInfo.extra`: how the caller authenticated, and a JWT's subject and claims. */
interface IdentityExtra {
  kind?: 'apiKey' | 'jwt'
  sub?: string
  claims?: Record<string, unknown>
}

/** Whether a claim holds the value: equal, or among its values when the claim is an array. */
function claimHolds (claim: unknown, value: string): boolean {
  return Array.isArray(claim) ? claim.some(item => String(item) === value) : claim !== undefined && String(claim) === value
}

/** Whether every field the rule's `match` gives fits the caller. */
function fits (rule: CompiledRule, identity: AuthInfo | undefined): boolean {
  if (identity === undefined) return rule.anyone
  const { apiKey, sub, scope, claim } = rule.match
  const extra = (identity.extra ?? {}) as IdentityExtra
  if (apiKey !== undefined && (extra.kind !== 'apiKey' || identity.clientId !== apiKey)) return false
  if (sub !== undefined && (extra.kind !== 'jwt' || extra.sub !== sub)) return false
  if (scope !== undefined && !identity.scopes.includes(scope)) return false
  if (claim !== undefined) {
    const claims = extra.kind === 'jwt' ? extra.claims ?? {} : {}
    for (const [name, value] of Object.entries(claim)) {
      if (!claimHolds(claims[name], value)) return false
    }
  }
  return true
}

/** The authorization filter of `rules`; undefined when there are none, so nothing is filtered. */
export function policyFilter (rules: readonly PolicyRule[] | undefined): CallFilter | undefined {
  if (rules === undefined || rules.length === 0) return undefined
  const compiled: CompiledRule[] = rules.map(rule => ({
    match: rule.match,
    anyone: Object.values(rule.match).every(value => value === undefined),
    allow: rule.allow.map(glob),
    deny: rule.deny.map(glob)
  }))
  return {
    name: 'policy',
    allows (call: CallContext): boolean {
      const rule = compiled.find(candidate => fits(candidate, call.identity))
      if (rule === undefined) return false
      const target = `${call.server}/${call.name ?? ''}`
      return !rule.deny.some(pattern => pattern.test(target)) && rule.allow.some(pattern => pattern.test(target))
    }
  }
}
