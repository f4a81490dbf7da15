/**
 * The tests' `wx`: the SDK's web adapter over Node's fetch and the `ws` package (which, unlike
 * a browser's WebSocket, sends the Authorization header, as `wx.connectSocket` does), logging
 * in with dev codes (`dev:<name>`, accepted outside production). `offline()` / `online()`
 * play the network going away: open sockets are cut (close 1006) and new ones refused.
 */
import { readFile } from 'node:fs/promises'
import WebSocket from 'ws'

import { createClient, memoryStorage, webAdapter } from '../../src/index.js'

export function nodeWx(name) {
  const sockets = new Set()
  let offline = false
  const wx = webAdapter({
    login: () => `dev:${name}`,
    readFile: async (p) => new Blob([await readFile(p)]),
    fetch: (url, init) => (offline ? Promise.reject(new Error('offline')) : fetch(url, init)),
    createSocket: (url, headers) => {
      const socket = new WebSocket(offline ? 'ws://127.0.0.1:9/' : url, { headers })
      sockets.add(socket)
      wx.urls.push(url)
      socket.on('message', (data) => {
        if (String(data).startsWith('{"type":"ping"')) wx.pings += 1
      })
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => {})
      return socket
    },
  })
  wx.sockets = sockets
  wx.urls = [] // every socket URL asked for
  wx.pings = 0 // server pings received
  wx.goOffline = () => {
    offline = true
    for (const socket of sockets) socket.terminate()
    wx.networkChange(false)
  }
  wx.goOnline = () => {
    offline = false
    wx.networkChange(true)
  }
  return wx
}

/** A client of a fresh dev reader `name` (storage in memory unless given). */
export function makeClient(baseURL, name, { storage = memoryStorage(), realtime, wx = nodeWx(name) } = {}) {
  const client = createClient({
    baseURL,
    wx,
    storage,
    realtime: { minDelay: 100, maxDelay: 2000, ...realtime },
  })
  return { client, wx, storage }
}

/** Waits until `predicate()` is truthy (checked every 20 ms), or fails after `ms`. */
export async function waitFor(predicate, ms = 15000, what = 'condition') {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
