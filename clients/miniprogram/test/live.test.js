/**
 * The SDK against a real `liudong serve` (a child process; PostgreSQL and NATS real too),
 * through the Node `wx` adapter (test/support/wx-node.js):
 *
 * - login: wx.login → POST /v1/auth/login, the token kept in storage, the session reused;
 * - publish, request, approve: the loan request reaches the lender's socket live, the
 *   approval the borrower's;
 * - 100 chat messages while the receiver is away (app hidden): on show it resumes and gets
 *   each exactly once, in order;
 * - the server SIGKILLed and restarted mid-stream: every message acknowledged, received once,
 *   in order, stored once;
 * - a revoked session: the socket's 4401 and the REST 401 token_revoked end in a re-login;
 * - problem+json turned into LiudongError; a media upload through wx.uploadFile.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'

import WebSocket from 'ws'

import { LiudongError, memoryStorage, webAdapter } from '../src/index.js'
import { LiudongServer, startServices } from './support/server.js'
import { makeClient, waitFor } from './support/wx-node.js'

const HEARTBEAT = 2
let services
let server
const clients = []

before(async () => {
  services = await startServices()
  // pings every 2 s: a client that does not answer is closed (4012) after 3 s
  server = await LiudongServer.start(services, { LIUDONG_WS_HEARTBEAT: String(HEARTBEAT) })
})

after(async () => {
  for (const { client } of clients) client.realtime.destroy()
  if (server) await server.stop()
  if (services) await services.stop()
  console.error('# services stopped')
})

function reader(name, options) {
  const made = makeClient(server.url, `${name}-${randomUUID().slice(0, 8)}`, options)
  clients.push(made)
  return made
}

/** A valid ISBN-13 (978 prefix, random body, ISO 2108 check digit). */
function isbn13() {
  const digits = [9, 7, 8, ...Array.from({ length: 9 }, () => Math.floor(Math.random() * 10))]
  const sum = digits.reduce((acc, d, i) => acc + d * (i % 2 ? 3 : 1), 0)
  return [...digits, (10 - (sum % 10)) % 10].join('')
}

/** Collects the inbox events of one client, by kind. */
function collect(client, kind = '*') {
  const seen = []
  client.realtime.on(kind, (event) => seen.push(event))
  return seen
}

test('login keeps the session in storage; a new client on that storage reuses it', async () => {
  const { client, storage, wx } = reader('ana')
  const { reader: me } = await client.login()
  assert.match(me.id, /^[0-9a-f-]{36}$/)
  const session = JSON.parse(storage.getItem('liudong.session'))
  assert.equal(session.reader.id, me.id)
  assert.equal((await client.me.get()).id, me.id)

  const { createClient } = await import('../src/index.js')
  let logins = 0
  const again = createClient({ baseURL: server.url, wx: { ...wx, login: (o) => (logins++, wx.login(o)) }, storage })
  assert.equal((await again.me.get()).id, me.id)
  assert.equal(logins, 0, 'the stored token was used')
})

test('problem+json becomes a LiudongError with status, code and detail', async () => {
  const { client } = reader('bo')
  await assert.rejects(client.books.get(randomUUID()), (error) => {
    assert.ok(error instanceof LiudongError)
    assert.equal(error.status, 404)
    assert.equal(typeof error.code, 'string')
    assert.ok(error.detail.length > 0)
    return true
  })
  await assert.rejects(client.books.publish({ isbn: 'not an isbn' }), { status: 422 })
})

test('publish, request, approve: each side hears of it live', async () => {
  const lender = reader('lender')
  const borrower = reader('borrower')
  await Promise.all([lender.client.login(), borrower.client.login()])
  const lenderHears = collect(lender.client, 'loan.requested')
  const borrowerHears = collect(borrower.client, 'loan.approved')
  await Promise.all([lender.client.realtime.connect(), borrower.client.realtime.connect()])

  const book = await lender.client.books.publish({ isbn: isbn13(), title: '三体', tags: ['科幻'] })
  assert.equal(book.title, '三体')
  const loan = await borrower.client.books.requestLoan(book.id, { note: '想读', contact: { wechat_id: 'am1ng' } })
  assert.equal(loan.status, 'requested')

  const requested = await waitFor(() => lenderHears.find((e) => e.data.loan_id === loan.id), 15000, 'loan.requested')
  assert.equal(requested.data.book.title, '三体')
  assert.equal(requested.data.note, '想读')

  const approved = await lender.client.loans.approve(loan.id)
  assert.equal(approved.status, 'approved')
  const heard = await waitFor(() => borrowerHears.find((e) => e.data.loan_id === loan.id), 15000, 'loan.approved')
  assert.equal(heard.data.status, 'approved')
  assert.equal((await borrower.client.loans.get(loan.id)).status, 'approved')
})

