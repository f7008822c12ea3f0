"""Structure summaries of PyTrees, Flax NNX/Linen state, Optax state and Orbax checkpoints.

Plural because ``jaxmagic.tree`` is the public function; a package of that name would shadow it.
"""

from jaxmagic.trees.checkpoint import CheckpointError
from jaxmagic.trees.leaves import Leaf
from jaxmagic.trees.summary import Totals, TreeSummary, tree

__all__ = ["CheckpointError", "Leaf", "Totals", "TreeSummary", "tree"]
