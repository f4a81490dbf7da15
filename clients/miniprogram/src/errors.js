/**
 * Errors of the Liudong SDK.
 *
 *   LiudongError            every failure the SDK reports
 *     .status  number       HTTP status of a problem+json answer; 0 when no HTTP answer
 *                           (network failure, time-out, a WebSocket `error` frame)
 *     .code    string       the server's stable `code` (docs/SECURITY.md, the OpenAPI
 *                           document), or one of the SDK's own: `network_error`, `timeout`,
 *                           `bad_response`, `not_logged_in`, `stopped`
 *     .detail  string       human-readable explanation (problem `detail`, frame `message`)
 *     .errors  Array|undef  offending fields of a 422 `validation_failed`
 *     .retryAfter number|undef  seconds, from `Retry-After` or a frame's `retry_after`
 *
 * Problem documents follow RFC 9457 (`application/problem+json`).
 */
export class LiudongError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} detail
   * @param {{title?: string, type?: string, errors?: unknown[], retryAfter?: number, frame?: string, cause?: unknown}} [extra]
   */
  constructor(status, code, detail, extra = {}) {
    super(`${code}: ${detail}`)
    this.name = 'LiudongError'
    this.status = status
    this.code = code
    this.detail = detail
    this.title = extra.title
    this.type = extra.type
    this.errors = extra.errors
    this.retryAfter = extra.retryAfter
    this.frame = extra.frame
    if (extra.cause !== undefined) this.cause = extra.cause
  }

  /** Build from a problem+json body (or anything else the server answered with). */
  static fromResponse(status, body, retryAfter) {
    if (body && typeof body === 'object' && typeof body.code === 'string') {
      return new LiudongError(status, body.code, String(body.detail ?? body.title ?? ''), {
        title: body.title,
        type: body.type,
        errors: body.errors,
        retryAfter,
      })
    }
    const text = typeof body === 'string' ? body.slice(0, 200) : ''
    return new LiudongError(status, `http_${status}`, text || `HTTP ${status}`, { retryAfter })
  }
}

/** Codes of a 401 after which the SDK logs in again once and retries. */
export const RELOGIN_CODES = new Set(['token_expired', 'token_revoked'])
