"""Flight recorder, per layer: gradient, update and parameter norms, at a cadence, read one call behind.

A *layer* is a module path in the trained state: the leaf's path minus its name
(``layers/0/linear`` for ``layers/0/linear/kernel``). Only the trained variables (``wrt``,
``nnx.Param`` by default) are in it: BatchNorm statistics, RNG counters or a frozen layer live
in the rest of the state and are not layers here.

A record is the first step of a compiled call, probed before the call runs by a separate small
program (``StepFns.probe``: the step's gradients and optimizer updates from the same state and
batch, not applied), dispatched asynchronously on device and read one call behind with the loss
(no extra sync): per layer the gradient norm, the update norm and the parameter norm before the
step. One record every ``FLIGHT_EVERY`` steps or more (one unapplied step per hundred: ~1% of
the compute); a separate program because on XLA:CPU any second reader of the weight gradients
inside the scanned step slowed every step by 5-13% (measured). The probe compiles on another
thread: by default once the run has trained ``PROBE_AFTER`` times as long as its train call took
to compile (so short runs pay nothing and record nothing), or before the first call when a
cadence is given (``Trainer(flight=n)``).

The host adds the device's memory high-water (``peak_bytes_in_use`` where the backend reports
it; ``None`` on CPU).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FLIGHT_EVERY = 100  # steps between records, at least (one probe step each: ~1% of the compute)
# The default recorder starts compiling its probe once the run has trained this many times as
# long as its train call took to compile, so the one-off compile costs at most ~4% of the time
# trained so far (on a busy 2-core machine the compile thread took its time from training: at 4x,
# a 1000-step width-1024 run lost ~13% end to end); a short run records nothing and pays nothing.
PROBE_AFTER = 25.0


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(tree: Any) -> list[tuple[str, ...]]:
    """Each leaf's path as names, in ``jax.tree.leaves`` order (an NNX Variable's trailing
    ``.value`` dropped)."""
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [_key_name(k) for k in path]
        if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
            names = names[:-1]
        out.append(tuple(names))
    return out


@dataclasses.dataclass(frozen=True)
class Layers:
    """The trained state's leaves grouped by module path.

    Attributes:
      names: layer names in first-seen leaf order (``l1``, ``layers/0/linear``, ...).
      leaf_layer: for each leaf (``jax.tree.leaves`` order), the index of its layer.
    """

    names: tuple[str, ...]
    leaf_layer: tuple[int, ...]

    @classmethod
    def of(cls, params: Any) -> Layers:
        names: list[str] = []
        index: dict[str, int] = {}
        leaf_layer = []
        for path in leaf_paths(params):
            name = "/".join(path[:-1]) or "/".join(path) or "(root)"
            if name not in index:
                index[name] = len(names)
                names.append(name)
            leaf_layer.append(index[name])
        return cls(tuple(names), tuple(leaf_layer))

    def __len__(self) -> int:
        return len(self.names)

    def probe_sums(self, grads: Any, updates: Any, params: Any) -> dict[str, jax.Array]:
        """Per layer (``f32[layers]`` each): the sums of squares of the gradients (``grad_sq``),
        the updates (``update_sq``) and the parameters (``param_sq``). A NaN or inf element
        makes its layer's sum non-finite (so does a finite value beyond ~1.8e19, whose square
        overflows: counted as diverged). Plain reductions: measured faster on XLA:CPU than one
        variadic reduction computing all three."""

        def per_layer(tree: Any) -> jax.Array:
            leaves = jax.tree.leaves(tree)
            if len(leaves) != len(self.leaf_layer):
                raise ValueError(f"expected {len(self.leaf_layer)} leaves, got {len(leaves)}")
            acc: list[Any] = [jnp.float32(0)] * len(self.names)
            for x, i in zip(leaves, self.leaf_layer):
                acc[i] = acc[i] + jnp.sum(jnp.square(x.astype(jnp.float32)))
            return jnp.stack(acc)

        return {"grad_sq": per_layer(grads), "update_sq": per_layer(updates), "param_sq": per_layer(params)}


def all_finite(tree: Any) -> jax.Array:
    """A scalar: every floating-point leaf of ``tree`` is finite (integer and key leaves skipped).

    One fused sum per leaf: finite iff every element is, barring an overflow of finite values
    near 3e38, which is counted as non-finite."""
    ok = jnp.bool_(True)
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jnp.floating):
            ok = ok & jnp.isfinite(jnp.sum(x, dtype=jnp.float32))
    return ok


def memory_peak(devices: Any) -> int | None:
    """The highest ``peak_bytes_in_use`` among ``devices``; ``None`` where the backend does not
    report it (CPU). A host query of the allocator: no device sync."""
    peaks = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # a backend without memory statistics
            stats = None
        if stats and stats.get("peak_bytes_in_use") is not None:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def _nan_list(n: int) -> list[float]:
    return [math.nan] * n


@dataclasses.dataclass
class FlightLog:
    """Recorded per-layer norms, one row per recorded step (``History.flight``).

    Attributes:
      layers: layer names (rows of the heatmap).
      steps: the recorded steps (1-based; the first step of each call).
      grad_norm, update_norm, param_norm: per recorded step, one value per layer (NaN where
        non-finite or not recorded).
      memory_peak: per recorded step, the device memory high-water in bytes (``None``: not
        reported by the backend).
    """

    layers: list[str] = dataclasses.field(default_factory=list)
    steps: list[int] = dataclasses.field(default_factory=list)
    grad_norm: list[list[float]] = dataclasses.field(default_factory=list)
    update_norm: list[list[float]] = dataclasses.field(default_factory=list)
    param_norm: list[list[float]] = dataclasses.field(default_factory=list)
    memory_peak: list[int | None] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    def add(
        self,
        layers: tuple[str, ...],
        step: int,
        grad_sq: np.ndarray,
        update_sq: np.ndarray,
        param_sq: np.ndarray,
        memory: int | None,
    ) -> None:
        """Record one step from the device's sums of squares (square roots taken here)."""
        if list(layers) != self.layers:
            if self.steps:  # another model's layers: keep its history apart, start afresh
                self.clear()
            self.layers = list(layers)
        self.steps.append(int(step))
        for col, sq in (
            (self.grad_norm, grad_sq),
            (self.update_norm, update_sq),
            (self.param_norm, param_sq),
        ):
            col.append(np.sqrt(np.asarray(sq, np.float64)).tolist())
        self.memory_peak.append(memory)

    def clear(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).clear()

    def truncate(self, step: int) -> None:
        """Forget records after ``step`` (a resumed run repeats them)."""
        keep = sum(1 for s in self.steps if s <= step)
        for name in ("steps", "grad_norm", "update_norm", "param_norm", "memory_peak"):
            setattr(self, name, getattr(self, name)[:keep])

    def ratio(self) -> list[list[float]]:
        """Update norm over parameter norm, per recorded step and layer (NaN where undefined)."""
        return [
            [u / p if p and math.isfinite(p) and math.isfinite(u) else math.nan for u, p in zip(us, ps)]
            for us, ps in zip(self.update_norm, self.param_norm)
        ]

    def latest(self) -> dict[str, Any]:
        """The last record: ``{"step", "layers": [{"name", "grad", "update", "param", "ratio"}],
        "memory_peak"}``; empty when nothing was recorded."""
        if not self.steps:
            return {}
        ratio = self.ratio()[-1]
        return {
            "step": self.steps[-1],
            "memory_peak": self.memory_peak[-1],
            "layers": [
                {"name": n, "grad": g, "update": u, "param": p, "ratio": r}
                for n, g, u, p, r in zip(
                    self.layers, self.grad_norm[-1], self.update_norm[-1], self.param_norm[-1], ratio
                )
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        def clean(rows: list[list[float]]) -> list[list[float | None]]:
            return [[v if math.isfinite(v) else None for v in r] for r in rows]

        return {
            "layers": list(self.layers),
            "steps": list(self.steps),
            "grad_norm": clean(self.grad_norm),
            "update_norm": clean(self.update_norm),
            "param_norm": clean(self.param_norm),
            "update_ratio": clean(self.ratio()),
            "memory_peak": list(self.memory_peak),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FlightLog:
        if not d:
            return cls()

        def rows(name: str) -> list[list[float]]:
            return [[math.nan if v is None else float(v) for v in r] for r in d.get(name, [])]

        return cls(
            layers=list(d.get("layers", [])),
            steps=[int(s) for s in d.get("steps", [])],
            grad_norm=rows("grad_norm"),
            update_norm=rows("update_norm"),
            param_norm=rows("param_norm"),
            memory_peak=[None if m is None else int(m) for m in d.get("memory_peak", [])],
        )


class CompileJob:
    """A program lowered on the calling thread (tracing stays there) and compiled on another.

    ``ready()`` polls without blocking; ``result()`` waits and returns ``(compiled, seconds)``
    (lowering included), re-raising a compile error on the waiting thread.
    """

    def __init__(self, lowered: Any, lower_seconds: float):
        import threading
        import time

        self._box: dict[str, Any] = {}
        self._lower_seconds = lower_seconds

        def work() -> None:
            t = time.perf_counter()
            try:
                self._box["compiled"] = lowered.compile()
            except BaseException as e:  # noqa: BLE001 - re-raised by result()
                self._box["error"] = e
            self._box["seconds"] = time.perf_counter() - t

        self._thread = threading.Thread(target=work, name="jaxmagic-compile", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> tuple[Any, float]:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["compiled"], self._lower_seconds + self._box["seconds"]
