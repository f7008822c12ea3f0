"""Test harness shared by every layer (unit, IPython, notebook, browser, multi-process).

8 simulated CPU devices are configured before anything imports jax, so meshes, sharding
and collectives are real on one machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> pathlib.Path:
    """Where tests leave screenshots and files for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def ipshell():
    """One real IPython InteractiveShell for the whole session, with jaxmagic loaded."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jaxmagic")
    return shell


@pytest.fixture
def ip(ipshell):
    """The session shell with jaxmagic (re)loaded; user namespace entries added by a test are removed."""
    before = set(ipshell.user_ns)
    if "jaxmagic" not in ipshell.extension_manager.loaded:
        ipshell.run_line_magic("load_ext", "jaxmagic")
    yield ipshell
    for name in set(ipshell.user_ns) - before:
        ipshell.user_ns.pop(name, None)