test('100 messages while the receiver is away: resumed on show, each once, in order', async () => {
  const sender = reader('sender')
  const receiver = reader('receiver')
  const [, { reader: rec }] = await Promise.all([sender.client.login(), receiver.client.login()])
  const conversation = await sender.client.conversations.open(rec.id)
  const got = collect(receiver.client, 'chat.message')
  await Promise.all([sender.client.realtime.connect(), receiver.client.realtime.connect()])

  receiver.wx.appHide() // WeChat suspends the app: the SDK closes its socket and stays quiet
  await waitFor(() => receiver.client.realtime.state === 'disconnected', 5000, 'receiver quiet')
  const texts = Array.from({ length: 100 }, (_, i) => `离线消息 ${i}`)
  const acks = await Promise.all(texts.map((text) => sender.client.realtime.sendChat(conversation.id, text)))
  assert.ok(acks.every((ack) => ack.created === true))
  assert.equal(receiver.wx.sockets.size, 0, 'no socket while hidden')
  assert.equal(got.length, 0)

  const started = Date.now()
  receiver.wx.appShow()
  await waitFor(() => got.length >= 100, 20000, '100 messages')
  const resumeMs = Date.now() - started
  // nothing more arrives: the inbox has nothing after the last seq delivered
  const lastSeq = receiver.client.realtime.lastSeq
  const rest = await receiver.client.inbox.list({ after: lastSeq })
  assert.equal(rest.items.length, 0)
  assert.deepEqual(
    got.map((e) => e.data.text),
    texts,
  )
  const seqs = got.map((e) => e.seq)
  assert.ok(seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1), 'gap-free, increasing seq')
  console.log(`# resumed 100 messages in ${resumeMs} ms after app show`)
})

test('server SIGKILLed and restarted mid-stream: nothing lost, nothing twice', async () => {
  const sender = reader('k-sender')
  const receiver = reader('k-receiver')
  const [, { reader: rec }] = await Promise.all([sender.client.login(), receiver.client.login()])
  const conversation = await sender.client.conversations.open(rec.id)
  const got = collect(receiver.client, 'chat.message')
  await Promise.all([sender.client.realtime.connect(), receiver.client.realtime.connect()])

  const texts = Array.from({ length: 60 }, (_, i) => `崩溃 ${i}`)
  const acks = []
  const pause = () => new Promise((resolve) => setTimeout(resolve, 10))
  for (const text of texts.slice(0, 20)) {
    acks.push(sender.client.realtime.sendChat(conversation.id, text))
    await pause()
  }
  // a burst, and the kill while it is in flight (what the server recorded without answering
  // is sent again after the restart and acknowledged with created: false)
  let ackedBeforeKill = 0
  for (const text of texts.slice(20, 40)) {
    acks.push(sender.client.realtime.sendChat(conversation.id, text).then((ack) => ((ackedBeforeKill += 1), ack)))
  }
  await waitFor(() => ackedBeforeKill >= 1, 15000, 'the first ack of the burst') // the rest in flight
  await server.kill()
  const downAt = Date.now()
  const burstAckedBeforeKill = ackedBeforeKill
  for (const text of texts.slice(40)) {
    acks.push(sender.client.realtime.sendChat(conversation.id, text)) // queued while down
    await pause()
  }
  await server.start()
  const upAt = Date.now()
  const results = await Promise.all(acks)
  const ackedMs = Date.now() - upAt
  await waitFor(() => got.length >= texts.length, 30000, `${texts.length} messages after the restart`)
  assert.deepEqual(
    got.map((e) => e.data.text),
    texts,
  )
  assert.equal(new Set(results.map((a) => a.message_id)).size, texts.length, 'one message id per send')
  const stored = await receiver.client.conversations.messages(conversation.id, { limit: 100 })
  const storedTexts = stored.items.map((m) => m.text).sort()
  assert.deepEqual(storedTexts, [...texts].sort(), 'stored once each')
  console.log(
    `# server down ${upAt - downAt} ms; ${burstAckedBeforeKill} of the 20-message burst acknowledged ` +
      `before the kill; all ${texts.length} acks ${ackedMs} ms after it was ready; ` +
      `${results.filter((a) => a.created === false).length} acks were for retried sends (created: false)`,
  )
})

test('a revoked session ends in a re-login, for the socket and for REST', async () => {
  const { client, wx } = reader('revoked')
  let logins = 0
  const login = wx.login
  wx.login = (options) => {
    logins += 1
    login(options)
  }
  await client.login()
  const hears = collect(client, 'loan.requested')
  await client.realtime.connect()
  const first = client.token

  // the session is revoked elsewhere (here: logged out by another holder of the token)
  const out = await fetch(`${server.url}/v1/auth/logout`, { method: 'POST', headers: { Authorization: `Bearer ${first}` } })
  assert.equal(out.status, 204)
  await waitFor(() => client.token !== first && client.realtime.state === 'connected', 15000, 're-login and reconnect')
  assert.equal(logins, 2)

  // the new session works for the socket: a loan request still arrives live
  const other = reader('revoker')
  const book = await client.books.publish({ isbn: isbn13(), title: '活着' })
  const loan = await other.client.books.requestLoan(book.id, {})
  await waitFor(() => hears.find((e) => e.data.loan_id === loan.id), 15000, 'loan.requested after re-login')

  // REST: revoked again → 401 token_revoked → one re-login and the call succeeds
  client.realtime.disconnect()
  const second = client.token
  const again = await fetch(`${server.url}/v1/auth/logout`, { method: 'POST', headers: { Authorization: `Bearer ${second}` } })
  assert.equal(again.status, 204)
  const me = await client.me.get()
  assert.equal(me.id, client.reader.id)
  assert.notEqual(client.token, second)
  assert.equal(logins, 3)
})

