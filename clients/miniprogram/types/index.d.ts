// Liudong mini-program SDK: public API and the adapter it runs on.
// Request and response bodies come from the server's OpenAPI document (./api.d.ts,
// generated: `npm run gen-types`); wx shapes from miniprogram-api-typings.
/// <reference types="miniprogram-api-typings" />

import type { operations } from './api'

// -- the adapter ---------------------------------------------------------------------------

/** The part of a socket task the SDK uses (`wx.connectSocket`'s `SocketTask`). */
export type SocketTaskLike = Pick<WechatMiniprogram.SocketTask, 'onOpen' | 'onMessage' | 'onClose' | 'onError' | 'send' | 'close'>

/**
 * What the SDK needs of `wx`. The mini-program's own `wx` satisfies it; `webAdapter()`
 * builds one over `fetch` and `WebSocket` (H5, Node). Only `request` is needed for REST;
 * `login` for `login()`; `connectSocket` for `realtime`; `uploadFile` for media.
 */
export interface WxAdapter {
  request(options: WechatMiniprogram.RequestOption): unknown
  login(options: WechatMiniprogram.LoginOption): unknown
  connectSocket?(options: WechatMiniprogram.ConnectSocketOption): SocketTaskLike
  uploadFile?(options: WechatMiniprogram.UploadFileOption): unknown
  onAppShow?(listener: (result: any) => void): void
  offAppShow?(listener?: any): void
  onAppHide?(listener: (result: any) => void): void
  offAppHide?(listener?: any): void
  onNetworkStatusChange?(listener: WechatMiniprogram.OnNetworkStatusChangeCallback): void
  offNetworkStatusChange?(listener?: any): void
  requestSubscribeMessage?(options: WechatMiniprogram.RequestSubscribeMessageOption): unknown
  getStorageSync?(key: string): any
  setStorageSync?(key: string, data: any): void
  removeStorageSync?(key: string): void
  /** 'ticket' when a socket cannot carry an Authorization header (browsers). */
  socketAuth?: 'header' | 'ticket'
}

/** Where the session and the last inbox seq are kept: `localStorage`, `wxStorage(wx)`, … */
export interface StorageLike {
  getItem(key: string): string | null | Promise<string | null>
  setItem(key: string, value: string): void | Promise<void>
  removeItem(key: string): void | Promise<void>
}

export interface RealtimeOptions {
  /** First reconnect wait cap, ms (default 1000); doubles per failed attempt. */
  minDelay?: number
  /** Largest reconnect wait cap, ms (default 30000). */
  maxDelay?: number
  /** Re-send an unacknowledged message after this many ms on the same socket (10000). */
  ackTimeout?: number
  /** After a probe `ping` (app shown), replace the socket if nothing arrives in this many ms (10000). */
  pongTimeout?: number
  connectTimeout?: number
  /** 'header' (mini-program, default) or 'ticket' (browsers; default from `wx.socketAuth`). */
  auth?: 'header' | 'ticket'
  /** With no stored seq: 'all' replays the whole inbox (default), 'head' starts with new items. */
  start?: 'all' | 'head'
  /** Follow wx.onAppShow / onAppHide / onNetworkStatusChange (default true). */
  lifecycle?: boolean
  /** The jitter's random source (default Math.random). */
  random?: () => number
}

export interface ClientOptions {
  /** `https://api.example.com` (no trailing `/v1`). */
  baseURL: string
  wx: WxAdapter
  /** Default: the mini-program storage of `wx` (`wxStorage(wx)`). */
  storage?: StorageLike
  /** Storage key prefix (default 'liudong.'). */
  prefix?: string
  /** Per request, ms (default 15000). */
  timeout?: number
  /** Retries after 429/502/503/504 or a lost connection (default 3). */
  retries?: number
  /** Longest Retry-After waited, seconds (default 60); longer: the error is thrown. */
  maxRetryAfter?: number
  /** Log in (wx.login) on the first call that needs a token (default true). */
  autoLogin?: boolean
  /** How long a helper reads a resource after 202 Accepted, ms (default 10000). */
  acceptedTimeout?: number
  realtime?: RealtimeOptions
}

