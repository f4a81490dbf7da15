/**
 * `client.realtime`: the one `/v1/ws` socket of a client (docs/REALTIME.md is the protocol).
 *
 * States (`state`, and the `state` event):
 *
 *     disconnected ──connect()──▶ connecting ──hello──▶ connected
 *          ▲                        │   ▲                  │
 *          │ disconnect(),          │   └── back-off ◀─────┤ socket closed (1006, 1001,
 *          │ app hidden,            ▼       (full jitter)  │ 1011, 1012, 1013, 4012, …)
 *          └──────────────── stopped ◀── 4409, 4000, 4400, 1009: a reason not to retry
 *
 * - **Inbox events** (`event` frames) reach `on(kind, handler)` (and `on('*')`) once each,
 *   in `seq` order: an event at or below the last `seq` is dropped. The last `seq` is kept
 *   in storage per reader; every (re)connect asks the server to replay what came after it
 *   (`?after=`), so an app that was away, killed or offline misses nothing.
 * - **Sends** (`sendChat`, `sendRoom`, `send`): each message gets a `client_msg_id`, is
 *   sent when connected and re-sent after every reconnect (and after `ackTimeout` without an
 *   `ack`) until its `ack`; the server records a repeated `client_msg_id` once and answers
 *   `created: false`, so nothing is duplicated. A refusal (`error` frame with the message's
 *   `client_msg_id`, e.g. `not_a_member`) rejects the promise with a LiudongError(0, code).
 * - **Heartbeat**: the server pings every `hello.heartbeat` s and the SDK answers `pong`;
 *   a socket silent for 2 heartbeats (+5 s) is deemed dead and replaced. On app show the
 *   SDK reconnects at once if needed.
 * - **Reconnect**: back-off with full jitter, from `minDelay` (1 s) doubling to `maxDelay`
 *   (30 s), reset on `hello`; at once after 4008 (slow consumer), on `wx.onAppShow` and when
 *   the network comes back; nothing while the app is hidden (`wx.onAppHide` closes the socket
 *   quietly: WeChat suspends a hidden mini-program after ~5 s).
 * - **Close codes**: 4401 (token refused or `session_ended`) → log in again, then
 *   reconnect; 4409 `session_replaced` (another device logged in, single-device mode),
 *   4000 (too many sockets), 4400 (bad URL), 1009 (frame too large) → `stopped`, no retry.
 * - **Rooms** joined with `joinRoom` are joined again after each reconnect (membership
 *   belongs to a socket).
 */
import { LiudongError } from './errors.js'
import { Emitter, fullJitter, newId } from './util.js'

const STOP_CODES = {
  4000: 'replaced',
  4400: 'bad_request',
  4409: 'session_replaced',
  1009: 'frame_too_large',
}

export class Realtime {
  constructor(client, options = {}) {
    this.client = client
    this.wx = client.wx
    this.options = {
      minDelay: 1000,
      maxDelay: 30000,
      ackTimeout: 10000,
      pongTimeout: 10000,
      connectTimeout: 15000,
      auth: client.wx.socketAuth || 'header', // 'ticket' where a socket cannot carry headers (browsers)
      start: 'all', // without a stored seq: 'all' replays the whole inbox, 'head' starts at the newest
      lifecycle: true, // follow wx.onAppShow / onAppHide / onNetworkStatusChange
      random: Math.random, // the jitter's source (tests fix it)
      ...options,
    }
    this.state = 'disconnected'
    this.lastSeq = null
    this.head = null
    this.heartbeat = null
    this.attempt = 0
    this.nextDelay = null
    this._events = new Emitter()
    this._want = false // the app wants a socket (connect() called, disconnect() not)
    this._hidden = false
    this._task = null
    this._generation = 0
    this._timer = null
    this._watchdog = null
    this._pending = new Map() // client_msg_id → { frame, resolve, reject, sentOn, timer }
    this._queries = new Map() // client_msg_id → { resolve, reject }
    this._rooms = new Map() // room → { waiters: [] }
    this._lastError = null
    this._lifecycleBound = false
    this._connectedOnce = null
    this._onShow = () => this._appShown()
    this._onHide = () => this._appHidden()
    this._onNetwork = (res) => {
      if (res && res.isConnected) this._reconnectNow('network')
    }
  }