test('a picture uploaded through wx.uploadFile', async () => {
  const { client } = reader('pic')
  // a 1×1 PNG
  const png = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
    'base64',
  )
  const file = path.join(os.tmpdir(), `liudong-sdk-${randomUUID()}.png`)
  await writeFile(file, png)
  const media = await client.media.upload(file, { purpose: 'chat' })
  assert.ok(media.id)
  const res = await fetch(client.media.url(media.id))
  assert.equal(res.status, 200)
})

test('the heartbeat is answered: one socket stays up across several server pings', async () => {
  const { client, wx } = reader('beat')
  let hellos = 0
  client.realtime.on('hello', () => (hellos += 1))
  await client.realtime.connect()
  assert.equal(client.realtime.heartbeat, HEARTBEAT)
  // unanswered, the server closes a socket with 4012 after 1.5 × 2 s
  await waitFor(() => wx.pings >= 3, 15000, 'three server pings')
  assert.equal(client.realtime.state, 'connected')
  assert.equal(hellos, 1, 'never reconnected')
})

test('an app restarted with the same storage resumes after its last seq, nothing twice', async () => {
  const storage = memoryStorage()
  const name = `restart-${randomUUID().slice(0, 8)}`
  const first = makeClient(server.url, name, { storage })
  const peer = reader('restart-peer')
  const [{ reader: me }] = await Promise.all([first.client.login(), peer.client.login()])
  const conversation = await peer.client.conversations.open(me.id)
  const before = collect(first.client, 'chat.message')
  await Promise.all([first.client.realtime.connect(), peer.client.realtime.connect()])
  await peer.client.realtime.sendChat(conversation.id, '关闭之前')
  await waitFor(() => before.length === 1, 15000, 'the first message')
  first.client.realtime.destroy() // the app is killed
  const sentWhileClosed = ['关闭时 1', '关闭时 2', '关闭时 3']
  for (const text of sentWhileClosed) await peer.client.realtime.sendChat(conversation.id, text)

  const second = makeClient(server.url, name, { storage }) // a new process, the same storage
  clients.push(second)
  const after = collect(second.client, 'chat.message')
  await second.client.realtime.connect()
  assert.equal(second.client.reader.id, me.id, 'the stored session')
  await waitFor(() => after.length >= 3, 15000, 'the three missed messages')
  assert.match(second.wx.urls[0], /after=\d+$/)
  const rest = await second.client.inbox.list({ after: second.client.realtime.lastSeq })
  assert.equal(rest.items.length, 0)
  assert.deepEqual(
    after.map((e) => e.data.text),
    sentWhileClosed,
  )
})

test('a socket without headers (a browser) connects with a single-use ticket, never the token', async () => {
  const name = `ticket-${randomUUID().slice(0, 8)}`
  const urls = []
  const wx = webAdapter({
    login: () => `dev:${name}`,
    WebSocket: class extends WebSocket {
      constructor(url) {
        urls.push(url)
        super(url)
      }
    },
  })
  assert.equal(wx.socketAuth, 'ticket')
  const { client } = reader('ticket', { wx })
  const heard = collect(client, 'loan.requested')
  await client.realtime.connect()
  assert.match(urls[0], /\/v1\/ws\?ticket=lt_[^&]+&after=0$/)
  assert.ok(!urls[0].includes(client.token))
  const other = reader('ticket-peer')
  const book = await client.books.publish({ isbn: isbn13(), title: '围城' })
  const loan = await other.client.books.requestLoan(book.id, {})
  await waitFor(() => heard.find((e) => e.data.loan_id === loan.id), 15000, 'loan.requested over the ticket socket')
})

test('network lost then back: reconnects at once, not after the back-off, and catches up', async () => {
  // back-off of at least minutes: only the network event can bring it back within the test
  const away = reader('net', { realtime: { minDelay: 120000, maxDelay: 120000 } })
  const peer = reader('net-peer')
  const [{ reader: me }] = await Promise.all([away.client.login(), peer.client.login()])
  const conversation = await peer.client.conversations.open(me.id)
  const got = collect(away.client, 'chat.message')
  await Promise.all([away.client.realtime.connect(), peer.client.realtime.connect()])
  away.wx.goOffline()
  await waitFor(() => away.client.realtime.state === 'connecting', 5000, 'the loss noticed')
  await peer.client.realtime.sendChat(conversation.id, '断网时')
  const started = Date.now()
  away.wx.goOnline()
  await waitFor(() => got.length === 1, 10000, 'the message sent while offline')
  assert.equal(got[0].data.text, '断网时')
  assert.ok(Date.now() - started < 10000)
})
