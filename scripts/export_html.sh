#!/usr/bin/env bash
# Execute every notebook in notebooks/ (or the ones named) and write an HTML copy of each,
# with its outputs, to notebooks/html/ (git-ignored) for reading offline. The stored
# notebooks stay without outputs.
#
# Widget outputs are exported as their static HTML snapshot (every jaxmagic widget carries
# one): nbconvert would otherwise emit a widget view that needs the widget manager's script
# from a CDN, which shows nothing offline. jaxmagic's reports are self-contained HTML.
#   bash scripts/export_html.sh                      # all notebooks
#   bash scripts/export_html.sh 04_jit_pipeline      # just one (name with or without .ipynb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  source scripts/_setup.sh
  PYTHON=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the kernel imports this checkout's jaxmagic
exec "$PYTHON" - "$@" <<'PY'
import pathlib, sys, tempfile, time

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

WIDGET = "application/vnd.jupyter.widget-view+json"
src, out = pathlib.Path("notebooks"), pathlib.Path("notebooks/html")
out.mkdir(exist_ok=True)
names = [src / (n if n.endswith(".ipynb") else n + ".ipynb") for n in sys.argv[1:]] or sorted(src.glob("*.ipynb"))
failed = []
for path in names:
    t0 = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    workdir = tempfile.mkdtemp(prefix=f"export-{path.stem}-")   # kernel cwd: checkpoints land here
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": workdir}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if WIDGET in data and "text/html" in data:
                del data[WIDGET]                                  # keep the static snapshot
    nb.metadata.pop("widgets", None)
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = out / f"{path.stem}.html"
    target.write_text(html, encoding="utf-8")
    note = f", {len(errors)} error output(s)" if errors else ""
    print(f"{target}  ({time.perf_counter() - t0:.0f} s{note})")
    if errors:
        failed.append(path.name)
sys.exit(f"errors in: {', '.join(failed)}" if failed else 0)
PY
