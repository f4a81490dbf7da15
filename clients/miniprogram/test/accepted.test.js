/**
 * 202 "accepted" from a real server: with LIUDONG_CONSISTENCY_TIMEOUT=0 a command answers
 * before its read models include it. The helpers then read the resource until it shows the
 * change, so the caller still gets the book and the loan, in their new state.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'

import { LiudongServer, startServices } from './support/server.js'
import { makeClient } from './support/wx-node.js'

let services
let server

before(async () => {
  services = await startServices()
  server = await LiudongServer.start(services, { LIUDONG_CONSISTENCY_TIMEOUT: '0' })
})

after(async () => {
  if (server) await server.stop()
  if (services) await services.stop()
})

/** A client whose wx records the status of every answer. */
function recorded(name) {
  const made = makeClient(server.url, `${name}-${randomUUID().slice(0, 8)}`)
  const statuses = []
  const request = made.wx.request
  made.wx.request = (options) =>
    request({
      ...options,
      success: (res) => {
        statuses.push([options.method, new URL(options.url).pathname, res.statusCode])
        options.success(res)
      },
    })
  return { ...made, statuses }
}

test('202 accepted: publish, request and approve still resolve with the resource', async () => {
  const lender = recorded('acc-lender')
  const borrower = recorded('acc-borrower')
  const book = await lender.client.books.publish({ isbn: '9787536692930', title: '三体' })
  assert.equal(book.title, '三体')
  assert.ok(book.id)
  const loan = await borrower.client.books.requestLoan(book.id, { note: '想读' })
  assert.equal(loan.status, 'requested')
  const approved = await lender.client.loans.approve(loan.id)
  assert.equal(approved.status, 'approved')
  const commands = [...lender.statuses, ...borrower.statuses].filter(
    ([method, pathname]) => method === 'POST' && pathname !== '/v1/auth/login',
  )
  assert.ok(
    commands.some(([, , status]) => status === 202),
    `no command answered 202: ${JSON.stringify(commands)}`,
  )
  console.log(`# commands answered: ${commands.map(([, p, s]) => `${p} ${s}`).join(', ')}`)
})
