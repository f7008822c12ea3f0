"""Speed targets of issue 3, measured side by side in one run.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/bench_structure.py

Targets: a 1,000-layer NNX model's summary in < 1 s with HTML < 2 MB; a 512-device mesh
(simulated) and a 2,000-leaf sharded tree each rendered in < 1 s. Baselines in the same run:
``nnx.tabulate``-free references that users reach for today (treescope, nnx's own repr).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

import jaxmagic  # noqa: E402


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


class Deep(nnx.Module):
    def __init__(self, n, rngs):
        self.layers = nnx.List([nnx.Linear(16, 16, rngs=rngs) for _ in range(n)])


def main() -> None:
    big = Deep(1000, nnx.Rngs(0))
    t_sum, s = best(lambda: jaxmagic.tree(big, name="big"))
    t_html, h = best(lambda: s.to_html())
    t_text, _ = best(lambda: s.to_text())
    t_repr, _ = best(lambda: repr(big), repeat=1)
    import treescope

    t_ts, ts = best(lambda: treescope.render_to_html(big, roundtrip_mode=False, compressed=True), repeat=1)
    print(f"1000-layer NNX model ({len(s.leaves)} leaves)")
    print(f"  jaxmagic.tree capture        {t_sum * 1e3:8.1f} ms")
    print(f"  + to_html                    {t_html * 1e3:8.1f} ms   HTML {len(h) / 1e6:.2f} MB")
    print(f"  + to_text                    {t_text * 1e3:8.1f} ms")
    print(f"  summary total (capture+html) {(t_sum + t_html) * 1e3:8.1f} ms   target < 1000 ms")
    print(f"  baseline: nnx repr           {t_repr * 1e3:8.1f} ms")
    print(
        f"  baseline: treescope html     {t_ts * 1e3:8.1f} ms   HTML {len(ts) / 1e6:.2f} MB "
        f"(ratio to jaxmagic summary {t_ts / (t_sum + t_html):.1f}x)"
    )

    t_mesh, r = best(
        lambda: jaxmagic.sharding(shape=(1024, 4096), mesh={"data": 64, "model": 8}, spec=P("data", "model"))
    )
    t_mesh_r, hm = best(lambda: (r.to_html(), r.to_text()))
    print(
        f"512-device simulated mesh: layout {t_mesh * 1e3:.1f} ms + html/text {t_mesh_r * 1e3:.1f} ms "
        f"= {(t_mesh + t_mesh_r) * 1e3:.1f} ms (target < 1000 ms), HTML {len(hm[0]) / 1e3:.0f} kB"
    )

    mesh = jax.make_mesh((2, 4), ("data", "model"))
    tree = {
        f"layer{i}": {
            "w": jax.ShapeDtypeStruct(
                (256, 128), jnp.float32, sharding=NamedSharding(mesh, P("data", "model" if i % 2 else None))
            )
        }
        for i in range(2000)
    }
    t_tree, rt = best(lambda: jaxmagic.sharding(tree))
    t_tree_r, ht = best(lambda: (rt.to_html(), rt.to_text()))
    t_w, w = best(lambda: rt.explore(), repeat=1)
    specs = iter([P("model", "data"), P("data", None)] * 10)
    t_edit, _ = best(lambda: w.edit_spec("layer5.w", next(specs)))  # Python's half of the round trip
    print(
        f"2000-leaf sharded tree: layout {t_tree * 1e3:.1f} ms + html/text {t_tree_r * 1e3:.1f} ms "
        f"= {(t_tree + t_tree_r) * 1e3:.1f} ms (target < 1000 ms), HTML {len(ht[0]) / 1e6:.2f} MB; "
        f"explorer widget build {t_w * 1e3:.1f} ms, spec edit {t_edit * 1e3:.1f} ms"
    )
    arrays = [
        jax.device_put(jnp.zeros((64, 32)), NamedSharding(mesh, P("data", "model"))) for _ in range(2000)
    ]
    t_real, rr = best(lambda: jaxmagic.sharding(arrays))
    t_real_r, _ = best(lambda: rr.to_html())
    print(f"2000 real sharded arrays: layout {t_real * 1e3:.1f} ms + html {t_real_r * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
