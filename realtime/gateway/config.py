"""The gateway's settings (``GatewayConfig``) and counters (``GatewayStats``).

The parts of the gateway read the config each time they use it (through ``config()``, the
gateway's current one), so replacing ``Gateway.config`` on a running node takes effect."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GatewayConfig:
    heartbeat: float = 25.0
    """Seconds between server pings; silent 1.5× this long → close 4012."""
    queue_size: int = 256
    """Frames queued per socket before it is a slow consumer (4008)."""
    replay_page: int = 200
    """Inbox items read per database query during a replay."""
    send_timeout: float = 10.0
    """Seconds a replay waits for queue space before calling the socket slow."""
    max_sockets_per_reader: int = 10
    """Sockets of one reader on one node; one more closes the oldest with 4000."""
    max_held: int = 4096
    """Live items held per socket during a replay (beyond: dropped, then re-read)."""
    frame_rate: str = "120/minute"
    """Frames a socket may send (``limits`` syntax, moving window, per socket); beyond, each
    frame is refused with ``error`` ``rate_limited`` + ``retry_after`` (empty: no limit)."""
    peer_ttl: float = 10.0
    """Seconds a reader's conversation peers are cached (presence fan-out and queries)."""
    peer_refresh: float = 1.0
    """A ``presence.query`` naming a non-peer re-reads the querier's peers if the cached ones
    are older than this (so a conversation opened a moment ago is seen)."""


@dataclass
class GatewayStats:
    connections: int = 0
    opened: int = 0
    closed_by_code: dict[int, int] = field(default_factory=dict)
    frames_in: int = 0
    rate_limited: int = 0
    bad_frames: int = 0
    events_live: int = 0
    events_replayed: int = 0
    duplicates_dropped: int = 0
    gap_replays: int = 0


__all__ = ["GatewayConfig", "GatewayStats"]
