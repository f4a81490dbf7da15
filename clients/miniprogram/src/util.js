/** Small helpers shared by the SDK's modules (no mini-program globals). */

let counter = 0

/**
 * A random id for `Idempotency-Key` and `client_msg_id`: `prefix` + time (base 36) +
 * a counter + 64 random bits. At most 64 characters (the server's limit for both).
 */
export function newId(prefix = 'c') {
  counter = (counter + 1) % 1679616
  const random = () => Math.floor(Math.random() * 0x100000000).toString(36).padStart(7, '0')
  return `${prefix}-${Date.now().toString(36)}-${counter.toString(36)}-${random()}${random()}`
}

/**
 * Exponential back-off with full jitter: a wait drawn uniformly from
 * [0, min(max, min * 2^attempt)] milliseconds ("Exponential Backoff And Jitter", AWS
 * Architecture Blog, 2015; the same rule as centrifuge-js and docs/REALTIME.md §7).
 */
export function fullJitter(attempt, min, max, random = Math.random) {
  const cap = Math.min(max, min * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * cap)
}

/**
 * Seconds to wait from a `Retry-After` header value (delta-seconds or an HTTP-date,
 * RFC 9110 §10.2.3); undefined when absent or unreadable.
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === undefined || value === null || value === '') return undefined
  const text = String(value).trim()
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text)
  const at = Date.parse(text)
  if (Number.isNaN(at)) return undefined
  return Math.max(0, (at - now) / 1000)
}

/** A header's value, case-insensitively (WeChat passes the server's spelling through). */
export function headerOf(headers, name) {
  if (!headers) return undefined
  const wanted = name.toLowerCase()
  for (const key of Object.keys(headers)) {
    if (key.toLowerCase() === wanted) return headers[key]
  }
  return undefined
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** `?a=1&b=2` from an object, leaving out undefined and null; '' when empty. */
export function queryString(query) {
  if (!query) return ''
  const parts = []
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue
    const values = Array.isArray(value) ? value : [value]
    for (const one of values) parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(one))}`)
  }
  return parts.length ? `?${parts.join('&')}` : ''
}

/** Calls `fn(options)` of a callback-style wx API and resolves with its `success` result. */
export function wxCall(fn, options = {}) {
  return new Promise((resolve, reject) => {
    fn({ ...options, success: resolve, fail: reject })
  })
}

/** A tiny event emitter: `on` returns the function that removes the handler. */
export class Emitter {
  constructor() {
    this._handlers = new Map()
  }

  on(name, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function')
    let set = this._handlers.get(name)
    if (!set) this._handlers.set(name, (set = new Set()))
    set.add(handler)
    return () => this.off(name, handler)
  }

  off(name, handler) {
    const set = this._handlers.get(name)
    if (set) set.delete(handler)
  }

  /** Calls the handlers in the order they were added; one that throws goes to `onError`. */
  emit(name, value, onError) {
    const set = this._handlers.get(name)
    if (!set) return 0
    for (const handler of [...set]) {
      try {
        handler(value)
      } catch (error) {
        if (onError) onError(error, name)
      }
    }
    return set.size
  }
}
