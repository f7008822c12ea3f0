"""The interactive sharding explorer: pick the grid dimensions, step through facets, hover
a device to see everything it holds, and edit a PartitionSpec to see the layout and the
per-device bytes it would give, without moving any data.

All layout maths runs in Python (the same code the static report and the tests use); the
browser only draws. An edited spec arrives as ``spec_request``; a bad one sets ``error``
and never raises out of the widget.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import anywidget
import traitlets

from jaxmagic.shardings.report import ShardingReport
from jaxmagic.shardings.spec import normalize_spec


def _array_payload(a: Any, kind: str, edited: bool) -> dict[str, Any]:
    return {
        "name": a.name, "kind": kind or "-", "shape": list(a.shape), "dtype": a.dtype, "type": a.type_str,
        "spec": [list(x) for x in a.spec] if a.spec is not None else None, "spec_text": a.spec_text,
        "itemsize": a.itemsize, "edited": edited, "shard_shape": list(a.shard_shape),
        "mesh_axes": list(a.mesh.axis_names), "mesh_sizes": list(a.mesh.axis_sizes),
        "device_ids": [int(d) for d in a.device_ids], "starts": a.starts.tolist(), "stops": a.stops.tolist(),
        "shard_ids": a.shard_ids.tolist(), "bytes": a.device_bytes().tolist(),
        "replication": a.replication, "num_shards": a.num_shards,
    }


def payload(report: ShardingReport) -> dict[str, Any]:
    """What the browser draws: the report as plain JSON (per-device index ranges included)."""
    kinds = report.kinds or ("",) * len(report.arrays)
    mesh = report.mesh
    return {
        "name": report.name, "source": report.source,
        "mesh": mesh.to_dict() if mesh else None, "mesh_text": mesh.describe() if mesh else "",
        "device_bytes": [[d, b] for d, b in report.device_bytes().items()],
        "imbalance": report.imbalance(),
        "arrays": [_array_payload(a, k, a.name in report.edited) for a, k in zip(report.arrays, kinds)],
        "skipped": [list(s) for s in report.skipped],
    }


class ShardingExplorer(anywidget.AnyWidget):
    """Interactive view of a :class:`ShardingReport`.

    Example:
        >>> jaxmagic.sharding(state).explore()
    """

    _esm = pathlib.Path(__file__).with_name("sharding.js")
    # The layout travels as one JSON string: ipywidgets walks nested lists/dicts looking for
    # binary buffers, which made a 2,000-leaf tree take about a second to send.
    data_json = traitlets.Unicode("{}").tag(sync=True)
    selected = traitlets.Int(0).tag(sync=True)
    dims = traitlets.List(traitlets.Int(), default_value=[]).tag(sync=True)
    spec_request = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)

    def __init__(self, report: ShardingReport, **kwargs: Any) -> None:
        if not report.arrays:
            raise ValueError("nothing to explore: the report has no arrays placed on devices")
        self._original = report
        self._requests = 0
        self._report = report
        biggest = max(range(len(report.arrays)), key=lambda i: report.arrays[i].nbytes)
        first = report.arrays[biggest]
        super().__init__(data_json=json.dumps(payload(report)), selected=biggest,
                         dims=list(report.grid_dims(first)), **kwargs)

    @property
    def data(self) -> dict[str, Any]:
        """What the browser draws (decoded from ``data_json``)."""
        return json.loads(self.data_json)

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

    @traitlets.observe("selected")
    def _on_select(self, change: dict[str, Any]) -> None:
        self.error = ""

    @traitlets.observe("spec_request")
    def _on_spec_request(self, change: dict[str, Any]) -> None:
        req = change["new"] or {}
        try:
            name = req.get("name")
            if req.get("reset"):
                if name is None:
                    self._report = self._original
                else:
                    orig = next(a for a in self._original.arrays if a.name == name)
                    from dataclasses import replace

                    arrays = tuple(orig if a.name == name else a for a in self._report.arrays)
                    self._report = replace(self._report, arrays=arrays,
                                           edited=tuple(e for e in self._report.edited if e != name))
                self.error, self.status = "", f"reset {name or 'all arrays'}"
            else:
                spec = req.get("spec")
                if isinstance(spec, list):
                    spec = tuple(tuple(x) if isinstance(x, list) else x for x in spec)
                self._report = self._report.with_spec(name, spec)
                lay = next(a for a in self._report.arrays if a.name == name)
                self.error, self.status = "", f"{name}: {lay.spec_text}"
            self.data_json = json.dumps(payload(self._report))
        except Exception as e:  # the widget reports, it never raises into the comm handler
            self.error = f"{e}" if isinstance(e, (ValueError, KeyError)) else f"{type(e).__name__}: {e}"

    # -- static faces -----------------------------------------------------------------
    def __repr__(self) -> str:
        return f"ShardingExplorer({self._report.summary()})"

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["text/plain"] = self._report.to_text()
        data["text/html"] = self._report.to_html()  # what a saved notebook without widget state shows
        return data, meta
