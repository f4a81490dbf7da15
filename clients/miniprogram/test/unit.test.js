/**
 * The REST core against a scripted `wx` (no server): the branches a live server rarely takes
 * on demand: Retry-After on 429/503, one Idempotency-Key across retries, 202 accepted then
 * the resource read back, one re-login on 401 token_expired, problem+json → LiudongError,
 * and the back-off's bounds.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { createClient, fullJitter, LiudongError, memoryStorage, parseRetryAfter } from '../src/index.js'

/** A wx whose request() answers from `script` (a function of the call), recording calls. */
function scriptedWx(script) {
  const calls = []
  let logins = 0
  return {
    calls,
    get logins() {
      return logins
    },
    login({ success }) {
      logins += 1
      setTimeout(() => success({ code: `dev:code${logins}` }), 1)
    },
    request(options) {
      const call = { ...options, body: options.data ? JSON.parse(options.data) : undefined }
      calls.push(call)
      Promise.resolve(script(call, calls.length)).then((res) =>
        res.fail
          ? options.fail({ errMsg: res.fail })
          : options.success({ statusCode: res.status, data: JSON.stringify(res.body ?? ''), header: res.header || {} }),
      )
    },
  }
}

const loginAnswer = (n) => ({
  status: 200,
  body: { token: `tok${n}`, expires_at: '2030-01-01T00:00:00Z', reader: { id: 'r1', nickname: 'x', avatar_url: '' } },
})

function routed(handlers) {
  let logins = 0
  return (call, n) => {
    if (call.url.endsWith('/v1/auth/login')) return loginAnswer(++logins)
    return handlers(call, n)
  }
}

test('Retry-After on 429 and 503 is waited, with the same Idempotency-Key each time', async () => {
  let attempts = 0
  const wx = scriptedWx(
    routed(() => {
      attempts += 1
      if (attempts === 1) return { status: 429, header: { 'retry-after': '0.2' }, body: { code: 'rate_limited', detail: 'slow', status: 429, title: 't', type: 'about:blank' } }
      if (attempts === 2) return { status: 503, header: { 'Retry-After': '0.1' }, body: { code: 'database_unavailable', detail: 'x' } }
      return { status: 201, body: { id: 'b1', title: 'ok' } }
    }),
  )
  const client = createClient({ baseURL: 'http://api.test/', wx, storage: memoryStorage() })
  const started = Date.now()
  const out = await client.books.publish({ isbn: '9787020002207' })
  const elapsed = Date.now() - started
  assert.deepEqual(out, { id: 'b1', title: 'ok' })
  const posts = wx.calls.filter((c) => c.url === 'http://api.test/v1/books')
  assert.equal(posts.length, 3)
  const keys = new Set(posts.map((c) => c.header['Idempotency-Key']))
  assert.equal(keys.size, 1, 'one key for one logical call')
  assert.ok([...keys][0].length <= 64)
  assert.ok(elapsed >= 280, `waited Retry-After (0.2 + 0.1 s), took ${elapsed} ms`)
  assert.equal(posts[0].header.Authorization, 'Bearer tok1', 'logged in on first use')
  // a second call is a new logical call: a new key
  await client.books.publish({ isbn: '9787020002207' })
  const last = wx.calls.at(-1)
  assert.notEqual(last.header['Idempotency-Key'], [...keys][0])
})

test('a Retry-After longer than maxRetryAfter is not waited: the error is thrown', async () => {
  const wx = scriptedWx(routed(() => ({ status: 429, header: { 'Retry-After': '3600' }, body: { code: 'rate_limited', detail: 'later' } })))
  const client = createClient({ baseURL: 'http://api.test', wx, storage: memoryStorage(), maxRetryAfter: 30 })
  await assert.rejects(client.books.search({ q: 'x' }), (error) => {
    assert.ok(error instanceof LiudongError)
    assert.equal(error.status, 429)
    assert.equal(error.code, 'rate_limited')
    assert.equal(error.retryAfter, 3600)
    return true
  })
})

test('401 token_expired: one re-login, then the call again; a second 401 is thrown', async () => {
  let n = 0
  const wx = scriptedWx(
    routed((call) => {
      n += 1
      if (call.header.Authorization === 'Bearer tok1') return { status: 401, body: { code: 'token_expired', detail: 'expired' } }
      if (n >= 3) return { status: 401, body: { code: 'token_revoked', detail: 'revoked' } }
      return { status: 200, body: { id: 'r1' } }
    }),
  )
  const storage = memoryStorage()
  const client = createClient({ baseURL: 'http://api.test', wx, storage })
  assert.deepEqual(await client.me.get(), { id: 'r1' })
  assert.equal(wx.logins, 2, 'logged in, then once more after token_expired')
  assert.equal(client.token, 'tok2')
  assert.equal(JSON.parse(storage.getItem('liudong.session')).token, 'tok2')
  // n = 3: revoked again after the re-login: re-login once more, then the 401 is thrown
  await assert.rejects(client.me.get(), { name: 'LiudongError', status: 401, code: 'token_revoked' })
  assert.equal(wx.logins, 3)
})

