"""Fan-out between server processes, behind the ``Bus`` seam."""

from server.bus.interface import Bus, BusMessage, Deliver, Disconnect
from server.bus.memory import MemoryBus

__all__ = ["Bus", "BusMessage", "Deliver", "Disconnect", "MemoryBus"]
