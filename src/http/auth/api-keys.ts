import { createHash, timingSafeEqual } from 'node:crypto'
import type { AuthInfo } from '@modelcontextprotocol/server'
import type { ApiKey } from '../../security.js'

/**
 * The configured API keys, each kept only as its SHA-256. A presented key is hashed and
 * compared with every configured digest in constant time (`timingSafeEqual`), all of them
 * each time, so neither the comparison nor which key matched shows in the answer's timing;
 * comparing digests of one length also hides the length of the keys.
 */
export class ApiKeys {
  #keys: Array<{ digest: Buffer, identity: Readonly<AuthInfo> }>

  constructor (keys: readonly ApiKey[]) {
    this.#keys = keys.map(key => ({
      digest: Buffer.from(key.sha256, 'hex'),
      // The key itself is never the identity's `token`: the identity reaches tools, filters
      // and logs, and the key is a long-lived secret.
      identity: Object.freeze({ clientId: key.id, scopes: [...key.scopes], token: '', extra: { kind: 'apiKey' } })
    }))
  }

  get size (): number { return this.#keys.length }

  /** The identity of the key presented, or undefined when it is none of the configured ones. */
  verify (presented: string): Readonly<AuthInfo> | undefined {
    if (this.#keys.length === 0) return undefined
    const digest = createHash('sha256').update(presented).digest()
    let found: Readonly<AuthInfo> | undefined
    for (const key of this.#keys) {
      if (timingSafeEqual(digest, key.digest) && found === undefined) found = key.identity
    }
    return found
  }
}
