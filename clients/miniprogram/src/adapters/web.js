/**
 * A `wx`-like adapter over the web platform (`fetch`, `WebSocket`, `FormData`), for the H5
 * client, Node (≥ 20) and the SDK's own tests. It implements the part of the `wx` API the
 * SDK uses (types/index.d.ts, `WxAdapter`):
 *
 *   request, uploadFile, connectSocket, login,
 *   onAppShow / onAppHide / offAppShow / offAppHide,
 *   onNetworkStatusChange / offNetworkStatusChange
 *
 * Options:
 *  - `fetch`, `WebSocket`, `FormData`, `Blob`: the platform's (default: the globals);
 *  - `login()`: returns (or resolves with) the login code (`wx.login` has WeChat's; a web
 *    page has its own way, e.g. `dev:<name>` outside production);
 *  - `createSocket(url, headers)`: a WebSocket with headers where the platform allows them
 *    (Node's `ws` package: `new WebSocket(url, { headers })`). Without it the socket gets no
 *    headers, and `socketAuth` is `'ticket'`: the SDK then asks for a single-use ticket
 *    (`POST /v1/ws/tickets`, docs/REALTIME.md §1) instead of sending its token;
 *  - `readFile(path)`: a `Blob` for `uploadFile`'s `filePath` (in a browser pass the `File`
 *    itself as `filePath`);
 *  - `document`/`window`: when given, page visibility drives app show/hide and
 *    `online`/`offline` the network status.
 *
 * `appShow()`, `appHide()` and `networkChange(isConnected)` fire the app events by hand
 * (tests).
 */
export function webAdapter(options = {}) {
  const fetchImpl = options.fetch || globalThis.fetch
  const WebSocketImpl = options.WebSocket || globalThis.WebSocket
  const FormDataImpl = options.FormData || globalThis.FormData
  const BlobImpl = options.Blob || globalThis.Blob
  const listeners = { show: new Set(), hide: new Set(), network: new Set() }
  const fire = (name, value) => {
    for (const handler of [...listeners[name]]) handler(value)
  }

  const adapter = {
    socketAuth: options.createSocket ? 'header' : 'ticket',

    request({ url, method = 'GET', header = {}, data, timeout = 15000, success, fail }) {
      const controller = new AbortController()
      const timer = setTimeout(() => controller.abort(), timeout)
      let body
      if (data !== undefined && data !== null) body = typeof data === 'string' ? data : JSON.stringify(data)
      fetchImpl(url, { method, headers: header, body, signal: controller.signal })
        .then(async (res) => {
          const text = await res.text()
          clearTimeout(timer)
          success({ statusCode: res.status, data: text, header: Object.fromEntries(res.headers.entries()) })
        })
        .catch((error) => {
          clearTimeout(timer)
          const aborted = error && error.name === 'AbortError'
          fail({ errMsg: `request:fail ${aborted ? 'timeout' : (error && error.message) || error}` })
        })
      return { abort: () => controller.abort() }
    },

    uploadFile({ url, filePath, name, header = {}, formData = {}, timeout = 60000, success, fail }) {
      const controller = new AbortController()
      const timer = setTimeout(() => controller.abort(), timeout)
      Promise.resolve(typeof filePath === 'string' && options.readFile ? options.readFile(filePath) : filePath)
        .then((file) => {
          const form = new FormDataImpl()
          for (const [key, value] of Object.entries(formData)) form.append(key, value)
          const blob = file instanceof BlobImpl ? file : new BlobImpl([file])
          form.append(name, blob, typeof filePath === 'string' ? filePath.split('/').pop() : file.name || 'upload')
          return fetchImpl(url, { method: 'POST', headers: header, body: form, signal: controller.signal })
        })
        .then(async (res) => {
          const text = await res.text()
          clearTimeout(timer)
          success({ statusCode: res.status, data: text, header: Object.fromEntries(res.headers.entries()) })
        })
        .catch((error) => {
          clearTimeout(timer)
          fail({ errMsg: `uploadFile:fail ${(error && error.message) || error}` })
        })
    },

    connectSocket({ url, header = {} }) {
      const socket = options.createSocket ? options.createSocket(url, header) : new WebSocketImpl(url)
      const on = (type, handler) => socket.addEventListener(type, handler)
      return {
        onOpen: (cb) => on('open', () => cb({})),
        onMessage: (cb) => on('message', (event) => cb({ data: typeof event.data === 'string' ? event.data : String(event.data) })),
        onClose: (cb) => on('close', (event) => cb({ code: event.code, reason: event.reason })),
        onError: (cb) => on('error', (event) => cb({ errMsg: (event && event.message) || 'socket error' })),
        send({ data, success, fail }) {
          try {
            socket.send(data)
            if (success) success({})
          } catch (error) {
            if (fail) fail({ errMsg: String(error) })
          }
        },
        close({ code = 1000, reason = '' } = {}) {
          try {
            socket.close(code, reason)
          } catch {
            socket.close()
          }
        },
      }
    },

    login({ success, fail }) {
      if (!options.login) {
        fail({ errMsg: 'login:fail no login() given to webAdapter' })
        return
      }
      Promise.resolve()
        .then(() => options.login())
        .then((code) => success({ code }), (error) => fail({ errMsg: `login:fail ${error}` }))
    },

    onAppShow: (cb) => void listeners.show.add(cb),
    offAppShow: (cb) => void listeners.show.delete(cb),
    onAppHide: (cb) => void listeners.hide.add(cb),
    offAppHide: (cb) => void listeners.hide.delete(cb),
    onNetworkStatusChange: (cb) => void listeners.network.add(cb),
    offNetworkStatusChange: (cb) => void listeners.network.delete(cb),

    appShow: () => fire('show', {}),
    appHide: () => fire('hide', {}),
    networkChange: (isConnected) => fire('network', { isConnected, networkType: isConnected ? 'wifi' : 'none' }),
  }

  if (options.document) {
    options.document.addEventListener('visibilitychange', () =>
      options.document.visibilityState === 'hidden' ? adapter.appHide() : adapter.appShow(),
    )
  }
  if (options.window) {
    options.window.addEventListener('online', () => adapter.networkChange(true))
    options.window.addEventListener('offline', () => adapter.networkChange(false))
  }
  return adapter
}
