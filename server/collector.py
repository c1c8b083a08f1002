"""The cyclic garbage collector, set for a server that holds many objects for long.

CPython's defaults were made for small heaps. The young generation is collected every 700
net allocations of tracked objects. A full collection runs once the long-lived objects have
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
* It makes the young generation ``young_threshold`` allocations long. The older
  generations' ratios stay CPython's, so full collections still happen and cyclic garbage
  is still freed, as often relative to young collections as before: every 10 x 10 young
  ones, and only after that quarter's growth.

With 20,000, one storm run made 1 full collection per server (0.22–0.28 s), and the
server's CPU per device fell by about a quarter (``docs/performance.md``).
"""

from __future__ import annotations

import gc

#: Net allocations of tracked objects between young-generation collections (CPython: 700).
DEFAULT_YOUNG_THRESHOLD = 20_000


def configure(young_threshold: int = DEFAULT_YOUNG_THRESHOLD) -> None:
    """Freeze the objects alive now and lengthen the young generation (see the module
    docstring). Call once, after start-up and before serving."""
    if young_threshold < 1:
        raise ValueError("young_threshold must be at least 1")
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
