"""Every private API of JAX, checkify and ipykernel that jaxmagic touches, in one guarded place.

Nothing else in jaxmagic imports ``jax._src`` or reads a private attribute of a JAX object.
Each accessor checks that the thing still has the shape jaxmagic was written against and
raises :class:`InternalsChanged` (naming the versions) when it does not; callers catch it and
degrade with one clear note instead of crashing or showing a wrong number. The versions
below are the ones the test suite ran against; ``tests/test_internals.py`` checks each hook.

Anchor: equinox guards each ``jax._src`` import and names the version it needs.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

TESTED_WITH = {"jax": "0.10.2", "ipykernel": "7.4.0", "flax": "0.12.8"}


class InternalsChanged(RuntimeError):
    """A private API jaxmagic relies on is missing or has another shape in this version."""


def installed_version(library: str) -> str:
    """The installed version of ``library``, or ``"?"``."""
    try:
        from importlib.metadata import version

        return version(library)
    except Exception:
        return "?"


def changed(library: str, what: str) -> InternalsChanged:
    """The error for a private API that no longer looks as expected, naming both versions."""
    return InternalsChanged(
        f"{what} is not as jaxmagic expects in {library} {installed_version(library)} "
        f"(tested with {library} {TESTED_WITH.get(library, '?')}); this part of the report is "
        f"turned off. Please report it with your {library} version."
    )


def _require(ok: bool, library: str, what: str) -> None:
    if not ok:
        raise changed(library, what)


def _attr(path: str, library: str = "jax") -> Any:
    """Import ``module:attr.attr`` or raise ``InternalsChanged``."""
    module, _, attrs = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for name in filter(None, attrs.split(".")):
            obj = getattr(obj, name)
    except (ImportError, AttributeError):
        raise changed(library, path) from None
    return obj


# --- jax: lowering (gives the jaxpr and the compiled executable of every jit compile) -------


class LoweringCall(NamedTuple):
    closed_jaxpr: Any
    fun_name: str
    donated_invars: tuple[bool, ...]


@functools.cache
def _lowering_signature() -> inspect.Signature:
    fn = _attr("jax._src.interpreters.pxla:lower_sharding_computation")
    sig = inspect.signature(fn)
    _require(
        {"closed_jaxpr", "fun_name", "donated_invars"} <= set(sig.parameters),
        "jax",
        "pxla.lower_sharding_computation(closed_jaxpr, fun_name, donated_invars, ...)",
    )
    return sig


def lowering_target() -> tuple[Any, str]:
    """``(module, name)`` of the function every ``jit`` lowering goes through."""
    _lowering_signature()
    return _attr("jax._src.interpreters:pxla"), "lower_sharding_computation"


def lowering_call(args: tuple, kwargs: dict) -> LoweringCall:
    """The arguments of one ``lower_sharding_computation`` call, bound by name (not position)."""
    bound = _lowering_signature().bind(*args, **kwargs)
    a = bound.arguments
    return LoweringCall(a["closed_jaxpr"], str(a["fun_name"]), tuple(a["donated_invars"]))


def executable_of(computation: Any) -> Any | None:
    """The compiled XLA executable a lowering already holds (``None`` before it compiled).

    Reading it avoids compiling a second time just to get cost and memory analysis.
    """
    if not hasattr(computation, "_executable"):
        raise changed("jax", "the lowered computation's _executable")
    return computation._executable


def lowering_of(lowered: Any) -> Any:
    """The computation inside a public ``jax.stages.Lowered`` (what the lowering hook sees)."""
    if not hasattr(lowered, "_lowering"):
        raise changed("jax", "jax.stages.Lowered._lowering")
    return lowered._lowering


# --- jax: eager dispatch and device->host copies --------------------------------------------


def eval_trace() -> type:
    """``EvalTrace``: its ``process_primitive(trace, primitive, args, params)`` runs every op
    dispatched outside ``jit``."""
    cls = _attr("jax._src.core:EvalTrace")
    fn = getattr(cls, "process_primitive", None)
    _require(
        fn is not None and len(inspect.signature(fn).parameters) == 4,
        "jax",
        "core.EvalTrace.process_primitive(self, primitive, args, params)",
    )
    return cls


# The ArrayImpl property every device->host copy goes through (wrapped by watch_host_copies).
HOST_COPY_ATTR = "_value"


def array_impl() -> type:
    """The concrete ``jax.Array`` class, checked for the ``_value`` property (the single
    place a device->host copy happens) and the ``_npy_value`` cache it fills."""
    cls = _attr("jax._src.array:ArrayImpl")
    _require(
        isinstance(cls.__dict__.get(HOST_COPY_ATTR), property) and "_npy_value" in _slots(cls),
        "jax",
        "ArrayImpl._value property and _npy_value cache",
    )
    return cls


def host_copy_descriptor() -> Any:
    """What ``ArrayImpl._value`` is right now (a property, or jaxmagic's wrapper while
    ``watch_host_copies`` runs): tests compare it before and after profiling."""
    return _attr("jax._src.array:ArrayImpl").__dict__.get(HOST_COPY_ATTR)


def host_copy_cached(arr: Any) -> bool:
    """True if ``arr`` already holds its host copy (reading it again copies nothing)."""
    return arr._npy_value is not None


def _slots(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
        names.update(vars(klass))
    return names


# --- jax: cache-miss explanations ---------------------------------------------------------

# The loggers JAX writes ``TRACING CACHE MISS`` explanations to while
# ``jax.explain_cache_misses`` is on (the messages themselves are parsed in profile/misses.py).
_MISS_LOGGER_MODULES = ("jax._src.interpreters.partial_eval", "jax._src.pjit", "jax._src.util")


def cache_miss_loggers() -> tuple[str, ...]:
    """Names of the loggers that carry cache-miss explanations (checked to exist)."""
    for name in _MISS_LOGGER_MODULES:
        _attr(name + ":")
    return _MISS_LOGGER_MODULES


# --- jax: checkify ---------------------------------------------------------------------------


def checkify_errors(error: Any) -> list[tuple[int, Any]]:
    """Every ``(code, exception)`` a checkify ``Error`` recorded (``get_exception`` gives only
    the first). Reads its per-effect tables ``_pred``, ``_code``, ``_payload``, ``_metadata``."""
    import jax
    import numpy as np

    if not all(hasattr(error, a) for a in ("_pred", "_code", "_payload", "_metadata")):
        raise changed("jax", "checkify.Error._pred/_code/_payload/_metadata")
    found = []
    for effect, pred in error._pred.items():
        if bool(np.any(np.asarray(pred))):
            code = int(np.asarray(error._code[effect]).ravel()[0])
            found.append((code, jax.tree_util.tree_unflatten(error._metadata[code], error._payload[effect])))
    return sorted(found, key=lambda t: t[0])


# --- ipykernel: subshells (Stop button while a cell runs) ----------------------------------


def route_comm_to_subshell(comm: Any, timeout: float = 5.0) -> Callable[[], None] | None:
    """Deliver ``comm``'s frontend messages on a new kernel subshell thread, so they arrive while
    the main thread is busy in a cell. Returns the undo, or ``None`` where there are no
    subshells to use (no kernel, no comm, ipykernel < 7). Raises :class:`InternalsChanged` when
    the kernel has subshells but their private API is not the one jaxmagic was tested with."""
    import threading

    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    if comm is None or not Kernel.initialized():
        return None
    channel = getattr(Kernel.instance(), "shell_channel_thread", None)
    if channel is None:  # ipykernel < 7: no subshells
        return None
    manager = getattr(channel, "manager", None)
    needed = ("_create_subshell", "_delete_subshell", "_shell_channel_io_loop")
    _require(
        hasattr(comm, "_reply_subshell_for")
        and manager is not None
        and all(hasattr(manager, n) for n in needed),
        "ipykernel",
        "the kernel's subshell API (shell_channel_thread.manager._create_subshell, Comm._reply_subshell_for)",
    )
    done, box = threading.Event(), {}

    def create() -> None:
        try:
            box["id"] = manager._create_subshell()
        finally:
            done.set()

    manager._shell_channel_io_loop.add_callback(create)
    if not done.wait(timeout) or "id" not in box:
        return None
    sid = box["id"]
    comm._reply_subshell_for = lambda data, default: sid

    def undo() -> None:
        manager._shell_channel_io_loop.add_callback(lambda: manager._delete_subshell(sid))

    return undo


# --- jax: jaxpr equations (source lines, nested bodies, op-by-op evaluation) ----------------
# Used by %jaxcheck to find the user's line of an error raised inside a jitted library function
# (jnp.floor_divide, jnp.take: their own frames stop at the jit boundary), to read the mode of
# an out-of-bounds gather/scatter, and to find where an inf that reaches the result was made.


def traceback_frames(tb: Any) -> list[tuple[str, int, str]]:
    """``[(file, line, function)]`` of a jaxlib ``Traceback``, innermost first (``[]`` if None)."""
    if tb is None:
        return []
    frames = getattr(tb, "frames", None)
    _require(frames is not None, "jax", "jaxlib Traceback.frames")
    return [(f.file_name, int(f.line_num), str(f.function_name)) for f in frames]


def equation_traceback(eqn: Any) -> Any:
    """The traceback recorded when ``eqn`` was traced (the object checkify errors carry)."""
    info = getattr(eqn, "source_info", None)
    _require(info is not None and hasattr(info, "traceback"), "jax", "JaxprEqn.source_info.traceback")
    return info.traceback


def sub_jaxprs(eqn: Any) -> list[Any]:
    """The jaxprs nested in ``eqn`` (a jit body, scan/while/cond bodies, custom rules)."""
    from jax.extend.core import jaxprs_in_params

    return list(jaxprs_in_params(eqn.params))


_CALLS = ("jit", "pjit", "closed_call", "core_call")


def call_body(eqn: Any) -> Any | None:
    """The ``ClosedJaxpr`` a call equation (``jit``/``pjit``/``closed_call``) runs, else None."""
    if eqn.primitive.name not in _CALLS:
        return None
    body = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    return body if body is not None and hasattr(body, "consts") else None


def eval_equation(eqn: Any, invals: list) -> list:
    """Run one equation eagerly on concrete values; always returns a list of outputs."""
    import contextlib

    get = getattr(eqn.primitive, "get_bind_params", None)
    _require(get is not None, "jax", "Primitive.get_bind_params")
    params = get(eqn.params)
    _require(isinstance(params, dict), "jax", "Primitive.get_bind_params(params) -> dict")
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()
    with ctx:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


# --- flax: the user's arguments of the nnx.jit call being compiled --------------------------
# (gives nnx.jit inputs the user's names: ``model.l1.kernel`` for ``model.states[0][3]``)

TESTED_WITH["flax"] = "0.12.8"
_NNX_JIT_FILE = os.path.join("flax", "nnx", "transforms", "compilation.py")


def nnx_jit_arguments() -> dict[str, Any] | None:
    """The arguments, by parameter name, of the innermost ``nnx.jit`` call on this thread's
    stack (read from flax's ``JitWrapped.__call__(self, *args, **kwargs)`` frame), or ``None``
    when no ``nnx.jit`` call is running or its signature cannot be bound."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if (
            code.co_name == "__call__"
            and code.co_filename.endswith(_NNX_JIT_FILE)
            and getattr(code, "co_qualname", "JitWrapped.__call__") == "JitWrapped.__call__"
        ):
            break
        frame = frame.f_back
    if frame is None:
        return None
    local = frame.f_locals
    _require(
        all(k in local for k in ("self", "args", "kwargs")),
        "flax",
        "nnx.jit's JitWrapped.__call__(self, *args, **kwargs)",
    )
    try:
        bound = inspect.signature(local["self"]).bind(*local["args"], **local["kwargs"])
    except (TypeError, ValueError):
        return None
    return dict(bound.arguments)