// -- API shapes (from the OpenAPI document) ------------------------------------------------

type Json<T> = T extends { content: { 'application/json': infer B } } ? B : never
type OkOf<R> = R extends { 200: infer A } ? Json<A> : R extends { 201: infer B } ? Json<B> : R extends { 204: any } ? void : never
export type BodyOf<K extends keyof operations> = operations[K] extends { requestBody?: infer B } ? Json<NonNullable<B>> : never
export type QueryOf<K extends keyof operations> = operations[K] extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never
export type ResultOf<K extends keyof operations> = OkOf<operations[K]['responses']>

/** 202: recorded, the read model behind (`status: "accepted"`). */
export type Accepted = { id: string; position: number | null; status: 'accepted'; message_id?: string; seq?: number }

export type Reader = ResultOf<'getMe'>
export type Book = ResultOf<'getBook'>
export type Loan = ResultOf<'getLoan'>
export type Conversation = ResultOf<'getConversation'>
export type InboxPage = ResultOf<'getInbox'>
export type Media = ResultOf<'uploadMedia'>

/** `POST/GET /v1/me/subscriptions` (subscribe-message grants; issue 11). */
export interface SubscriptionGrant {
  template_id: string
  count: number
}

// -- errors ----------------------------------------------------------------------------------

/**
 * Every failure: `status` (HTTP status; 0 without an HTTP answer: network, time-out, a
 * WebSocket `error` frame), `code` (the server's stable code, or `network_error`, `timeout`,
 * `not_logged_in`, `stopped`, `disconnected`), `detail`.
 */
export class LiudongError extends Error {
  readonly name: 'LiudongError'
  readonly status: number
  readonly code: string
  readonly detail: string
  readonly title?: string
  readonly type?: string
  readonly errors?: Array<{ key?: string; message?: string }>
  /** Seconds (Retry-After, or a frame's retry_after). */
  readonly retryAfter?: number
  /** The client frame type an `error` frame answered. */
  readonly frame?: string
  constructor(status: number, code: string, detail: string, extra?: object)
}
export const RELOGIN_CODES: ReadonlySet<string>

// -- realtime --------------------------------------------------------------------------------

export type InboxKind =
  | 'loan.requested'
  | 'loan.approved'
  | 'loan.declined'
  | 'loan.cancelled'
  | 'loan.returning'
  | 'loan.returned'
  | 'chat.message'
  | 'chat.read'
  | 'chat.hidden'

/** An `event` frame: one inbox item (docs/REALTIME.md §3; `data` per kind). */
export interface InboxEvent<D = Record<string, any>> {
  type: 'event'
  seq: number
  kind: InboxKind | string
  at: string
  data: D
}

export interface ChatMessageData {
  conversation_id: string
  message_id: string
  seq: number
  text: string
  client_msg_id: string | null
  at: string
  sender: { id: string; nickname: string; avatar_url: string }
}

export interface Ack {
  type: 'ack'
  client_msg_id: string
  conversation_id?: string
  room?: string
  message_id?: string
  seq: number
  at?: string
  created?: boolean
}

export type RealtimeState = 'disconnected' | 'connecting' | 'connected' | 'stopped'

