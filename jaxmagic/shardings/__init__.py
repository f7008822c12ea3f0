"""Layout maths for shardings (no data movement) and the ``jaxmagic.sharding`` report.

Plural because ``jaxmagic.sharding`` is the public function; a package of that name would shadow it.
"""

from jaxmagic.shardings.layout import ArrayLayout, layout_from_sharding, layout_from_spec
from jaxmagic.shardings.mesh import MeshInfo, mesh_info
from jaxmagic.shardings.report import ShardingReport, sharding
from jaxmagic.shardings.spec import SpecError, normalize_spec, parse_spec_text, spec_str, validate_spec

__all__ = [
    "ArrayLayout",
    "MeshInfo",
    "ShardingReport",
    "SpecError",
    "layout_from_sharding",
    "layout_from_spec",
    "mesh_info",
    "normalize_spec",
    "parse_spec_text",
    "sharding",
    "spec_str",
    "validate_spec",
]
