"""The jaxmagic trainer: Flax NNX + Optax + Orbax, fast, interrupt-safe and resumable.

Importable without IPython; progress views are callbacks (the notebook widget lives in
``jaxmagic.widgets.progress`` and is loaded only inside a notebook kernel).
"""

from jaxmagic.train.callbacks import Callback as Callback
from jaxmagic.train.callbacks import EarlyStopping as EarlyStopping
from jaxmagic.train.callbacks import LearningRateLogger as LearningRateLogger
from jaxmagic.train.callbacks import MetricLogger as MetricLogger
from jaxmagic.train.checkpoint import CheckpointMismatchError as CheckpointMismatchError
from jaxmagic.train.history import History as History
from jaxmagic.train.history import RunRecord as RunRecord
from jaxmagic.train.progress import Progress as Progress
from jaxmagic.train.progress import TerminalProgress as TerminalProgress
from jaxmagic.train.trainer import Trainer as Trainer
from jaxmagic.train.trainer import TrainingDivergedError as TrainingDivergedError

__all__ = [
    "Callback",
    "CheckpointMismatchError",
    "EarlyStopping",
    "History",
    "LearningRateLogger",
    "MetricLogger",
    "Progress",
    "RunRecord",
    "TerminalProgress",
    "Trainer",
    "TrainingDivergedError",
]
