"""The interactive sharding explorer: pick the grid dimensions, step through facets, hover
a device to see everything it holds, and edit a PartitionSpec to see the layout and the
per-device bytes it would give, without moving any data.

Python computes, the browser draws: every layout, grid cell, label and colour comes from
``render/explorer.py`` (the same maths and formatters as the static faces); ``sharding.js``
only builds DOM from it and reports what the user did through the ``selected``, ``dims``,
``facet``, ``pinned`` and ``spec_request`` traits. A bad spec sets ``error`` and never raises
out of the widget.

Plan mode (``jaxmagic.sharding(fn=..., args=...)``, ``%jaxsharding --plan``): the arrays are
a call's inputs, and every spec edit plans the call again (compiled, never run) and sends its
peak memory per device and collectives as ``plan_json``; a spec the call cannot be planned
with sets ``error`` and leaves the layout and the plan as they were.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import anywidget
import traitlets

from jaxmagic.render.explorer import array_view, default_dims, fix_dims, plan_view, report_view
from jaxmagic.render.html import CSS_PATH
from jaxmagic.shardings.report import ShardingReport
from jaxmagic.shardings.spec import normalize_spec, parse_spec_entries


class ShardingExplorer(anywidget.AnyWidget):
    """Interactive view of a :class:`ShardingReport`.

    Example:
        >>> jaxmagic.sharding(state).explore()
    """

    _esm = pathlib.Path(__file__).with_name("sharding.js")
    _css = CSS_PATH
    # Views travel as JSON strings: ipywidgets walks nested lists/dicts looking for binary
    # buffers, which made a 2,000-leaf tree take about a second to send.
    data_json = traitlets.Unicode("{}").tag(sync=True)  # report_view: changes on spec edits
    view_json = traitlets.Unicode("{}").tag(sync=True)  # array_view: changes on every pick
    plan_json = traitlets.Unicode("{}").tag(sync=True)  # plan_view (plan mode): changes on spec edits
    # what the browser reports
    selected = traitlets.Int(0).tag(sync=True)
    dims = traitlets.List(traitlets.Int(), default_value=[]).tag(sync=True)
    facet = traitlets.List(traitlets.Int(), default_value=[]).tag(sync=True)
    pinned = traitlets.Int(-1).tag(sync=True)  # device clicked in the bytes list; -1: none
    spec_request = traitlets.Dict().tag(sync=True)
    # what Python answers besides the views
    error = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)

    def __init__(self, report: ShardingReport, **kwargs: Any) -> None:
        if not report.arrays:
            raise ValueError("nothing to explore: the report has no arrays placed on devices")
        self._original = report
        self._report = report
        self._requests = 0
        self._drafts: dict[str, list[str]] = {}
        self._rows: dict[Any, Any] = {}  # formatted table rows per layout (report_view's cache)
        self._handles: list[Any] = []  # where _ipython_display_ showed this widget
        self._quiet = True  # no observer work until the first views are in place
        biggest = max(range(len(report.arrays)), key=lambda i: report.arrays[i].nbytes)
        super().__init__(selected=biggest, dims=default_dims(report, report.arrays[biggest]), **kwargs)
        self._quiet = False
        self.data_json = json.dumps(report_view(report, self._rows))
        self.plan_json = json.dumps(plan_view(report))
        self._refresh_view()

    @property
    def data(self) -> dict[str, Any]:
        """The report part of what the browser draws (decoded from ``data_json``)."""
        return json.loads(self.data_json)

    @property
    def view(self) -> dict[str, Any]:
        """The selected array's part of what the browser draws (decoded from ``view_json``)."""
        return json.loads(self.view_json)

    @property
    def plan(self) -> dict[str, Any]:
        """Plan mode: the plan as drawn (decoded from ``plan_json``; ``{}`` otherwise)."""
        return json.loads(self.plan_json)

    @property
    def report(self) -> ShardingReport:
        """The report as currently shown (edited specs included)."""
        return self._report

    # -- actions (the browser sends the same through traits) --------------------------
    def edit_spec(self, name: str, spec: Any) -> bool:
        """Lay leaf ``name`` out with ``spec``; returns False (and sets ``error``) if invalid."""
        try:
            spec = spec if isinstance(spec, (str, list)) else [list(x) for x in normalize_spec(spec)]
        except ValueError as e:
            self.error = str(e)
            return False
        self._requests += 1
        self.spec_request = {"name": name, "spec": spec, "n": self._requests}
        return not self.error

    def reset(self, name: str | None = None) -> None:
        """Undo edits of ``name`` (or of every leaf)."""
        self._requests += 1
        self.spec_request = {"name": name, "reset": True, "n": self._requests}

    # -- observers: every change the browser reports becomes a new view -------------------
    def _refresh_view(self) -> None:
        a = self._report.arrays[self.selected]
        pinned = self.pinned if self.pinned >= 0 else None
        self.view_json = json.dumps(
            array_view(self._report, self.selected, self.dims, self.facet, pinned, self._drafts.get(a.name))
        )

    def _set_quietly(self, **traits: Any) -> None:
        self._quiet = True
        try:
            for k, v in traits.items():
                setattr(self, k, v)
        finally:
            self._quiet = False

    @traitlets.validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if not 0 <= value < len(self._original.arrays):
            raise traitlets.TraitError(
                f"selected must be in 0..{len(self._original.arrays) - 1}, got {value}"
            )
        return value

    @traitlets.observe("selected")
    def _on_select(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        a = self._report.arrays[self.selected]
        self._set_quietly(dims=default_dims(self._report, a), facet=[], error="")
        self._refresh_view()

    @traitlets.observe("dims")
    def _on_dims(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        a = self._report.arrays[self.selected]
        dims = fix_dims(a, change["new"], change["old"], default_dims(self._report, a))
        self._set_quietly(dims=dims, facet=[])
        self._refresh_view()

    @traitlets.observe("facet", "pinned")
    def _on_pick(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._refresh_view()

    @traitlets.observe("spec_request")
    def _on_spec_request(self, change: dict[str, Any]) -> None:
        req = change["new"] or {}
        name = req.get("name")
        try:
            if req.get("reset"):
                self._report = self._reset(name)
                if name is None:
                    self._drafts.clear()
                else:
                    self._drafts.pop(name, None)
                self.error, self.status = "", f"reset {name or 'all arrays'}"
            else:
                if "entries" in req:  # the editor's texts, one per dimension
                    self._drafts[name] = [str(t) for t in req["entries"]]
                    spec: Any = parse_spec_entries(req["entries"])
                else:
                    spec = req.get("spec")
                    if isinstance(spec, list):
                        spec = tuple(tuple(x) if isinstance(x, list) else x for x in spec)
                self._report = self._report.with_spec(name, spec)
                self._drafts.pop(name, None)
                lay = next(a for a in self._report.arrays if a.name == name)
                self.error, self.status = "", f"{name}: {lay.spec_text}"
            self.data_json = json.dumps(report_view(self._report, self._rows))
            self.plan_json = json.dumps(plan_view(self._report))
            self._update_snapshot()
        except Exception as e:  # the widget reports, it never raises into the comm handler
            self.error = f"{e}" if isinstance(e, (ValueError, KeyError)) else f"{type(e).__name__}: {e}"
        self._refresh_view()

    def _reset(self, name: str | None) -> ShardingReport:
        if name is None:
            return self._original
        orig = next(a for a in self._original.arrays if a.name == name)
        arrays = tuple(orig if a.name == name else a for a in self._report.arrays)
        return self._report.with_layouts(arrays, tuple(e for e in self._report.edited if e != name))

    # -- static faces -----------------------------------------------------------------
    def _ipython_display_(self) -> None:
        """Display the widget and keep the output's handle (see ``_update_snapshot``)."""
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        self._handles.append(display(data, metadata=meta, raw=True, display_id=True))

    def _update_snapshot(self) -> None:
        """Plan mode: after an edit, the output's text/plain and text/html fallbacks are made
        again, so a notebook saved (or exported without widget state) shows the last plan."""
        if self._report.call is None or not self._handles:
            return
        bundle = self._repr_mimebundle_()
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        for handle in self._handles:
            handle.update(data, metadata=meta, raw=True)

    def __repr__(self) -> str:
        return f"ShardingExplorer({self._report.summary()})"

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["text/plain"] = self._report.to_text()
        data["text/html"] = self._report.to_html()  # what a saved notebook without widget state shows
        return data, meta
