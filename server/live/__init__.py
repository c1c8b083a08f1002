"""Group live streams (L1): the in-memory side of the signalling server.

``registry.py`` holds the active streams and their participants, ``throttle.py`` coalesces
viewer counts and likes into one event per stream per interval, ``grace.py`` keeps the
deadlines of hosts who went away, and ``runtime.py`` ties them into one background service.
The requests themselves are handled in ``server/services/live.py``.
"""

from server.live.registry import Departure, LiveRegistry, LiveStream
from server.live.runtime import LiveRuntime

__all__ = ["Departure", "LiveRegistry", "LiveRuntime", "LiveStream"]
