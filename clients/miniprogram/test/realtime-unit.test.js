/**
 * client.realtime against a scripted socket (no server): what each close code leads to
 * (docs/REALTIME.md §7), resume URLs, re-sends with the same client_msg_id, duplicates
 * dropped, app hide/show. The live tests (live.test.js) cover the same paths end to end
 * where a real server can be made to take them.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { createClient, memoryStorage } from '../src/index.js'
import { waitFor } from './support/wx-node.js'

/** A wx whose sockets the test drives: `sockets[i].open()`, `.hello()`, `.serverClose(code)`. */
function fakeWx() {
  let logins = 0
  const sockets = []
  const listeners = { show: [], hide: [], net: [] }
  const wx = {
    sockets,
    get logins() {
      return logins
    },
    login({ success }) {
      logins += 1
      setTimeout(() => success({ code: `dev:x${logins}` }), 1)
    },
    request({ url, success }) {
      if (url.endsWith('/v1/auth/login')) {
        success({ statusCode: 200, header: {}, data: JSON.stringify({ token: `tok${logins}`, expires_at: '2030-01-01T00:00:00Z', reader: { id: 'r1', nickname: 'x', avatar_url: '' } }) })
      } else {
        success({ statusCode: 404, header: {}, data: JSON.stringify({ code: 'not_found', detail: 'no' }) })
      }
    },
    connectSocket({ url, header }) {
      const handlers = { open: [], message: [], close: [], error: [] }
      const socket = {
        url,
        header,
        sent: [],
        closedByClient: null,
        onOpen: (cb) => handlers.open.push(cb),
        onMessage: (cb) => handlers.message.push(cb),
        onClose: (cb) => handlers.close.push(cb),
        onError: (cb) => handlers.error.push(cb),
        send: ({ data }) => socket.sent.push(JSON.parse(data)),
        close: ({ code }) => {
          socket.closedByClient = code
          setTimeout(() => handlers.close.forEach((cb) => cb({ code, reason: '' })), 1)
        },
        frame: (frame) => handlers.message.forEach((cb) => cb({ data: JSON.stringify(frame) })),
        hello: (head = 0) => {
          handlers.open.forEach((cb) => cb({}))
          socket.frame({ type: 'hello', reader: { id: 'r1', nickname: 'x' }, head, heartbeat: 25, max_frame_bytes: 16384 })
        },
        serverClose: (code) => handlers.close.forEach((cb) => cb({ code, reason: '' })),
      }
      sockets.push(socket)
      return socket
    },
    onAppShow: (cb) => listeners.show.push(cb),
    onAppHide: (cb) => listeners.hide.push(cb),
    onNetworkStatusChange: (cb) => listeners.net.push(cb),
    show: () => listeners.show.forEach((cb) => cb({})),
    hide: () => listeners.hide.forEach((cb) => cb({})),
    network: (isConnected) => listeners.net.forEach((cb) => cb({ isConnected })),
  }
  return wx
}

function setup(realtime = {}) {
  const wx = fakeWx()
  const storage = memoryStorage()
  const client = createClient({ baseURL: 'https://api.test', wx, storage, realtime: { minDelay: 20, maxDelay: 40, ...realtime } })
  return { wx, storage, client, rt: client.realtime }
}

const event = (seq, text = `t${seq}`) => ({ type: 'event', seq, kind: 'chat.message', at: '2026-01-01T00:00:00Z', data: { text } })

test('events once each, in order; the last seq is stored and asked for on reconnect', async () => {
  const { wx, storage, rt } = setup()
  const seen = []
  rt.on('chat.message', (e) => seen.push(e.seq))
  const connected = rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  const first = wx.sockets[0]
  assert.equal(first.header.Authorization, 'Bearer tok1')
  assert.match(first.url, /^wss:\/\/api\.test\/v1\/ws\?after=0$/)
  first.hello(3)
  await connected
  for (const seq of [1, 2, 2, 1, 3]) first.frame(event(seq))
  assert.deepEqual(seen, [1, 2, 3])
  await waitFor(() => storage.getItem('liudong.lastSeq.r1') === '3')
  first.serverClose(1006)
  await waitFor(() => wx.sockets.length === 2, 2000, 'reconnect after 1006')
  assert.match(wx.sockets[1].url, /after=3$/)
  wx.sockets[1].hello(4)
  wx.sockets[1].frame(event(3))
  wx.sockets[1].frame(event(4))
  assert.deepEqual(seen, [1, 2, 3, 4])
  rt.destroy()
})

test('a send is re-sent with the same client_msg_id after a reconnect, resolved by its ack once', async () => {
  const { wx, rt } = setup()
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  await waitFor(() => rt.state === 'connected')
  const acked = rt.sendChat('c1', '你好')
  const frame = wx.sockets[0].sent.find((f) => f.type === 'chat.send')
  assert.equal(frame.text, '你好')
  assert.ok(frame.client_msg_id)
  wx.sockets[0].serverClose(1012) // no ack: the server restarted
  await waitFor(() => wx.sockets.length === 2, 2000)
  assert.equal(wx.sockets[1].sent.length, 0, 'nothing sent before hello')
  wx.sockets[1].hello()
  const again = wx.sockets[1].sent.find((f) => f.type === 'chat.send')
  assert.equal(again.client_msg_id, frame.client_msg_id)
  const ack = { type: 'ack', client_msg_id: frame.client_msg_id, conversation_id: 'c1', message_id: 'm1', seq: 5, created: false }
  wx.sockets[1].frame(ack)
  wx.sockets[1].frame(ack)
  assert.deepEqual(await acked, ack)
  assert.equal(rt.pending.length, 0)
  rt.destroy()
})

