"""Helpers shared by the test modules: HTML checks, IPython cells, notebooks, tiny trainers.

One module, so a test never imports another test module. Sections:

- HTML: ``parse_html`` checks that tags balance and that a page is self-contained, and gives
  the tags, attributes and text for assertions (parse HTML, do not compare it).
- IPython: ``run`` a cell and capture what it showed; ``global_state`` that profiling must
  leave untouched.
- Notebooks: execute ``notebooks/<name>`` once per session and read its outputs.
- Trainer: a tiny model, data and loss (kept small: 2 shared CPU cores).
"""

from __future__ import annotations

import dataclasses
import functools
import html.parser
import os
import pathlib
import re
import tempfile
import time
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"

# -- HTML ----------------------------------------------------------------------------------

# Elements without an end tag (HTML void elements, and SVG shapes we write as ``<rect/>``).
VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
        "rect",
        "path",
        "circle",
        "line",
        "polyline",
        "polygon",
    }
)
_URL_ATTRS = ("src", "href", "xlink:href", "action", "data")
_REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
_CSS_REMOTE = re.compile(r"(url\(\s*['\"]?\s*(https?:)?//|@import)", re.I)


@dataclasses.dataclass
class Page:
    """A parsed HTML fragment.

    Attributes:
        elements: ``(tag, attrs)`` of every start tag, in document order.
        text: the text a reader sees (script and style bodies excluded), whitespace as written.
        scripts: bodies of inline ``<script>`` elements.
        styles: bodies of ``<style>`` elements.
        details: ``(attrs, summary text)`` of every ``<details>``, in document order.
    """

    elements: list[tuple[str, dict[str, str | None]]]
    text: str
    scripts: list[str]
    styles: list[str]
    details: list[tuple[dict[str, str | None], str]] = dataclasses.field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [t for t, _ in self.elements]

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.elements)

    @property
    def classes(self) -> set[str]:
        return {c for _, a in self.elements for c in (a.get("class") or "").split()}

    def attr(self, name: str, tag: str | None = None) -> list[str]:
        """Values of attribute ``name`` (on ``tag`` elements only, if given), in document order."""
        return [a[name] or "" for t, a in self.elements if name in a and (tag is None or t == tag)]

    @property
    def words(self) -> str:
        """``text`` with runs of whitespace collapsed to one space."""
        return " ".join(self.text.split())


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.details: list[list] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "details":
            self.details.append([dict(attrs), ""])
        if tag == "script":
            self.scripts.append("")
        elif tag == "style":
            self.styles.append("")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        inside = self.stack[-1] if self.stack else None
        if inside == "script":
            self.scripts[-1] += data
        elif inside == "style":
            self.styles[-1] += data
        else:
            self.text.append(data)
            if "summary" in self.stack and self.details:
                self.details[-1][1] += data


def parse_html(page: str, *, self_contained: bool = True) -> Page:
    """Parse ``page``; assert that its tags balance and (by default) that it is self-contained.

    Self-contained: no ``src``/``href`` to an http(s) or protocol-relative URL, no stylesheet
    ``<link>``, no remote ``url(...)`` or ``@import`` in CSS — a saved notebook must render
    offline. (An SVG ``xmlns`` is a name, not a fetch, and is allowed.)
    """
    p = _Parser()
    p.feed(page)
    p.close()
    assert p.errors == [] and p.stack == [], f"unbalanced HTML: {p.errors} still open: {p.stack}"
    result = Page(p.elements, "".join(p.text), p.scripts, p.styles, [(a, t) for a, t in p.details])
    if self_contained:
        assert_self_contained(result)
    return result


def assert_self_contained(page: Page) -> None:
    """No network fetch: see ``parse_html``."""
    remote = [
        f"<{t} {n}={a[n]!r}>"
        for t, a in page.elements
        for n in _URL_ATTRS
        if a.get(n) and _REMOTE.match(a[n] or "")
    ]
    assert remote == [], f"fetches from the network: {remote}"
    assert "link" not in page.tags, "a <link> element loads an external resource"
    css = "\n".join(page.styles) + "\n".join(a.get("style") or "" for _, a in page.elements)
    assert not _CSS_REMOTE.search(css), "CSS loads an external resource"


# -- IPython -------------------------------------------------------------------------------


def run(ip: Any, cell: str) -> tuple[Any, str]:
    """Run a cell; return its result and everything it showed as text (stdout, stderr and
    the text/plain of displayed objects, in that order)."""
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        result = ip.run_cell(cell)
    shown = "".join(o.data.get("text/plain", "") + "\n" for o in cap.outputs)
    return result, cap.stdout + cap.stderr + shown


