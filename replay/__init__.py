"""Streams of trials and frames: the recording store, orderings, pacing, the wire protocol."""
from .clock import Pacer
from .ordering import ORDERS, event_order
from .store import (Events, Recording, RecordingWriter, StoreError, describe, open_recording,
                    validate)
from .trials import Trial, replay_session
from .wire import PROTOCOL_VERSION, Message, ProtocolError

__all__ = ["Pacer", "ORDERS", "event_order", "Events", "Recording", "RecordingWriter", "StoreError",
           "describe", "open_recording", "validate", "Trial", "replay_session", "PROTOCOL_VERSION",
           "Message", "ProtocolError"]