test('401 invalid_token is not retried with a new login', async () => {
  const wx = scriptedWx(routed(() => ({ status: 401, body: { code: 'invalid_token', detail: 'no' } })))
  const client = createClient({ baseURL: 'http://api.test', wx, storage: memoryStorage() })
  await assert.rejects(client.me.get(), { status: 401, code: 'invalid_token' })
  assert.equal(wx.logins, 1)
})

test('202 accepted: the helper reads the loan until it shows the change', async () => {
  let reads = 0
  const wx = scriptedWx(
    routed((call) => {
      if (call.method === 'POST') return { status: 202, body: { id: 'l1', position: 7, status: 'accepted' } }
      reads += 1
      return { status: 200, body: { id: 'l1', status: reads < 3 ? 'requested' : 'approved' } }
    }),
  )
  const client = createClient({ baseURL: 'http://api.test', wx, storage: memoryStorage() })
  const loan = await client.loans.approve('l1')
  assert.deepEqual(loan, { id: 'l1', status: 'approved' })
  assert.equal(reads, 3)
  // request() itself returns the Accepted body
  const raw = await client.request('POST', '/v1/loans/l1/approve', { raw: true })
  assert.equal(raw.status, 202)
  assert.equal(raw.data.status, 'accepted')
})

test('a lost connection is retried with the same key, then reported as network_error', async () => {
  const wx = scriptedWx(routed(() => ({ fail: 'request:fail connection refused' })))
  const client = createClient({ baseURL: 'http://api.test', wx, storage: memoryStorage(), retries: 2 })
  await client.login()
  await assert.rejects(client.books.publish({ isbn: '9787020002207' }), { status: 0, code: 'network_error' })
  const posts = wx.calls.filter((c) => c.url.endsWith('/v1/books'))
  assert.equal(posts.length, 3)
  assert.equal(new Set(posts.map((c) => c.header['Idempotency-Key'])).size, 1)
})

test('a stored session is used without logging in again', async () => {
  const storage = memoryStorage({
    'liudong.session': JSON.stringify({ token: 'kept', reader: { id: 'r9', nickname: 'n', avatar_url: '' } }),
  })
  const wx = scriptedWx(routed(() => ({ status: 200, body: { items: [] } })))
  const client = createClient({ baseURL: 'http://api.test', wx, storage })
  await client.inbox.list({ after: 3 })
  assert.equal(wx.logins, 0)
  assert.equal(wx.calls[0].header.Authorization, 'Bearer kept')
  assert.equal(wx.calls[0].url, 'http://api.test/v1/inbox?after=3')
  assert.equal(client.reader.id, 'r9')
})

test('full jitter stays within [0, min(max, min·2^attempt)) and Retry-After parses both forms', () => {
  assert.equal(fullJitter(0, 1000, 30000, () => 0.999), 999)
  assert.equal(fullJitter(3, 1000, 30000, () => 0.5), 4000)
  assert.equal(fullJitter(20, 1000, 30000, () => 0.999), 29970)
  assert.equal(fullJitter(5, 1000, 30000, () => 0), 0)
  assert.equal(parseRetryAfter('12'), 12)
  const now = Date.parse('2026-01-01T00:00:00Z')
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30)
  assert.equal(parseRetryAfter('soon'), undefined)
})

test('subscribe(): wx.requestSubscribeMessage, then one grant per accepted template', async () => {
  const wx = scriptedWx(routed(() => ({ status: 201, body: { grants: [] } })))
  const asked = []
  wx.requestSubscribeMessage = ({ tmplIds, success }) => {
    asked.push(tmplIds)
    success({ errMsg: 'requestSubscribeMessage:ok', T1: 'accept', T2: 'reject', T3: 'accept' })
  }
  const client = createClient({ baseURL: 'http://api.test', wx, storage: memoryStorage() })
  const answer = await client.me.subscribe(['T1', 'T2', 'T3'])
  assert.equal(answer.T2, 'reject')
  assert.deepEqual(asked, [['T1', 'T2', 'T3']])
  const post = wx.calls.find((c) => c.url === 'http://api.test/v1/me/subscriptions')
  assert.equal(post.method, 'POST')
  assert.deepEqual(post.body, { grants: [{ template_id: 'T1', count: 1 }, { template_id: 'T3', count: 1 }] })
  assert.ok(post.header['Idempotency-Key'])
})
