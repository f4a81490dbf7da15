/**
 * `createClient({ baseURL, wx, storage })`: the Liudong REST client.
 *
 * Everything outside goes through the injected `wx` adapter (`wx.request`, `wx.login`,
 * `wx.uploadFile`, `wx.connectSocket`, app and network events) and `storage`, so the same
 * core runs in a mini-program (the real `wx`), a browser (an adapter over `fetch` and
 * `WebSocket`) and Node's test runner. types/index.d.ts documents the adapter's shape.
 *
 * What `request()` does for every call:
 *  - adds `Authorization: Bearer <token>`; with no token yet it logs in first (`autoLogin`);
 *  - gives every unsafe call (POST, PATCH, PUT, DELETE) one `Idempotency-Key`, reused when
 *    the call is retried, so a retry never acts twice (docs/SECURITY.md);
 *  - on 401 `token_expired` / `token_revoked` logs in again once (`wx.login` →
 *    `POST /v1/auth/login`) and repeats the call;
 *  - on 429 and 503 waits `Retry-After` seconds (RFC 9110 §10.2.3) and tries again, up to
 *    `retries` times (a wait longer than `maxRetryAfter` is not waited: the error is thrown);
 *    a lost connection, 502 and 504 are retried the same way after a back-off with jitter;
 *  - turns problem+json answers (RFC 9457) into a `LiudongError(status, code, detail)`.
 *
 * 202 "accepted": the command was recorded but a read model had not caught up in time
 * (docs/ARCHITECTURE.md). `request()` returns the `Accepted` body (`status: "accepted"`);
 * the typed helpers then read the resource until it shows the change (`acceptedTimeout`).
 */
import { LiudongError, RELOGIN_CODES } from './errors.js'
import { Store, wxStorage } from './storage.js'
import { Emitter, fullJitter, headerOf, newId, parseRetryAfter, queryString, sleep, wxCall } from './util.js'
import { Realtime } from './realtime.js'

