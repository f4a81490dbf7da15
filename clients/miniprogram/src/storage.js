/**
 * Storage: where the SDK keeps the session token, the reader and each reader's last inbox
 * `seq` (so that a restarted app resumes where it stopped).
 *
 * Any object with `getItem(key)`, `setItem(key, value)`, `removeItem(key)` over strings
 * will do, synchronous or returning promises: `localStorage` in a browser, `wxStorage(wx)`
 * in a mini-program (the default when `storage` is not given), `memoryStorage()` in tests.
 */

/** The mini-program's storage (`wx.getStorageSync` & co.; a missing key reads as ''). */
export function wxStorage(wx) {
  return {
    getItem(key) {
      const value = wx.getStorageSync(key)
      return value === '' || value === undefined ? null : value
    },
    setItem(key, value) {
      wx.setStorageSync(key, value)
    },
    removeItem(key) {
      wx.removeStorageSync(key)
    },
  }
}

/** Storage in memory (tests, or a client that must forget everything on restart). */
export function memoryStorage(initial = {}) {
  const map = new Map(Object.entries(initial))
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => void map.set(key, String(value)),
    removeItem: (key) => void map.delete(key),
    dump: () => Object.fromEntries(map),
  }
}

/**
 * The SDK's view of a storage: keys under one prefix, JSON values, writes in the order they
 * were made even when the storage is asynchronous.
 */
export class Store {
  constructor(storage, prefix) {
    this.storage = storage
    this.prefix = prefix
    this._tail = Promise.resolve()
  }

  async get(key) {
    await this._tail
    const raw = await this.storage.getItem(this.prefix + key)
    if (raw === null || raw === undefined || raw === '') return null
    try {
      return JSON.parse(raw)
    } catch {
      return null
    }
  }

  /** Writes (or removes, for null/undefined); resolves when written. */
  set(key, value) {
    const run = () =>
      value === null || value === undefined
        ? this.storage.removeItem(this.prefix + key)
        : this.storage.setItem(this.prefix + key, JSON.stringify(value))
    this._tail = this._tail.then(run, run)
    return this._tail
  }
}
