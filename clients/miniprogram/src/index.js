/**
 * Liudong mini-program SDK (流动图书馆).
 *
 *   import { createClient } from 'liudong-miniprogram-sdk'
 *   const client = createClient({ baseURL: 'https://api.example.com', wx })
 *   await client.login()
 *   client.realtime.on('loan.requested', (event) => …)
 *   await client.realtime.connect()
 *
 * The core uses no mini-program global: `wx` and `storage` are injected (types/index.d.ts
 * describes the adapter), so the same code serves the H5 client with a browser adapter.
 */
export { createClient, LiudongClient } from './client.js'
export { Realtime } from './realtime.js'
export { LiudongError, RELOGIN_CODES } from './errors.js'
export { memoryStorage, wxStorage } from './storage.js'
export { fullJitter, newId, parseRetryAfter } from './util.js'
export { webAdapter } from './adapters/web.js'
