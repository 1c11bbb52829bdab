"""Following an encoder service's monitoring stream: what it scores, and what this follower missed.

The service publishes on an XPUB socket (``--monitor ENDPOINT``): a ``progress`` message per
scored trial, and a ``hello`` to every new subscriber with each open run's next trial. Monitoring
may drop (a slow follower past the high-water mark loses messages; the lossless path, the trials
themselves, never does), so every message carries the publisher's sequence number and a
`Monitor` counts the gaps instead of hiding them.
"""
from __future__ import annotations

import zmq

from replay import wire


class Monitor:
    """A SUB socket on a service's monitor endpoint.

    Attributes
    ----------
    received : int
        Messages received.
    missed : int
        Messages published after the first one received that never arrived (dropped), known
        when the next one arrives.
    runs : dict
        Each run's next trial, as the last ``hello`` said.
    """

    def __init__(self, endpoint: str, context: zmq.Context | None = None,
                 timeout_s: float | None = None, hwm: int = 1000):
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, hwm)  # messages held for us before the rest drop
        if timeout_s is not None:
            self.socket.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)
        self.received = self.missed = 0
        self.runs: dict[str, int] = {}
        self._next: int | None = None

    def recv(self) -> wire.Message:
        """The next message (``hello`` or ``progress``); raises zmq.Again after the timeout."""
        msg = wire.recv(self.socket)
        if self._next is not None and msg.seq > self._next:
            self.missed += msg.seq - self._next
        self._next = msg.seq + 1
        self.received += 1
        if msg.kind == "hello":
            self.runs = dict(msg.header.get("runs", {}))
        return msg

    def close(self) -> None:
        self.socket.close()
