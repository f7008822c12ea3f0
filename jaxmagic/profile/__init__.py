"""Profile what JAX does in a block of code: capture → ProfileReport → render.

Example::

    from jaxmagic.profile import Profiler
    with Profiler() as prof:
        f(x)
    report = prof.report()
"""

from jaxmagic.profile.capture import Profiler
from jaxmagic.profile.insights import Insight
from jaxmagic.profile.report import CompileRecord, FunctionProfile, ProfileReport

__all__ = ["CompileRecord", "FunctionProfile", "Insight", "ProfileReport", "Profiler"]