test('a refused send rejects with a LiudongError carrying the frame code', async () => {
  const { wx, rt } = setup()
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  const sending = rt.sendChat('c1', 'x')
  const { client_msg_id } = wx.sockets[0].sent.at(-1)
  wx.sockets[0].frame({ type: 'error', code: 'not_a_member', message: 'no', client_msg_id, frame: 'chat.send' })
  await assert.rejects(sending, { name: 'LiudongError', status: 0, code: 'not_a_member', frame: 'chat.send' })
  rt.destroy()
})

test('4401: a new login, then a connection with the new token', async () => {
  const { wx, rt, client } = setup({ minDelay: 60000, maxDelay: 60000 })
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  wx.sockets[0].frame({ type: 'error', code: 'session_ended', message: 'This session ended; log in again.' })
  wx.sockets[0].serverClose(4401)
  await waitFor(() => wx.sockets.length === 2, 2000, 'reconnect after re-login')
  assert.equal(wx.logins, 2)
  assert.equal(wx.sockets[1].header.Authorization, `Bearer ${client.token}`)
  assert.equal(client.token, 'tok2')
  rt.destroy()
})

test('4008 (slow consumer): reconnect at once, without the back-off', async () => {
  const { wx, rt } = setup({ minDelay: 60000, maxDelay: 60000 })
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  wx.sockets[0].serverClose(4008)
  await waitFor(() => wx.sockets.length === 2, 1000, 'immediate reconnect')
  rt.destroy()
})

for (const [code, reason] of [
  [4409, 'session_replaced'],
  [4000, 'replaced'],
  [4400, 'bad_request'],
  [1009, 'frame_too_large'],
]) {
  test(`${code}: stopped, no reconnect`, async () => {
    const { wx, rt } = setup({ minDelay: 1, maxDelay: 2 })
    const stopped = []
    rt.on('stopped', (why) => stopped.push(why))
    const connecting = rt.connect()
    await waitFor(() => wx.sockets.length === 1)
    wx.sockets[0].hello()
    await connecting
    wx.sockets[0].serverClose(code)
    assert.equal(rt.state, 'stopped')
    assert.deepEqual(stopped, [{ code, reason }])
    await new Promise((resolve) => setTimeout(resolve, 50)) // 25× the back-off cap
    assert.equal(wx.sockets.length, 1)
    rt.destroy()
  })
}

test('back-off: a random wait under a cap that doubles per failure, up to maxDelay; reset on hello', async () => {
  const { wx, rt } = setup({ minDelay: 10, maxDelay: 40, random: () => 0.999 })
  const delays = []
  rt.on('state', ({ delay }) => delay !== undefined && delays.push(delay))
  rt.connect()
  for (let i = 1; i <= 5; i += 1) {
    await waitFor(() => wx.sockets.length === i)
    wx.sockets[i - 1].serverClose(1006) // fails before hello: the attempt count grows
  }
  await waitFor(() => wx.sockets.length === 6)
  assert.deepEqual(delays, [9, 19, 39, 39, 39])
  wx.sockets[5].hello()
  assert.equal(rt.attempt, 0, 'reset on hello')
  wx.sockets[5].serverClose(1006)
  assert.equal(delays.at(-1), 9)
  rt.destroy()
})

test('app hidden: the socket is closed and nothing reconnects; shown: at once', async () => {
  const { wx, rt } = setup({ minDelay: 60000, maxDelay: 60000 })
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  wx.hide()
  assert.equal(wx.sockets[0].closedByClient, 1000)
  assert.equal(rt.state, 'disconnected')
  const queued = rt.sendChat('c1', 'while hidden')
  await new Promise((resolve) => setTimeout(resolve, 30))
  assert.equal(wx.sockets.length, 1)
  wx.show()
  await waitFor(() => wx.sockets.length === 2, 1000, 'reconnect on show')
  wx.sockets[1].hello()
  const sent = wx.sockets[1].sent.find((f) => f.type === 'chat.send')
  assert.equal(sent.text, 'while hidden')
  wx.sockets[1].frame({ type: 'ack', client_msg_id: sent.client_msg_id, seq: 1, created: true })
  await queued
  rt.destroy()
})

test('network back: reconnect at once instead of waiting out the back-off', async () => {
  const { wx, rt } = setup({ minDelay: 60000, maxDelay: 60000 })
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  wx.sockets[0].serverClose(1006) // the network went away
  rt.attempt = 5 // as after several failures: a long wait is scheduled
  await new Promise((resolve) => setTimeout(resolve, 20))
  const before = wx.sockets.length
  wx.network(true)
  await waitFor(() => wx.sockets.length === before + 1, 1000, 'reconnect when the network is back')
  rt.destroy()
})

test('rooms are joined again after a reconnect', async () => {
  const { wx, rt } = setup()
  rt.connect()
  await waitFor(() => wx.sockets.length === 1)
  wx.sockets[0].hello()
  const joined = rt.joinRoom('reading-club')
  wx.sockets[0].frame({ type: 'room.joined', room: 'reading-club', title: '读书会', members: 3 })
  assert.equal((await joined).members, 3)
  wx.sockets[0].serverClose(1001)
  await waitFor(() => wx.sockets.length === 2, 2000)
  wx.sockets[1].hello()
  assert.deepEqual(wx.sockets[1].sent[0], { type: 'room.join', room: 'reading-club' })
  rt.destroy()
})
