"""The WebSocket gateway of one API node: sessions, fan-out, resume, rooms, heartbeat.

One module per role (each module's docstring has the rules of its part)::

    gateway.py    Gateway: wires the parts; a connection's life (serve), the node's sessions,
                  NATS subscriptions (inbox fan-out, rooms), reader presence, start/stop
    session.py    Session: one socket's state, its bounded outbound queue, writing, closing,
                  back-pressure (a full queue: close 4008 "slow consumer")
    replay.py     Replay: inbox items to a socket: live in order, duplicates dropped, gaps and
                  resume read from the inbox; ``after`` beyond the head → ``after_beyond_head``
    heartbeat.py  Heartbeat: one timer per node pings the sockets, closes silent ones (4012)
    rooms.py      Rooms: room.join / room.leave / room.send, room messages, member counts
    dispatch.py   Dispatcher: reads a socket; client frame → handler; malformed frames
    ports.py      Socket (DirectSocket: one that can write at once), InboxFeed, ChatPort:
                  what it needs from outside, as protocols; Shared: a frame for many sockets
    config.py     GatewayConfig, GatewayStats

A frame on its way out: a handler (or the fan-out, the replay, the heartbeat) calls
``Session.push``, which writes at once or queues behind a waiting write.
"""

from realtime.gateway.config import GatewayConfig, GatewayStats
from realtime.gateway.gateway import Gateway
from realtime.gateway.ports import ChatPort, InboxFeed, Socket
from realtime.gateway.rooms import ROOM_SUBJECT_PREFIX
from realtime.gateway.session import Session

__all__ = [
    "ROOM_SUBJECT_PREFIX",
    "ChatPort",
    "Gateway",
    "GatewayConfig",
    "GatewayStats",
    "InboxFeed",
    "Session",
    "Socket",
]