const RETRY_STATUS = new Set([429, 502, 503, 504])
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export class LiudongClient {
  /** @param {import('../types/index.js').ClientOptions} options */
  constructor(options) {
    const { baseURL, wx } = options || {}
    if (!baseURL) throw new TypeError('createClient: baseURL is required')
    if (!wx || typeof wx.request !== 'function') throw new TypeError('createClient: a wx adapter with request() is required')
    this.baseURL = baseURL.replace(/\/+$/, '')
    this.wx = wx
    this.options = {
      timeout: 15000,
      retries: 3,
      maxRetryAfter: 60,
      autoLogin: true,
      acceptedTimeout: 10000,
      prefix: 'liudong.',
      ...options,
    }
    this.store = new Store(options.storage || wxStorage(wx), this.options.prefix)
    this.events = new Emitter()
    this._token = null
    this._expiresAt = null
    this._reader = null
    this._loaded = null
    this._loginFlight = null
    this._realtime = null
    /** Reports a handler's or storage's error to `on('error')` (or the console). */
    this._reportError = (error, where) => {
      if (this.events.emit('error', { error, where }) === 0 && typeof console !== 'undefined') {
        console.error('liudong:', where, error)
      }
    }

    this.me = {
      get: () => this.request('GET', '/v1/me'),
      update: (patch) => this.request('PATCH', '/v1/me', { body: patch }),
      books: (query) => this.request('GET', '/v1/me/books', { query }),
      loans: (query) => this.request('GET', '/v1/me/loans', { query }),
      subscriptions: () => this.request('GET', '/v1/me/subscriptions'),
      grantSubscriptions: (grants) => this.request('POST', '/v1/me/subscriptions', { body: { grants } }),
      subscribe: (templateIds) => this._subscribe(templateIds),
    }
    this.books = {
      search: (query) => this.request('GET', '/v1/books', { query }),
      get: (id) => this.request('GET', `/v1/books/${enc(id)}`),
      history: (id, query) => this.request('GET', `/v1/books/${enc(id)}/history`, { query }),
      publish: (body) => this._command('POST', '/v1/books', body, (out) => `/v1/books/${out.id}`),
      revise: (id, patch) => this._command('PATCH', `/v1/books/${enc(id)}`, patch, `/v1/books/${enc(id)}`),
      withdraw: (id) => this.request('DELETE', `/v1/books/${enc(id)}`),
      relist: (id) => this._command('POST', `/v1/books/${enc(id)}/relist`, undefined, `/v1/books/${enc(id)}`),
      requestLoan: (id, body = {}) =>
        this._command('POST', `/v1/books/${enc(id)}/loans`, body, (out) => `/v1/loans/${out.id}`),
      lookupIsbn: (isbn) => this.request('GET', `/v1/isbn/${enc(isbn)}`),
    }
    const loanStep = (step, status) => (id, body) =>
      this._command('POST', `/v1/loans/${enc(id)}/${step}`, body, `/v1/loans/${enc(id)}`, (loan) => loan.status === status)
    this.loans = {
      get: (id) => this.request('GET', `/v1/loans/${enc(id)}`),
      approve: loanStep('approve', 'approved'),
      decline: loanStep('decline', 'declined'),
      cancel: loanStep('cancel', 'cancelled'),
      startReturn: loanStep('return', 'returning'),
      confirmReturn: loanStep('confirm-return', 'returned'),
    }
    this.conversations = {
      list: (query) => this.request('GET', '/v1/conversations', { query }),
      open: (peerId) =>
        this._command('POST', '/v1/conversations', { peer_id: peerId }, (out) => `/v1/conversations/${out.id}`),
      get: (id) => this.request('GET', `/v1/conversations/${enc(id)}`),
      messages: (id, query) => this.request('GET', `/v1/conversations/${enc(id)}/messages`, { query }),
      send: (id, body) => this.request('POST', `/v1/conversations/${enc(id)}/messages`, { body }),
      read: (id, upTo) => this.request('POST', `/v1/conversations/${enc(id)}/read`, { body: { up_to: upTo } }),
      hide: (id, messageId) =>
        this.request('POST', `/v1/conversations/${enc(id)}/messages/${enc(messageId)}/hide`),
    }
    this.inbox = {
      list: (query) => this.request('GET', '/v1/inbox', { query }),
    }
    this.rooms = {
      list: () => this.request('GET', '/v1/rooms'),
      messages: (name, query) => this.request('GET', `/v1/rooms/${enc(name)}/messages`, { query }),
    }
    this.media = {
      upload: (filePath, opts) => this.upload(filePath, opts),
      url: (id) => `${this.baseURL}/v1/media/${enc(id)}`,
      thumbURL: (id) => `${this.baseURL}/v1/media/${enc(id)}/thumb`,
    }
  }

  /** Subscribe to `login`, `logout`, `error` (a handler or storage failure). */
  on(name, handler) {
    return this.events.on(name, handler)
  }

  /** The session token, or null (after `ready()`). Never send it anywhere but this API. */
  get token() {
    return this._token
  }

  /** `{ id, nickname, avatar_url }` of the logged-in reader, or null (after `ready()`). */
  get reader() {
    return this._reader
  }

  /** Loads the stored session (token, reader) once; every call awaits it first. */
  ready() {
    if (!this._loaded) {
      this._loaded = (async () => {
        const session = await this.store.get('session')
        if (session && session.token && !this._token) {
          this._token = session.token
          this._expiresAt = session.expires_at || null
          this._reader = session.reader || null
        }
      })()
    }
    return this._loaded
  }

  /**
   * Logs in: `wx.login()` gives a one-time code, `POST /v1/auth/login` exchanges it for a
   * session token, kept in storage. Concurrent calls share one login.
   * `code` may be given instead of calling `wx.login` (e.g. `dev:<name>` outside production).
   * Resolves with `{ reader, expires_at }`; rejects with a LiudongError (401 `invalid_code`,
   * 403 `blocked_user`, 429, 503 `wechat_unavailable`, …).
   */
  login({ code } = {}) {
    if (!this._loginFlight) {
      this._loginFlight = (async () => {
        await this.ready()
        const loginCode = code || (await wxCall(this.wx.login.bind(this.wx))).code
        const out = await this.request('POST', '/v1/auth/login', { body: { code: loginCode }, auth: false })
        const previous = this._reader
        this._token = out.token
        this._expiresAt = out.expires_at
        this._reader = out.reader
        await this.store.set('session', { token: out.token, expires_at: out.expires_at, reader: out.reader })
        this.events.emit('login', { reader: out.reader, previous }, this._reportError)
        return { reader: out.reader, expires_at: out.expires_at }
      })().finally(() => {
        this._loginFlight = null
      })
    }
    return this._loginFlight
  }

  /** Ends this session on the server (its sockets close with 4401) and forgets it here. */
  async logout() {
    await this.ready()
    if (this._realtime) this._realtime.disconnect()
    if (this._token) {
      try {
        await this.request('POST', '/v1/auth/logout', { autoLogin: false, relogin: false })
      } catch (error) {
        if (!(error instanceof LiudongError) || error.status !== 401) throw error
      }
    }
    this._token = null
    this._reader = null
    this._expiresAt = null
    await this.store.set('session', null)
    this.events.emit('logout', {}, this._reportError)
  }

  /** Logs in again unless another call already replaced `staleToken`. */
  async _relogin(staleToken) {
    if (this._token && this._token !== staleToken) return
    await this.login()
  }

  /**
   * One API call. `path` starts with `/v1/…`; `query` values that are undefined or null
   * are left out; `body` is sent as JSON. Resolves with the parsed body (with `raw: true`,
   * `{ status, data, headers }`); rejects with a LiudongError.
   * Options: `auth` (default true; false sends no token), `idempotencyKey` (default: a new
   * one for an unsafe method), `headers`, `timeout` (ms), `retries`.
   */
  async request(method, path, opts = {}) {
    await this.ready()
    method = method.toUpperCase()
    const auth = opts.auth !== false
    // keys are scoped to the reader on the server: none for anonymous calls (login)
    const key = opts.idempotencyKey || (UNSAFE.has(method) && auth ? newId('k') : undefined)
    const retries = opts.retries ?? this.options.retries
    const url = this.baseURL + path + queryString(opts.query)
    let attempt = 0
    let relogged = opts.relogin === false
    for (;;) {
      if (auth && !this._token) {
        if (opts.autoLogin === false || !this.options.autoLogin) {
          throw new LiudongError(0, 'not_logged_in', 'Log in first (client.login()).')
        }
        await this.login()
      }
      const token = auth ? this._token : null
      const header = { Accept: 'application/json, application/problem+json', ...(opts.headers || {}) }
      if (token) header.Authorization = `Bearer ${token}`
      if (key) header['Idempotency-Key'] = key
      let response
      try {
        response = await this._send({ url, method, header, data: opts.body, timeout: opts.timeout })
      } catch (error) {
        if (attempt < retries) {
          attempt += 1
          await sleep(fullJitter(attempt, 250, 8000))
          continue
        }
        throw error
      }
      const { status, data, headers } = response
      if (status >= 200 && status < 300) {
        return opts.raw ? response : data
      }
      const code = data && typeof data === 'object' ? data.code : undefined
      const retryAfter = parseRetryAfter(headerOf(headers, 'Retry-After'))
      if (status === 401 && token && !relogged && RELOGIN_CODES.has(code)) {
        relogged = true
        await this._relogin(token)
        continue
      }
      const again = RETRY_STATUS.has(status) || (status === 409 && code === 'idempotency_in_progress')
      if (again && attempt < retries && (retryAfter === undefined || retryAfter <= this.options.maxRetryAfter)) {
        attempt += 1
        await sleep(retryAfter !== undefined ? retryAfter * 1000 : fullJitter(attempt, 250, 8000))
        continue
      }
      throw LiudongError.fromResponse(status, data, retryAfter)
    }
  }

  /**
   * A command whose answer is the resource (200/201), or 202 `Accepted` when a read model
   * was behind: then the resource at `readPath` is read (after 0.1, 0.2, 0.4 … s) until it
   * exists and `done(resource)` holds, for up to `acceptedTimeout` ms; after that the
   * `Accepted` body is returned as it is.
   */
  async _command(method, path, body, readPath, done = () => true) {
    const out = await this.request(method, path, { body })
    if (!out || out.status !== 'accepted') return out
    const target = typeof readPath === 'function' ? readPath(out) : readPath
    const deadline = Date.now() + this.options.acceptedTimeout
    for (let wait = 100; Date.now() < deadline; wait = Math.min(wait * 2, 1000)) {
      await sleep(wait)
      try {
        const resource = await this.request('GET', target)
        if (done(resource)) return resource
      } catch (error) {
        if (!(error instanceof LiudongError) || error.status !== 404) throw error
      }
    }
    return out
  }

  /** wx.request as a promise: `{ status, data, headers }`, or a LiudongError(0, …). */
  _send({ url, method, header, data, timeout }) {
    return new Promise((resolve, reject) => {
      const options = {
        url,
        method,
        header: data === undefined ? header : { 'Content-Type': 'application/json', ...header },
        timeout: timeout || this.options.timeout,
        dataType: 'json',
        responseType: 'text',
        success: (res) => {
          let body = res.data
          if (typeof body === 'string' && body !== '') {
            try {
              body = JSON.parse(body)
            } catch {
              // not JSON: keep the text (LiudongError.fromResponse quotes it)
            }
          }
          resolve({ status: res.statusCode, data: body, headers: res.header || {} })
        },
        fail: (err) => {
          const message = (err && err.errMsg) || String(err)
          const code = /timeout/i.test(message) ? 'timeout' : 'network_error'
          reject(new LiudongError(0, code, message, { cause: err }))
        },
      }
      if (data !== undefined) options.data = JSON.stringify(data)
      this.wx.request(options)
    })
  }

  /**
   * Uploads a picture from a local file path (`wx.chooseMedia` → `tempFilePath`) with
   * `wx.uploadFile` to `POST /v1/media` (multipart, part `file`; `purpose`: cover, avatar,
   * chat or room). JPEG, PNG, WebP or GIF; the server strips metadata (docs/MEDIA.md).
   * Resolves with the media `{ id, url, … }`; the same 401/429/503 handling as `request()`.
   */
  async upload(filePath, { purpose } = {}) {
    await this.ready()
    let relogged = false
    for (let attempt = 0; ; attempt += 1) {
      if (!this._token) await this.login()
      const token = this._token
      const res = await new Promise((resolve, reject) => {
        this.wx.uploadFile({
          url: `${this.baseURL}/v1/media`,
          filePath,
          name: 'file',
          header: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
          formData: purpose ? { purpose } : {},
          timeout: this.options.timeout * 4,
          success: resolve,
          fail: (err) => reject(new LiudongError(0, 'network_error', (err && err.errMsg) || String(err), { cause: err })),
        })
      })
      let body = res.data
      try {
        body = typeof body === 'string' ? JSON.parse(body) : body
      } catch {
        // keep the text
      }
      if (res.statusCode >= 200 && res.statusCode < 300) return body
      const code = body && body.code
      const retryAfter = parseRetryAfter(headerOf(res.header, 'Retry-After'))
      if (res.statusCode === 401 && !relogged && RELOGIN_CODES.has(code)) {
        relogged = true
        await this._relogin(token)
        continue
      }
      if ((res.statusCode === 429 || res.statusCode === 503) && attempt < this.options.retries && (retryAfter ?? 1) <= this.options.maxRetryAfter) {
        await sleep((retryAfter ?? 1) * 1000)
        continue
      }
      throw LiudongError.fromResponse(res.statusCode, body, retryAfter)
    }
  }

  /**
   * Asks the reader for subscribe-message permissions (`wx.requestSubscribeMessage`, which
   * must be called from a tap) and records one grant per accepted template
   * (`POST /v1/me/subscriptions`). Resolves with WeChat's answer per template id.
   */
  async _subscribe(templateIds) {
    if (typeof this.wx.requestSubscribeMessage !== 'function') {
      throw new LiudongError(0, 'unsupported', 'wx.requestSubscribeMessage is not available here.')
    }
    const answer = await wxCall(this.wx.requestSubscribeMessage.bind(this.wx), { tmplIds: templateIds })
    const grants = templateIds.filter((id) => answer[id] === 'accept').map((id) => ({ template_id: id, count: 1 }))
    if (grants.length) await this.me.grantSubscriptions(grants)
    return answer
  }

  /** The one realtime connection of this client (created on first use; `connect()` it). */
  get realtime() {
    if (!this._realtime) this._realtime = new Realtime(this, this.options.realtime || {})
    return this._realtime
  }

}

function enc(value) {
  return encodeURIComponent(String(value))
}

/** Creates a client; see LiudongClient and types/index.d.ts. */
export function createClient(options) {
  return new LiudongClient(options)
}
