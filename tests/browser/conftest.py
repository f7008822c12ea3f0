"""Real JupyterLab + real Chromium, one server for the whole test session (fast on 2 cores).

The server serves a temporary copy of ``notebooks/`` (tests never modify the repo's
notebooks), with isolated settings (no news prompt) and ``window.jupyterapp`` exposed so
tests can run JupyterLab commands exactly as the menus do.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("JAXMAGIC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
TOKEN = "jaxmagic-test-token"
_workspace_ids = itertools.count()

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server; ``url(path)`` builds authenticated URLs."""

    def __init__(self, port: int, root: pathlib.Path, proc: subprocess.Popen, log: pathlib.Path):
        self.port, self.root, self.proc, self.log = port, root, proc, log

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={TOKEN}"


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[Lab]:
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run the README's test command, which installs it")
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "html"))
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    port = _free_port()
    log = base / "lab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.disable_check_xsrf=True",
        "--LabServerApp.open_browser=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root; Jupyter refuses without it
    proc = subprocess.Popen(
        cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield Lab(port, root, proc, log)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()
    shutdown_kernels(lab)


def shutdown_kernels(lab: Lab) -> None:
    """Stop every kernel the test started, so later tests get the CPU (2 cores here)."""
    with urllib.request.urlopen(lab.url("api/kernels"), timeout=10) as resp:
        kernels = json.load(resp)
    for k in kernels:
        req = urllib.request.Request(lab.url(f"api/kernels/{k['id']}"), method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except Exception:
            pass


def dismiss_dialogs(page) -> None:
    """Close any JupyterLab dialog (kernel choice, news, ...) by accepting its default."""
    for _ in range(3):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() == 0:
            return
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def open_notebook(page, lab: Lab, name: str, *, timeout: float = 120_000) -> None:
    """Open ``notebooks/<name>`` in JupyterLab and wait for an idle kernel."""
    # A fresh workspace per page: otherwise JupyterLab restores notebooks earlier tests opened
    # and the one under test may not be the current widget.
    workspace = "t" + "".join(ch for ch in name if ch.isalnum()) + str(next(_workspace_ids))
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{name}?reset"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout)
    wait_kernel_idle(page, timeout=timeout)
    dismiss_dialogs(page)


def wait_kernel_idle(page, *, timeout: float = 120_000) -> None:
    page.wait_for_function(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                 const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                 return k && k.status === 'idle'; }""",
        timeout=timeout,
    )


def run_all(page, *, timeout: float = 300_000) -> None:
    """Run every cell (as Run ▸ Run All Cells does) and wait until all have executed."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget; if (!w || !w.content) return false;
                 const cells = w.content.widgets.filter(c => c.model.type === 'code');
                 const k = w.sessionContext.session && w.sessionContext.session.kernel;
                 return k && k.status === 'idle' &&
                        cells.every(c => c.model.executionCount !== null && !c.node.querySelector('.jp-InputPrompt').textContent.includes('*')); }""",
        timeout=timeout,
        polling=500,
    )


def run_notebook(page, lab: Lab, name: str, *, timeout: float = 300_000) -> None:
    """Open ``notebooks/<name>``, run every cell, close any dialog, and fail on an error output."""
    open_notebook(page, lab, name)
    run_all(page, timeout=timeout)
    dismiss_dialogs(page)
    errors = error_outputs(page)
    assert errors == [], f"{name}: error outputs {errors}"


def error_outputs(page) -> list[str]:
    """``ename: evalue`` of every error output in the open notebook (read from the model)."""
    return page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
                 .filter(c => c.model.type === 'code')
                 .flatMap(c => c.model.outputs.toJSON())
                 .filter(o => o.output_type === 'error')
                 .map(o => o.ename + ': ' + o.evalue)"""
    )


def painted_text(locator, *needles: str, timeout: float = 30_000) -> str:
    """The text a person sees in ``locator``, read once JupyterLab has painted it.

    JupyterLab renders cells outside the viewport lazily, and until it paints them their
    ``innerText`` is empty even though the DOM (``textContent``) is there: scroll to the element,
    wait until its visible text holds every needle, then read it.
    """
    from playwright.sync_api import expect

    locator.scroll_into_view_if_needed()
    for needle in needles:
        expect(locator).to_contain_text(needle, use_inner_text=True, timeout=timeout)
    return locator.inner_text()


def assert_visible(locator) -> None:
    """Scroll to ``locator`` and check a person would see it: visible and of a real size."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert locator.is_visible() and box and box["width"] > 200 and box["height"] > 40, box
