"""IPython adapters. Each module holds one ``Magics`` class; this one registers them all.

Modules here import IPython but never jax at import time, so ``%load_ext`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# "module:Class" for every Magics class jaxmagic registers. Add new magics here.
MAGIC_CLASSES = (
    "jaxmagic.magics.profile:ProfileMagics",
    "jaxmagic.magics.ir:IRMagics",
    "jaxmagic.magics.check:CheckMagics",
    "jaxmagic.magics.structure:StructureMagics",
    "jaxmagic.magics.memory:MemoryMagics",
    "jaxmagic.magics.ledger:LedgerMagics",
    "jaxmagic.magics.diff:DiffMagics",
    "jaxmagic.magics.tabulate:TabulateMagics",
)


def _classes() -> list[type]:
    out = []
    for spec in MAGIC_CLASSES:
        module, name = spec.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


def register(shell: Any) -> None:
    """Register every jaxmagic magic on ``shell``; safe to call again (replaces, never duplicates)."""
    unregister(shell)
    for cls in _classes():
        shell.register_magics(cls)


def unregister(shell: Any) -> None:
    """Remove every magic ``register`` added; leaves other extensions' magics alone."""
    manager = shell.magics_manager
    for cls in _classes():
        for kind, names in cls.magics.items():
            for name in names:
                owner = manager.magics[kind].get(name)
                if owner is not None and type(getattr(owner, "__self__", None)).__name__ == cls.__name__:
                    del manager.magics[kind][name]
        manager.registry.pop(cls.__name__, None)
