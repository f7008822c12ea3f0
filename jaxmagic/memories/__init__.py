"""Device memory: what is alive and who holds it, why a cell ran out, whether a step will fit.

Capture only (no IPython): ``memory()`` walks live arrays and a namespace, ``plan()`` compiles
a call without running it, ``explain_oom()`` reads a ``RESOURCE_EXHAUSTED`` error.

Plural because ``jaxmagic.memory`` is the public function; a package of that name would shadow it.
"""

from jaxmagic.memories.live import memory
from jaxmagic.memories.oom import OOMReport, explain_oom
from jaxmagic.memories.plan import PlanReport, device_capacity, plan
from jaxmagic.memories.report import ArrayRecord, DeviceMemory, MemoryReport, OwnerTotal, Suggestion

__all__ = [
    "ArrayRecord",
    "DeviceMemory",
    "MemoryReport",
    "OOMReport",
    "OwnerTotal",
    "PlanReport",
    "Suggestion",
    "device_capacity",
    "explain_oom",
    "memory",
    "plan",
]