export interface Realtime {
  readonly state: RealtimeState
  /** The highest inbox seq delivered (kept in storage per reader), or null before the first hello. */
  readonly lastSeq: number | null
  readonly head: number | null
  /** Seconds between server pings (from hello). */
  readonly heartbeat: number | null
  /** Consecutive failed attempts since the last hello. */
  readonly attempt: number
  /** The last back-off wait chosen, ms. */
  readonly nextDelay: number | null
  readonly pending: ReadonlyArray<Record<string, unknown>>
  on(kind: 'chat.message', handler: (event: InboxEvent<ChatMessageData>) => void): () => void
  on(kind: InboxKind | '*', handler: (event: InboxEvent) => void): () => void
  /** `delay`: ms until the next connection attempt (while `connecting` after a close). */
  on(name: 'state', handler: (change: { state: RealtimeState; code?: number; reason?: string; delay?: number }) => void): () => void
  on(name: 'stopped', handler: (why: { code: number; reason: string }) => void): () => void
  on(name: 'hello' | 'error' | 'resync' | 'room.message' | 'room.presence' | 'room.joined' | 'room.left' | 'presence' | 'presence.state', handler: (frame: any) => void): () => void
  connect(): Promise<void>
  disconnect(): void
  /** Also stops following the app and network events. */
  destroy(): void
  sendChat(conversationId: string, text: string, extra?: Record<string, unknown>): Promise<Ack>
  sendRoom(room: string, text: string, extra?: Record<string, unknown>): Promise<Ack>
  send(frame: { type: 'chat.send' | 'room.send' | 'read'; client_msg_id?: string; [field: string]: unknown }): Promise<Ack>
  read(conversationId: string, upTo: number): Promise<Ack>
  joinRoom(room: string): Promise<{ type: 'room.joined'; room: string; title: string; members: number }>
  leaveRoom(room: string): void
  queryPresence(readerIds: string[]): Promise<{ type: 'presence.state'; readers: Array<{ id: string; online: boolean }>; unknown: string[] }>
}

// -- the client ------------------------------------------------------------------------------

export interface RequestOptions {
  query?: Record<string, string | number | boolean | null | undefined | Array<string | number>>
  body?: unknown
  headers?: Record<string, string>
  /** Default true; false sends no token. */
  auth?: boolean
  /** Default: a new key per call for POST/PUT/PATCH/DELETE, reused on its retries. */
  idempotencyKey?: string
  timeout?: number
  retries?: number
  /** Resolve with `{ status, data, headers }` instead of the body. */
  raw?: boolean
}

export interface LiudongClient {
  readonly baseURL: string
  readonly token: string | null
  readonly reader: { id: string; nickname: string; avatar_url: string } | null
  readonly realtime: Realtime
  ready(): Promise<void>
  login(options?: { code?: string }): Promise<{ reader: { id: string; nickname: string; avatar_url: string }; expires_at: string }>
  logout(): Promise<void>
  on(name: 'login', handler: (e: { reader: { id: string }; previous: { id: string } | null }) => void): () => void
  on(name: 'logout', handler: (e: {}) => void): () => void
  on(name: 'error', handler: (e: { error: unknown; where: string }) => void): () => void
  request<T = any>(method: string, path: string, options?: RequestOptions & { raw?: false }): Promise<T>
  request<T = any>(method: string, path: string, options: RequestOptions & { raw: true }): Promise<{ status: number; data: T; headers: Record<string, string> }>
  upload(filePath: string, options?: { purpose?: 'cover' | 'avatar' | 'chat' | 'room' }): Promise<Media>

