"""The result-object protocol shared by every user-facing report.

A report implements ``summary()`` (one short line), ``to_text(width)``, ``to_html()`` and
``to_dict()``. This mixin turns those into IPython's display protocol:
``__repr__`` -> the short line, ``_repr_pretty_`` -> full text (terminal IPython and
``text/plain``), ``_repr_html_`` -> full HTML (JupyterLab, nbconvert).
"""

from __future__ import annotations

import json
from typing import Any


class Result:
    """Mixin for report objects; subclasses provide the four methods below.

    Subclasses may be dataclasses: ``__init_subclass__`` pins ``__repr__`` and
    ``_repr_pretty_`` on each subclass so a generated dataclass ``__repr__`` cannot shadow
    the short line, and IPython's pretty printer finds the full text first.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__repr__ = Result.__repr__  # type: ignore[method-assign]
        cls._repr_pretty_ = Result._repr_pretty_  # type: ignore[method-assign]

    def summary(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_text(self, width: int = 100) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_html(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary()})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else self.to_text())

    def _repr_html_(self) -> str:
        return self.to_html()
