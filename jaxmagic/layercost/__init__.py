"""Per-layer cost of one NNX module call (``jaxmagic.tabulate``, ``%jaxtabulate``): no IPython."""

from jaxmagic.layercost.capture import LayerCallError, tabulate
from jaxmagic.layercost.report import LayerCostReport, LayerRow

__all__ = ["LayerCallError", "LayerCostReport", "LayerRow", "tabulate"]