  me: {
    get(): Promise<Reader>
    update(patch: BodyOf<'updateMe'>): Promise<ResultOf<'updateMe'> | Accepted>
    books(query?: QueryOf<'myBooks'>): Promise<ResultOf<'myBooks'>>
    loans(query?: QueryOf<'myLoans'>): Promise<ResultOf<'myLoans'>>
    subscriptions(): Promise<{ grants: SubscriptionGrant[] } & Record<string, unknown>>
    grantSubscriptions(grants: SubscriptionGrant[]): Promise<unknown>
    /** wx.requestSubscribeMessage (from a tap), then one grant per accepted template. */
    subscribe(templateIds: string[]): Promise<Record<string, 'accept' | 'reject' | 'ban' | 'filter' | string>>
  }
  books: {
    search(query?: QueryOf<'searchBooks'>): Promise<ResultOf<'searchBooks'>>
    get(id: string): Promise<Book>
    history(id: string, query?: QueryOf<'bookHistory'>): Promise<ResultOf<'bookHistory'>>
    publish(body: BodyOf<'publishBook'>): Promise<Book | Accepted>
    revise(id: string, patch: BodyOf<'reviseBook'>): Promise<Book | Accepted>
    withdraw(id: string): Promise<unknown>
    relist(id: string): Promise<Book | Accepted>
    requestLoan(id: string, body?: BodyOf<'requestLoan'>): Promise<Loan | Accepted>
    lookupIsbn(isbn: string): Promise<ResultOf<'lookupIsbn'>>
  }
  loans: {
    get(id: string): Promise<Loan>
    approve(id: string): Promise<Loan | Accepted>
    decline(id: string, body?: BodyOf<'declineLoan'>): Promise<Loan | Accepted>
    cancel(id: string): Promise<Loan | Accepted>
    startReturn(id: string): Promise<Loan | Accepted>
    confirmReturn(id: string): Promise<Loan | Accepted>
  }
  conversations: {
    list(query?: QueryOf<'listConversations'>): Promise<ResultOf<'listConversations'>>
    open(peerId: string): Promise<Conversation | Accepted>
    get(id: string): Promise<Conversation>
    messages(id: string, query?: QueryOf<'listMessages'>): Promise<ResultOf<'listMessages'>>
    /** Over REST; prefer `realtime.sendChat` (acknowledged, retried across reconnects). */
    send(id: string, body: BodyOf<'sendMessage'>): Promise<ResultOf<'sendMessage'> | Accepted>
    read(id: string, upTo: number): Promise<ResultOf<'markRead'>>
    hide(id: string, messageId: string): Promise<unknown>
  }
  inbox: {
    list(query?: QueryOf<'getInbox'>): Promise<InboxPage>
  }
  rooms: {
    list(): Promise<ResultOf<'listRooms'>>
    messages(name: string, query?: QueryOf<'listRoomMessages'>): Promise<ResultOf<'listRoomMessages'>>
  }
  media: {
    upload(filePath: string, options?: { purpose?: 'cover' | 'avatar' | 'chat' | 'room' }): Promise<Media>
    url(id: string): string
    thumbURL(id: string): string
  }
}

export function createClient(options: ClientOptions): LiudongClient
/** The classes behind `createClient` and `client.realtime` (for `instanceof`, subclassing). */
export declare const LiudongClient: { new (options: ClientOptions): LiudongClient }
export declare const Realtime: { new (client: LiudongClient, options?: RealtimeOptions): Realtime }

export function wxStorage(wx: WxAdapter): StorageLike
export function memoryStorage(initial?: Record<string, string>): StorageLike & { dump(): Record<string, string> }

export interface WebAdapterOptions {
  fetch?: (url: string, init?: any) => Promise<any>
  WebSocket?: any
  FormData?: any
  Blob?: any
  /** The login code (a web page's own way; `dev:<name>` outside production). */
  login?: () => string | Promise<string>
  /** A socket with headers, where the platform allows (Node's `ws`). Without it: tickets. */
  createSocket?: (url: string, headers: Record<string, string>) => any
  readFile?: (path: string) => unknown | Promise<unknown>
  document?: { addEventListener(type: string, cb: () => void): void; visibilityState: string }
  window?: { addEventListener(type: string, cb: () => void): void }
}
export function webAdapter(options?: WebAdapterOptions): WxAdapter & {
  appShow(): void
  appHide(): void
  networkChange(isConnected: boolean): void
}

export function fullJitter(attempt: number, min: number, max: number, random?: () => number): number
export function newId(prefix?: string): string
export function parseRetryAfter(value: string | null | undefined, now?: number): number | undefined