# --- jax: a hook on device->host copies ------------------------------------------------------


def watch_host_copies(on_copy: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``on_copy(array)`` before every device->host copy of a ``jax.Array`` (the
    ``_value`` property when its host copy is not cached yet); returns the undo."""
    cls = array_impl()
    prop = cls.__dict__[HOST_COPY_ATTR]

    def _value(arr: Any) -> Any:
        if arr._npy_value is None:
            on_copy(arr)
        return prop.fget(arr)

    cls._value = property(_value)

    def undo() -> None:
        cls._value = prop

    return undo


# --- jax: monitoring listeners (read-only; tests check nothing is left registered) ---------


def monitoring_listeners() -> tuple[tuple, tuple]:
    """``(duration listeners, event listeners)`` currently registered with ``jax.monitoring``
    (there is no public getter)."""
    monitoring = _attr("jax._src:monitoring")
    durations = getattr(monitoring, "_event_duration_secs_listeners", None)
    events = getattr(monitoring, "_event_listeners", None)
    _require(
        durations is not None and events is not None,
        "jax",
        "monitoring._event_duration_secs_listeners/_event_listeners",
    )
    return tuple(durations), tuple(events)


# --- jax / flax: the attribute that holds the array inside a wrapper ------------------------

# A wrapper's private slot that holds its value: walking it should not add a step to the
# owner path (``model.kernel`` is the Param; its array sits in ``_raw_value``).
_TRANSPARENT = (
    ("flax.nnx.variablelib", "Variable", "_raw_value", True),  # nnx.Param, nnx.BatchStat, ...
    ("flax.nnx.statelib", "State", "_mapping", False),  # nnx.State's dict (an instance attribute)
    ("jax._src.random.prng", "PRNGKeyArray", "_base_array", False),  # a typed key's uint32 data
    ("jax._src.prng", "PRNGKeyArray", "_base_array", False),  # where it lived before jax 0.10
)

# Bookkeeping attributes of NNX graph nodes that hold no user data.
NNX_BOOKKEEPING_PREFIXES = ("_pytree__", "_object__")


def transparent_slots() -> dict[type, str]:
    """``{wrapper class: name of the slot holding its value}`` for the wrappers whose modules
    are already imported (a user who never imported flax has no NNX objects). Each entry is
    checked to exist (and, for slots, to be one); a changed one raises :class:`InternalsChanged`."""
    import sys

    out: dict[type, str] = {}
    for module, cls_name, slot, is_slot in _TRANSPARENT:
        mod = sys.modules.get(module)
        if mod is None:
            continue
        cls = getattr(mod, cls_name, None)
        library = "flax" if module.startswith("flax") else "jax"
        _require(
            isinstance(cls, type) and (not is_slot or slot in _slots(cls)),
            library,
            f"{module}.{cls_name}.{slot}",
        )
        out[cls] = slot
    return out


# --- jax: a host report without the device_put of jax.debug.callback ------------------------
# jax.debug.callback (and io_callback, pure_callback) turn the NumPy buffers XLA hands the host
# back into jax.Arrays (a device_put) before calling the function. Inside a running program the
# CPU client is busy with that very program, and that device_put costs ~0.3 ms here (20 us when
# idle): 100 reports of a 10,000-step scan cost ~10% of an MLP's time. The primitive below is
# lowered like debug_callback, through the same emit_python_callback, but calls the function
# with the NumPy arrays. Supported: no SPMD (plain jit), automatic sharding (runs once, on
# device 0) and fully manual shard_map/pmap; anything else returns None (use debug.callback).


def _report_primitive() -> Any:
    from jax._src import callback as cb
    from jax._src import core, debugging
    from jax._src.interpreters import ad, batching, mlir

    p = core.Primitive("jaxmagic_report")
    p.multiple_results = True
    effect = debugging.debug_effect

    @p.def_effectful_abstract_eval
    def _abstract(*avals: Any, callback: Callable) -> Any:
        return [], {effect}

    def _impl(*args: Any, callback: Callable) -> list:  # eager (disable_jit): plain values
        import numpy as np

        callback(*(np.asarray(a) for a in args))
        return []

    p.def_impl(_impl)
    ad.primitive_jvps[p] = lambda primals, tangents, **kw: (p.bind(*primals, **kw), [])
    ad.primitive_transposes[p] = lambda _, *args, **kw: [None] * len(args)
    batching.primitive_batchers[p] = functools.partial(debugging.debug_batching_rule, primitive=p)

    def _lowering(ctx: Any, *args: Any, callback: Callable) -> Any:
        from jax._src import config, sharding_impls
        from jax._src.lib import xla_client as xc

        axis_context = ctx.module_context.axis_context
        if isinstance(axis_context, sharding_impls.SPMDAxisContext):
            if set(axis_context.manual_axes) != set(axis_context.mesh.axis_names):
                raise NotImplementedError("partially manual shard_map")  # callers check first
            if config.use_shardy_partitioner.value:
                sharding = cb._get_sdy_array_list_for_callbacks(ctx.avals_out)
            else:
                sharding = xc.OpSharding()
                sharding.type = xc.OpSharding.Type.MANUAL
        elif isinstance(axis_context, sharding_impls.ShardingContext):
            if config.use_shardy_partitioner.value:
                sharding = sharding_impls.SdyArrayList(
                    (sharding_impls.SdyArray(mesh_shape=(), dim_shardings=(), logical_device_ids=(0,)),)
                )
            else:
                sharding = xc.OpSharding()
                sharding.type = xc.OpSharding.Type.MAXIMAL
                sharding.tile_assignment_dimensions = [1]
                sharding.tile_assignment_devices = [0]
        else:
            sharding = None

        def _host(*flat: Any) -> tuple:
            callback(*flat)
            return ()

        result, _, _ = cb.emit_python_callback(
            ctx, _host, None, list(args), ctx.avals_in, ctx.avals_out,
            has_side_effect=True, returns_token=True, partitioned=False, sharding=sharding,
        )  # fmt: skip
        return result

    for platform in ("cpu", "gpu"):
        mlir.register_lowering(p, _lowering, platform=platform)
    return p


@functools.cache
def _report_primitive_or_none() -> Any:
    try:
        return _report_primitive()
    except (ImportError, AttributeError, TypeError):
        return None


def host_report(callback: Callable[..., None], *arrays: Any) -> bool:
    """Stage ``callback(*numpy_arrays)`` to run on the host when the program reaches it (an
    effect, like ``jax.debug.callback``, without its device_put). Returns False, staging
    nothing, where unsupported (TPU, partially manual shard_map, changed jax internals)."""
    import jax

    p = _report_primitive_or_none()
    if p is None or jax.default_backend() not in ("cpu", "gpu", "cuda", "rocm"):
        return False
    mesh = jax.sharding.get_abstract_mesh()
    manual = set(getattr(mesh, "manual_axes", ()) or ())
    if manual and manual != set(getattr(mesh, "axis_names", ()) or ()):
        return False
    p.bind(*arrays, callback=callback)
    return True
