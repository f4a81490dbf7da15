"""The fan-out baseline: a bare ``websockets`` broadcast server speaking just enough of the
gateway's protocol for the ``fanout`` scenario's client.

    python -m bench.ws_baseline --port 8765

Every connection gets a ``hello``; ``room.join`` is answered with ``room.joined`` (no presence,
no rooms: every connection is in the one room); ``room.send`` is broadcast to every
connection (the sender included) as a ``room.message`` of the same shape and size as the
gateway's, with ``websockets.asyncio.server.broadcast`` (no per-socket queue, no NATS, no
database). ``{"type":"ping"}`` is answered with ``pong``. permessage-deflate is off.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
CLIENTS: set[ServerConnection] = set()
_seq = itertools.count(1)


async def handler(ws: ServerConnection) -> None:
    reader = {"id": str(uuid.uuid4()), "nickname": "bench"}
    CLIENTS.add(ws)
    try:
        await ws.send(
            _encode({"type": "hello", "reader": reader, "head": 0, "heartbeat": 25.0}).decode()
        )
        async for message in ws:
            frame: dict[str, Any] = _decode(message)
            kind = frame.get("type")
            if kind == "room.send":
                out = {
                    "type": "room.message",
                    "room": frame["room"],
                    "message_id": str(uuid.uuid4()),
                    "sender": reader,
                    "text": frame["text"],
                    "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "seq": next(_seq),
                }
                broadcast(CLIENTS, _encode(out).decode())
            elif kind == "room.join":
                await ws.send(
                    _encode(
                        {
                            "type": "room.joined",
                            "room": frame["room"],
                            "title": "Bench",
                            "members": len(CLIENTS),
                        }
                    ).decode()
                )
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
    finally:
        CLIENTS.discard(ws)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_queue=None,
        backlog=4096,
    ):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
