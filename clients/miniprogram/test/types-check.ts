// Compiled by `npm run typecheck` (tsc, no output): the mini-program's own `wx` (typed by
// miniprogram-api-typings) is an adapter the SDK accepts, and the helpers' types line up with
// the generated API types.
import { createClient, LiudongError, type Book, type InboxEvent, type ChatMessageData } from '../types/index'

const client = createClient({ baseURL: 'https://api.example.com', wx })

async function page(): Promise<void> {
  await client.login()
  const found = await client.books.search({ q: '三体' })
  const first: Book | undefined = found.items[0]
  if (first) {
    const loan = await client.books.requestLoan(first.id, { note: '想读' })
    if (loan.status !== 'accepted') {
      const approved = await client.loans.approve(loan.id)
      console.log(approved.status)
    }
  }
  client.realtime.on('chat.message', (event: InboxEvent<ChatMessageData>) => console.log(event.data.text))
  client.realtime.on('state', ({ state }) => console.log(state))
  await client.realtime.connect()
  const ack = await client.realtime.sendChat('5d1e', '你好')
  console.log(ack.seq, ack.created)
  // @ts-expect-error the body is typed from the OpenAPI document: isbn is a string
  await client.books.publish({ isbn: 9787020002207 })
  // @ts-expect-error an unknown operation field
  await client.loans.decline('id', { why: 'no' })
  try {
    await client.me.get()
  } catch (error) {
    if (error instanceof LiudongError) console.log(error.status, error.code, error.detail)
  }
}
void page