def global_state() -> tuple:
    """Everything profiling may touch; must be identical before and after."""
    import logging
    import warnings

    from jaxmagic import _internals

    module, name = _internals.lowering_target()
    array = _internals.array_impl()
    return (
        bool(jax.config.jax_explain_cache_misses),
        bool(jax.config.jax_enable_x64),
        _internals.monitoring_listeners(),
        {n: tuple(logging.getLogger(n).filters) for n in _internals.cache_miss_loggers()},
        tuple(logging.getLogger("jax").handlers),
        getattr(module, name),
        _internals.eval_trace().process_primitive,
        _internals.host_copy_descriptor(),
        array.__dict__.get("block_until_ready"),
        array.__dict__.get("__add__"),
        array.__dict__.get("__getitem__"),
        warnings.showwarning,
        "update" in vars(jax.config),
        jax.numpy.asarray,
        jax.numpy.array,
        jax.device_put,
    )


# -- notebooks -----------------------------------------------------------------------------


@functools.cache
def execute(name: str, timeout: int = 300):
    """Run ``notebooks/<name>`` top to bottom in a fresh kernel; returns ``(nb, seconds)``.

    The kernel's working directory is a fresh temporary folder, and ``PYTHONPATH`` points at
    this checkout so the kernel imports the jaxmagic under test.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env_pp = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["PYTHONPATH"] = env_pp  # inherited by the kernel process
    workdir = tempfile.mkdtemp(prefix=f"nb-{pathlib.Path(name).stem}-")
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": workdir}},
    )
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs(nb: Any, mime: str | None = None) -> list:
    """Every output of every code cell (optionally only those carrying ``mime``)."""
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    if mime is None:
        return outs
    return [o for o in outs if mime in o.get("data", {})]


def errors(nb: Any) -> list[str]:
    """``"Name: value"`` of every error output."""
    return [f"{o['ename']}: {o['evalue']}" for o in outputs(nb) if o.get("output_type") == "error"]


def cell_outputs(nb: Any, tag: str) -> list:
    """Outputs of the cells whose source contains the marker comment ``# test: <tag>``."""
    marker = f"# test: {tag}"
    return [o for c in nb.cells if c.cell_type == "code" and marker in c.source for o in c.outputs]


def tagged_text(name: str, tag: str) -> str:
    """The text of the outputs of ``notebooks/<name>``'s cells tagged ``# test: <tag>`` (the
    notebook executed once per session); fails when the tag has no output."""
    outs = cell_outputs(execute(name)[0], tag)
    assert outs, f"{name}: no outputs for the cell tagged {tag!r}"
    return text_of(outs)


def text_of(outs: list) -> str:
    """All stream, text/plain and text/html text of ``outs``, one part per line.

    Consecutive outputs of one stream are joined as the front end shows them: a kernel may
    send one ``print`` in several chunks, and where it splits depends on timing.
    """
    parts: list[str] = []
    stream = None
    for o in outs:
        if o.get("output_type") == "stream":
            if stream == o.get("name"):
                parts[-1] += o.get("text", "")
            else:
                parts.append(o.get("text", ""))
            stream = o.get("name")
            continue
        stream = None
        data = o.get("data", {})
        parts.extend(data[m] for m in ("text/plain", "text/html") if data.get(m))
    return "\n".join(parts)


def words(text: str) -> str:
    """``text`` with runs of whitespace collapsed to one space: what it says, not its layout."""
    return " ".join(text.split())


# -- trainer -------------------------------------------------------------------------------


class TinyMLP(nnx.Module):
    def __init__(
        self,
        din: int = 8,
        width: int = 16,
        dout: int = 3,
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        self.l1 = nnx.Linear(din, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs) if batchnorm else None
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.l2 = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        h = self.l1(x)
        if self.bn is not None:
            h = self.bn(h)
        h = nnx.relu(h)
        if self.drop is not None:
            h = self.drop(h)
        return self.l2(h)


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def dataset(n: int = 200, din: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, din)).astype(np.float32)
    w = rng.normal(size=(din, classes)).astype(np.float32)
    y = np.argmax(X @ w, axis=1).astype(np.int32)
    return X, y


def batches(X, y, batch_size: int, n: int):
    return [
        (X[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size]) for i in range(n)
    ]


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def one_device():
    return jax.devices()[:1]
