"""Streams of trials and frames: the recording store, orderings, pacing, the wire protocol, its
security and the encoding of state trees."""
from .assembly import AssemblyCounts, LiveEvent, LiveTrial, TrialAssembler
from .clock import Pacer
from .live import LiveSource, ZmqSource
from .lsl import LslError, LslSender, LslSource
from .ordering import ORDERS, event_order
from .store import (Events, Recording, RecordingWriter, StoreError, describe, open_recording,
                    validate)
from .scanner import Faults, ZmqSender, play_session, stream_session, stream_session_lsl
from .security import ClientCurve, ServerCurve, check_bind, make_keys
from .trials import MAX_NONFINITE_FRACTION, Trial, nonfinite_voxels, replay_session
from .tree import flatten, unflatten
from .wire import PROTOCOL_VERSION, Message, ProtocolError

__all__ = ["AssemblyCounts", "LiveEvent", "LiveTrial", "TrialAssembler", "Pacer", "LiveSource",
           "ZmqSource", "LslError", "LslSender", "LslSource", "Faults", "ZmqSender",
           "play_session", "stream_session", "stream_session_lsl", "ORDERS", "event_order",
           "Events", "Recording", "RecordingWriter", "StoreError",
           "describe", "open_recording", "validate", "ClientCurve", "ServerCurve", "check_bind",
           "make_keys", "MAX_NONFINITE_FRACTION", "Trial", "nonfinite_voxels", "replay_session",
           "flatten", "unflatten", "PROTOCOL_VERSION", "Message", "ProtocolError"]
