import { DEFAULT_RETRY_INITIAL_MS, DEFAULT_RETRY_MAX_MS } from '../defaults.js'

/**
 * When to try a down upstream again: the first delay, doubled per failed attempt up to a
 * ceiling (a first delay above the default ceiling raises the ceiling to it), one timer at a
 * time, never keeping the process alive.
 */
export class Backoff {
  #initialMs: number
  #maxMs: number
  #attempt = 0
  #retryAt: number | undefined
  #timer: NodeJS.Timeout | undefined

  constructor (retry: { initialMs?: number, maxMs?: number } = {}) {
    this.#initialMs = retry.initialMs ?? DEFAULT_RETRY_INITIAL_MS
    this.#maxMs = retry.maxMs ?? Math.max(DEFAULT_RETRY_MAX_MS, this.#initialMs)
  }

  /** Seconds until the next attempt, for `Retry-After`; undefined when none is scheduled. */
  get retryAfter (): number | undefined {
    if (this.#retryAt === undefined) return undefined
    return Math.max(1, Math.ceil((this.#retryAt - Date.now()) / 1000))
  }

  get scheduled (): boolean { return this.#timer !== undefined }

  /** Runs `attempt` after the next delay, unless an attempt is already scheduled; returns the delay. */
  schedule (attempt: () => void): number | undefined {
    if (this.#timer !== undefined) return undefined
    const delay = Math.min(this.#initialMs * 2 ** this.#attempt, this.#maxMs)
    this.#attempt++
    this.#retryAt = Date.now() + delay
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      attempt()
    }, delay)
    this.#timer.unref()
    return delay
  }

  /** The server is back: the next failure starts again from the first delay. */
  reset (): void {
    this.#attempt = 0
    this.#retryAt = undefined
  }

  cancel (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