  /**
   * Subscribe. `name` is an inbox `kind` (`loan.requested`, `chat.message`, …, or `*` for
   * all), a server frame type (`room.message`, `room.presence`, `presence`, `hello`,
   * `error`), or a lifecycle event: `state` (`{ state, code?, reason?, delay? }`: `delay`
   * is the wait in ms before the next attempt), `resync`
   * (the inbox was rebuilt: reload from `GET /v1/inbox`), `stopped` (`{ code, reason }`).
   * Returns the function that unsubscribes.
   */
  on(name, handler) {
    return this._events.on(name, handler)
  }

  /**
   * Opens the socket (and keeps it open until `disconnect()`); resolves at the first
   * `hello` of this call, rejects with a LiudongError if the realtime stops before.
   */
  connect() {
    this._want = true
    this._bindLifecycle()
    if (this.state === 'connected') return Promise.resolve()
    const waiting = new Promise((resolve, reject) => {
      const offs = [
        this.on('state', ({ state, code, reason }) => {
          if (state === 'connected') done(resolve)
          if (state === 'stopped') done(() => reject(new LiudongError(0, 'stopped', reason || `closed ${code}`)))
        }),
      ]
      const done = (fn) => {
        offs.forEach((off) => off())
        fn()
      }
    })
    if (this.state === 'disconnected' || this.state === 'stopped') {
      this.attempt = 0
      this._open()
    }
    return waiting
  }

  /** Closes the socket and stays quiet; pending sends wait for the next `connect()`. */
  disconnect() {
    this._want = false
    clearTimeout(this._timer)
    this._closeTask(1000, 'client disconnect')
    this._setState('disconnected')
  }

  /**
   * Sends a chat message (`chat.send`) and resolves with its `ack`
   * (`{ message_id, seq, at, created, conversation_id, client_msg_id }`).
   * `extra` may add fields the server knows (e.g. `media_id`).
   */
  sendChat(conversationId, text, extra = {}) {
    return this.send({ type: 'chat.send', conversation_id: conversationId, text, ...extra })
  }

  /** Sends `text` to a room you joined (`room.send`); resolves with its `ack`. */
  sendRoom(room, text, extra = {}) {
    return this.send({ type: 'room.send', room, text, ...extra })
  }

  /**
   * Sends a frame that is answered with an `ack` (`chat.send`, `room.send`, `read`),
   * adding a `client_msg_id` when it has none; retried until acknowledged (see above).
   */
  send(frame) {
    const message = { ...frame, client_msg_id: frame.client_msg_id || newId('m') }
    const id = message.client_msg_id
    const existing = this._pending.get(id)
    if (existing) return existing.promise
    let entry
    const promise = new Promise((resolve, reject) => {
      entry = { frame: message, resolve, reject, sentOn: -1, timer: null }
    })
    entry.promise = promise
    this._pending.set(id, entry)
    if (this.state === 'connected') this._transmit(entry)
    return promise
  }

  /** Marks a conversation read up to `upTo` (`read` with a client_msg_id: acked). */
  read(conversationId, upTo) {
    return this.send({ type: 'read', conversation_id: conversationId, up_to: upTo })
  }

