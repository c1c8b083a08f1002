"""The cyclic garbage collector, set for a server that holds many objects for long.

CPython's defaults were made for small heaps. The young generation is collected every 700
net allocations of tracked objects, the middle one every 10 of those, and a full
collection is considered every 10 middle ones. It runs once the long-lived objects have
grown by a quarter since the last one, and it walks every one of them.

A server holding thousands of connections keeps about a million long-lived objects. In a
reconnect storm the heap grows fast, so full collections come one after another. Measured
with a probe on ``gc.callbacks`` in one run of ``python -m bench storm`` (5,000 devices):
13–14 full collections per server life, 3.1–4.6 s in all, the longest 0.85 s. That is
about a third of the server's CPU in the storm, and a pause no client can tell from a dead
server.

``configure`` does two things:

* It freezes what exists at start-up (modules, classes, configuration: never garbage)
  out of the collector's reach.
* It considers a full collection only every ``old_threshold`` middle-generation
  collections, not every 10. The young generation stays CPython's 700 allocations: its
  collections stay short (a longer one, 20,000 allocations, made pauses of up to 68 ms in
  the storm). Full collections still happen, and cyclic garbage that reached the oldest
  generation is still freed, 10x less often by default.

With 100, one storm run took 6.5 s against 9.6–11.2 s with CPython's settings, and the
server's CPU per device fell from ~1,840–2,050 µs to ~1,390 (``docs/performance.md``).
"""

from __future__ import annotations

import gc

#: Middle-generation collections between two chances of a full one (CPython: 10).
DEFAULT_OLD_THRESHOLD = 100


def configure(old_threshold: int = DEFAULT_OLD_THRESHOLD) -> None:
    """Freeze the objects alive now and space full collections out (see the module
    docstring). Call once, after start-up and before serving."""
    if old_threshold < 1:
        raise ValueError("old_threshold must be at least 1")
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, old_threshold)
