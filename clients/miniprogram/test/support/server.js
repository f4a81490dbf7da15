/**
 * A real `liudong serve` for the SDK's tests, as a child process on a free port.
 *
 * The database and NATS: `LIUDONG_TEST_DATABASE_URL` + `LIUDONG_TEST_NATS_URL` when given
 * (pytest's tests/clients/test_sdk_node.py passes its session's), otherwise
 * `python -m tests.clients.services` makes a fresh database on `DATABASE_URL` (or an
 * embedded PostgreSQL) and a NATS (`NATS_URL` or an embedded nats-server) for the run.
 * The server runs from the repository's `.venv` (`LIUDONG_PYTHON` to use another Python).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createWriteStream, readFileSync } from 'node:fs'
import { mkdtempSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..')
export const PYTHON = process.env.LIUDONG_PYTHON || path.join(ROOT, '.venv/bin/python')
export const OPERATOR_TOKEN = 'sdk-test-operator-token'

export async function freePort() {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

/** `{ databaseUrl, natsUrl, stop() }` for the whole test file. */
export async function startServices() {
  if (process.env.LIUDONG_TEST_DATABASE_URL && process.env.LIUDONG_TEST_NATS_URL) {
    return {
      databaseUrl: process.env.LIUDONG_TEST_DATABASE_URL,
      natsUrl: process.env.LIUDONG_TEST_NATS_URL,
      stop: async () => {},
    }
  }
  const child = spawn(PYTHON, ['-m', 'tests.clients.services'], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'inherit'],
    env: process.env,
  })
  let buffer = ''
  const line = await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      buffer += chunk
      const end = buffer.indexOf('\n')
      if (end >= 0) resolve(buffer.slice(0, end))
    })
    child.on('exit', (code) => reject(new Error(`tests.clients.services exited with ${code}`)))
  })
  const { database_url: databaseUrl, nats_url: natsUrl } = JSON.parse(line)
  return {
    databaseUrl,
    natsUrl,
    async stop() {
      child.stdin.end()
      if (child.exitCode === null) await once(child, 'exit')
    },
  }
}

/** One `liudong serve` process; `kill()` (SIGKILL) and `start()` again on the same port. */
export class LiudongServer {
  constructor({ databaseUrl, natsUrl, port, env = {} }) {
    this.databaseUrl = databaseUrl
    this.natsUrl = natsUrl
    this.port = port
    this.url = `http://127.0.0.1:${port}`
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'liudong-sdk-serve-'))
    this.logPath = path.join(this.dir, 'serve.log')
    this.env = env
    this.process = null
  }

  static async start(services, env) {
    const server = new LiudongServer({ ...services, port: await freePort(), env })
    await server.start()
    return server
  }

  async start(timeoutMs = 90000) {
    const log = createWriteStream(this.logPath, { flags: 'a' })
    await once(log, 'open')
    this.process = spawn(PYTHON, ['-m', 'api.cli', 'serve', '--port', String(this.port)], {
      cwd: ROOT,
      stdio: ['ignore', log, log],
      env: {
        ...process.env,
        DATABASE_URL: this.databaseUrl,
        NATS_URL: this.natsUrl,
        LIUDONG_ENV: 'test',
        LIUDONG_DATA_DIR: path.join(this.dir, 'data'),
        LIUDONG_OPERATOR_TOKEN: OPERATOR_TOKEN,
        LIUDONG_RATE_LOGIN_ADDRESS: '',
        LIUDONG_RATE_LOGIN_CODE: '',
        LIUDONG_RATE_LOAN_REQUESTS: '',
        LIUDONG_RATE_CHAT_SENDS: '',
        LIUDONG_WS_FRAME_RATE: '',
        PYTHONUNBUFFERED: '1',
        ...this.env,
      },
    })
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.process.exitCode !== null) throw new Error(`liudong serve exited:\n${this.logTail()}`)
      try {
        const res = await fetch(`${this.url}/readyz`, {
          headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
          signal: AbortSignal.timeout(2000),
        })
        if (res.status === 200) {
          const body = await res.json()
          if (body.checks && body.checks.nats && body.checks.nats.ok) return
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`liudong serve not ready:\n${this.logTail()}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }

  /** SIGKILL: no goodbye to the sockets, no graceful shutdown. */
  async kill() {
    if (!this.process || this.process.exitCode !== null) return
    this.process.kill('SIGKILL')
    await once(this.process, 'exit')
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null || this.process.signalCode !== null) return
    this.process.kill('SIGTERM')
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 20000)
    await once(this.process, 'exit')
    clearTimeout(timer)
  }

  logTail(chars = 4000) {
    try {
      return readFileSync(this.logPath, 'utf8').slice(-chars)
    } catch {
      return '(no log)'
    }
  }
}