  /**
   * Joins a room; resolves with `room.joined` (`{ room, title, members }`). The room is
   * joined again after every reconnect until `leaveRoom`.
   */
  joinRoom(room) {
    let entry = this._rooms.get(room)
    if (!entry) this._rooms.set(room, (entry = { waiters: [] }))
    const joined = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }))
    if (this.state === 'connected') this._raw({ type: 'room.join', room })
    return joined
  }

  /** Leaves a room (no longer re-joined). */
  leaveRoom(room) {
    const entry = this._rooms.get(room)
    this._rooms.delete(room)
    if (entry) entry.waiters.forEach((w) => w.reject(new LiudongError(0, 'left', `left ${room}`)))
    if (this.state === 'connected') this._raw({ type: 'room.leave', room })
  }

  /** `presence.query` for up to 100 reader ids; resolves with the `presence.state` frame. */
  queryPresence(readerIds) {
    const id = newId('p')
    return new Promise((resolve, reject) => {
      if (this.state !== 'connected') {
        reject(new LiudongError(0, 'not_connected', 'The realtime socket is not connected.'))
        return
      }
      this._queries.set(id, { resolve, reject })
      this._raw({ type: 'presence.query', reader_ids: readerIds, client_msg_id: id })
    })
  }

  /** Messages sent but not yet acknowledged, oldest first. */
  get pending() {
    return [...this._pending.values()].map((entry) => entry.frame)
  }

  // -- the connection ------------------------------------------------------------------

  async _open() {
    clearTimeout(this._timer)
    if (!this._want || this._hidden) return
    const generation = ++this._generation
    this._setState('connecting')
    let url
    const header = {}
    try {
      await this.client.ready()
      if (!this.client.token) await this.client.login()
      await this._loadSeq()
      const after = this.lastSeq === null ? (this.options.start === 'all' ? 0 : null) : this.lastSeq
      const wsBase = this.client.baseURL.replace(/^http/, 'ws') + '/v1/ws'
      const params = []
      if (this.options.auth === 'ticket') {
        const ticket = await this.client.request('POST', '/v1/ws/tickets')
        params.push(`ticket=${encodeURIComponent(ticket.ticket)}`)
      } else {
        header.Authorization = `Bearer ${this.client.token}`
      }
      if (after !== null) params.push(`after=${after}`)
      url = wsBase + (params.length ? `?${params.join('&')}` : '')
    } catch (error) {
      if (generation !== this._generation) return
      this.client._reportError(error, 'realtime.connect')
      this._scheduleReconnect(null)
      return
    }
    if (generation !== this._generation || !this._want || this._hidden) return
    const task = this.wx.connectSocket({ url, header, timeout: this.options.connectTimeout })
    this._task = task
    let closed = false
    const onClosed = (code, reason) => {
      if (closed || generation !== this._generation) return
      closed = true
      this._closed(code, reason)
    }
    task.onMessage(({ data }) => {
      if (generation === this._generation) this._frame(data)
    })
    task.onClose((res) => onClosed(res && res.code, res && res.reason))
    task.onError((err) => {
      // WeChat may report an error without a close: treat it as one (code 1006)
      onClosed(1006, (err && err.errMsg) || 'socket error')
    })
    this._armWatchdog(this.options.connectTimeout + 5000)
  }

  _frame(text) {
    let frame
    try {
      frame = JSON.parse(text)
    } catch {
      return
    }
    this._armWatchdog()
    switch (frame.type) {
      case 'hello':
        return this._hello(frame)
      case 'event':
        return this._event(frame)
      case 'ping':
        return this._raw({ type: 'pong' })
      case 'pong':
        return undefined
      case 'ack':
        return this._ack(frame)
      case 'error':
        return this._error(frame)
      case 'room.joined': {
        const entry = this._rooms.get(frame.room)
        if (entry) entry.waiters.splice(0).forEach((w) => w.resolve(frame))
        return this._events.emit('room.joined', frame, this.client._reportError)
      }
      case 'presence.state': {
        const query = this._queries.get(frame.client_msg_id)
        this._queries.delete(frame.client_msg_id)
        if (query) query.resolve(frame)
        return this._events.emit('presence.state', frame, this.client._reportError)
      }
      default:
        return this._events.emit(frame.type, frame, this.client._reportError)
    }
  }

  _hello(frame) {
    this.attempt = 0
    this.heartbeat = frame.heartbeat || 25
    this.head = frame.head
    if (this.lastSeq === null) this._storeSeq(this.options.start === 'all' ? 0 : frame.head)
    this._armWatchdog()
    this._setState('connected')
    this._events.emit('hello', frame, this.client._reportError)
    for (const room of this._rooms.keys()) this._raw({ type: 'room.join', room })
    for (const entry of this._pending.values()) this._transmit(entry)
  }

  _event(frame) {
    if (typeof frame.seq !== 'number') return
    if (this.lastSeq !== null && frame.seq <= this.lastSeq) return // seen: once each
    this.lastSeq = frame.seq
    this._events.emit(frame.kind, frame, this.client._reportError)
    this._events.emit('*', frame, this.client._reportError)
    // stored once the handlers have run: an app killed in a handler gets the event again
    this._storeSeq(frame.seq)
  }

  _ack(frame) {
    const entry = this._pending.get(frame.client_msg_id)
    if (!entry) return
    clearTimeout(entry.timer)
    this._pending.delete(frame.client_msg_id)
    entry.resolve(frame)
  }

  _error(frame) {
    this._lastError = frame.code
    const id = frame.client_msg_id
    if (id && this._pending.has(id)) {
      const entry = this._pending.get(id)
      clearTimeout(entry.timer)
      if (frame.code === 'rate_limited') {
        // not handled: send it again once the limit lets one through
        entry.sentOn = -1
        entry.timer = setTimeout(() => this._transmit(entry), (frame.retry_after || 1) * 1000)
        return
      }
      this._pending.delete(id)
      entry.reject(new LiudongError(0, frame.code, frame.message || '', { frame: frame.frame, retryAfter: frame.retry_after }))
      return
    }
    if (id && this._queries.has(id)) {
      const query = this._queries.get(id)
      this._queries.delete(id)
      query.reject(new LiudongError(0, frame.code, frame.message || '', { frame: frame.frame }))
      return
    }
    if (frame.code === 'after_beyond_head') {
      // the inbox was rebuilt and renumbered: continue from the head, tell the app
      this._storeSeq(this.head || 0)
      this._events.emit('resync', frame, this.client._reportError)
    }
    if ((frame.code === 'room_not_found' || frame.code === 'not_in_room') && frame.room) {
      const entry = this._rooms.get(frame.room)
      this._rooms.delete(frame.room)
      if (entry) entry.waiters.forEach((w) => w.reject(new LiudongError(0, frame.code, frame.message || '')))
    }
    this._events.emit('error', frame, this.client._reportError)
  }

  _transmit(entry) {
    if (this.state !== 'connected') return
    entry.sentOn = this._generation
    clearTimeout(entry.timer)
    this._raw(entry.frame)
    entry.timer = setTimeout(() => {
      // no ack in time on this socket: send again (the server deduplicates)
      if (this._pending.get(entry.frame.client_msg_id) === entry) this._transmit(entry)
    }, this.options.ackTimeout)
  }

  _raw(frame) {
    const task = this._task
    if (!task) return
    task.send({
      data: JSON.stringify(frame),
      fail: () => {
        // the socket is going away; its close event reconnects and sends again
      },
    })
  }

  _closed(code, reason) {
    this._task = null
    clearTimeout(this._watchdog)
    for (const entry of this._pending.values()) clearTimeout(entry.timer)
    for (const query of this._queries.values()) {
      query.reject(new LiudongError(0, 'disconnected', 'The socket closed before the answer.'))
    }
    this._queries.clear()
    if (!this._want || this._hidden) {
      this._setState('disconnected', code, reason)
      return
    }
    if (STOP_CODES[code]) {
      this._stop(code, reason || STOP_CODES[code])
      return
    }
    this._setState('connecting', code, reason)
    const lastError = this._lastError
    this._lastError = null
    if (code === 4401 && lastError !== 'invalid_ticket') {
      // token refused or session ended: log in again, then connect (back-off if it fails)
      const stale = this.client.token
      this.client
        ._relogin(stale)
        .then(() => this._scheduleReconnect(code, this.attempt === 0 ? 0 : undefined))
        .catch((error) => {
          this.client._reportError(error, 'realtime.relogin')
          this._scheduleReconnect(code)
        })
      return
    }
    this._scheduleReconnect(code, code === 4008 ? 0 : undefined)
  }

  _stop(code, reason) {
    this._want = false
    this._setState('stopped', code, reason)
    this._events.emit('stopped', { code, reason }, this.client._reportError)
  }

  _scheduleReconnect(code, delay) {
    clearTimeout(this._timer)
    if (!this._want || this._hidden) return
    const wait =
      delay !== undefined ? delay : fullJitter(this.attempt, this.options.minDelay, this.options.maxDelay, this.options.random)
    this.attempt += 1
    this.nextDelay = wait
    this._setState('connecting', code, undefined, wait)
    this._timer = setTimeout(() => this._open(), wait)
  }

  _reconnectNow(why) {
    if (!this._want || this._hidden) return
    if (this.state === 'connected') {
      this._probe()
      return
    }
    if (this._task) return // a connection attempt is under way
    this.attempt = 0
    this._open()
  }

  /** A ping that must be answered within `pongTimeout`, else the socket is replaced. */
  _probe() {
    this._raw({ type: 'ping' })
    this._armWatchdog(this.options.pongTimeout)
  }

  _armWatchdog(ms) {
    clearTimeout(this._watchdog)
    const wait = ms !== undefined ? ms : (this.heartbeat || 25) * 2000 + 5000
    const generation = this._generation
    this._watchdog = setTimeout(() => {
      if (generation !== this._generation || !this._task) return
      // nothing heard: the socket is dead without knowing it
      this._closeTask(1000, 'client heartbeat timeout')
      this._closed(1006, 'heartbeat timeout')
    }, wait)
  }

  _closeTask(code, reason) {
    const task = this._task
    this._task = null
    this._generation += 1 // ignore whatever the old socket still reports
    clearTimeout(this._watchdog)
    if (task) {
      try {
        task.close({ code, reason })
      } catch {
        // already closed
      }
    }
  }

  _appHidden() {
    this._hidden = true
    clearTimeout(this._timer)
    if (this._task) this._closeTask(1000, 'app hidden')
    if (this._want) this._setState('disconnected', 1000, 'app hidden')
  }

  _appShown() {
    const wasHidden = this._hidden
    this._hidden = false
    if (!this._want) return
    if (wasHidden || this.state !== 'connected') {
      this.attempt = 0
      if (!this._task) this._open()
    } else {
      this._probe()
    }
  }

  _bindLifecycle() {
    if (this._lifecycleBound || !this.options.lifecycle) return
    this._lifecycleBound = true
    if (typeof this.wx.onAppShow === 'function') this.wx.onAppShow(this._onShow)
    if (typeof this.wx.onAppHide === 'function') this.wx.onAppHide(this._onHide)
    if (typeof this.wx.onNetworkStatusChange === 'function') this.wx.onNetworkStatusChange(this._onNetwork)
  }

  /** Stops listening to app and network events (a page that owned the client unloads). */
  destroy() {
    this.disconnect()
    if (!this._lifecycleBound) return
    this._lifecycleBound = false
    if (typeof this.wx.offAppShow === 'function') this.wx.offAppShow(this._onShow)
    if (typeof this.wx.offAppHide === 'function') this.wx.offAppHide(this._onHide)
    if (typeof this.wx.offNetworkStatusChange === 'function') this.wx.offNetworkStatusChange(this._onNetwork)
  }

  _setState(state, code, reason, delay) {
    if (this.state === state && code === undefined && delay === undefined) return
    this.state = state
    this._events.emit('state', { state, code, reason, delay }, this.client._reportError)
  }

  // -- the last seq, per reader ----------------------------------------------------------

  _seqKey() {
    const reader = this.client.reader
    return `lastSeq.${reader ? reader.id : 'anonymous'}`
  }

  async _loadSeq() {
    const key = this._seqKey()
    if (this._seqLoadedFor === key) return
    const stored = await this.client.store.get(key)
    this._seqLoadedFor = key
    this.lastSeq = typeof stored === 'number' ? stored : null
  }

  _storeSeq(seq) {
    this.lastSeq = seq
    this.client.store.set(this._seqKey(), seq).catch((error) => this.client._reportError(error, 'storage'))
  }
}


