"""Where things happen in a traced program: the user's line of an equation (through the jitted
library functions around it), the equation a checkify error came from, and the equation that
made an inf which reaches the result.

An equation inside a jitted library function (``jnp.floor_divide``, ``jnp.take``) records
frames only up to that function's jit boundary, so its own traceback names no user line; the
call equation that encloses it does. A *chain* is the path of equations from the top-level
program down to one equation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jaxmagic import _internals

Chain = tuple  # tuple of jaxpr equations, outermost first


def chains(jaxpr: Any, outer: Chain = ()) -> Iterator[Chain]:
    """Every equation of ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``) and of its nested jaxprs."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        chain = outer + (eqn,)
        yield chain
        for sub in _internals.sub_jaxprs(eqn):
            yield from chains(sub, chain)


def chain_of(jaxpr: Any, traceback: Any) -> Chain | None:
    """The chain ending in the equation traced with ``traceback`` (a checkify error's
    ``traceback_info`` is that very object), or None."""
    if traceback is None:
        return None
    return next((c for c in chains(jaxpr) if _internals.equation_traceback(c[-1]) is traceback), None)


def user_frame(frames: list[tuple[str, int, str]]) -> tuple[str, int, str] | None:
    """The innermost ``(file, line, function)`` outside JAX, the libraries and jaxmagic."""
    from jaxmagic._frames import is_library_file

    return next(((f, n, fn.rsplit(".", 1)[-1]) for f, n, fn in frames if not is_library_file(f)), None)


def chain_user_frame(chain: Chain) -> tuple[str, int, str] | None:
    """The user's line of the innermost equation of ``chain`` that has one."""
    for eqn in reversed(chain):
        frame = user_frame(_internals.traceback_frames(_internals.equation_traceback(eqn)))
        if frame is not None:
            return frame
    return None


# -- where an inf reaching the result was made -------------------------------------------

INPUT = "input"  # the inf was already in an argument


def _has_inf(x: Any) -> bool:
    import jax
    import numpy as np

    dtype = getattr(x, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, np.inexact):
        return False
    return bool(np.isinf(np.asarray(x)).any())


def has_inf(tree: Any) -> bool:
    """True if any floating leaf of ``tree`` holds +inf or -inf."""
    import jax

    return any(_has_inf(x) for x in jax.tree_util.tree_leaves(tree))


def inf_origin(closed: Any, args: list) -> Chain | str | None:
    """Run ``closed`` (a ``ClosedJaxpr``) op by op on ``args`` and say where the first inf in
    its outputs came from: the chain of the equation that made it from finite inputs,
    ``INPUT`` if an argument already held it, or None if no output holds inf.

    An inf that later becomes finite (a ``-inf`` attention mask under ``exp``) is forgotten,
    so intentional infs that never reach the result are not blamed.
    """
    _, origins = _run(closed.jaxpr, closed.consts, args, [INPUT if _has_inf(a) else None for a in args], ())
    return next((o for o in origins if o is not None), None)


def _run(jaxpr: Any, consts: list, args: list, arg_origins: list, outer: Chain):
    from jax.extend.core import Literal

    env: dict[Any, Any] = {}
    origin: dict[Any, Any] = {}

    def read(v: Any) -> tuple[Any, Any]:
        if isinstance(v, Literal):
            return v.val, None
        return env[v], origin[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v], origin[v] = x, (INPUT if _has_inf(x) else None)
    for v, x, o in zip(jaxpr.invars, args, arg_origins):
        env[v], origin[v] = x, o
    for eqn in jaxpr.eqns:
        vals, orgs = zip(*(read(v) for v in eqn.invars)) if eqn.invars else ((), ())
        body = _internals.call_body(eqn)
        if body is not None:
            outs, out_orgs = _run(body.jaxpr, body.consts, list(vals), list(orgs), outer + (eqn,))
        else:
            outs = _internals.eval_equation(eqn, list(vals))
            came = next((o for o in orgs if o is not None), None)
            out_orgs = [None if not _has_inf(x) else (came or outer + (eqn,)) for x in outs]
        for v, x, o in zip(eqn.outvars, outs, out_orgs):
            env[v], origin[v] = x, o
    results = [read(v) for v in jaxpr.outvars]
    return [r[0] for r in results], [r[1] for r in results]
