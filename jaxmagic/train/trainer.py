"""``Trainer``: fit a Flax NNX model with an Optax optimizer, live progress and Orbax checkpoints.

How a ``fit`` runs:

1. **Plan** (:class:`~jaxmagic.train.plan.FitPlan`): everything is validated before the first
   step — model, loss output (abstractly evaluated, and traceable), metric inputs, data
   structure, batch size vs. data-parallel devices, eval data, checkpoint directory — and the
   call length, evaluation and checkpoint schedule are fixed. A bad input raises a clear error
   and changes nothing.
2. **Run**: the model is split once into ``graphdef`` + state (no graph traversal in the hot
   loop). One compiled call runs ``K`` steps with ``lax.scan`` over the donated train state;
   ``K`` is chosen from the model size (``steps_per_call="auto"``) and each distinct call
   length compiles once (ahead of time, timed, so ETAs exclude it).
3. A background thread prepares the next calls' inputs. Metrics stay on the device and are
   read one call behind (``copy_to_host_async``), so the host never waits for the step it
   just launched; progress views read host-side numbers only.
4. ``Ctrl-C`` / the notebook's interrupt, the widget's Stop button, callbacks and early
   stopping all set a flag that is honoured at the next call boundary; the user's model
   object is updated in a ``finally`` so it always holds the last completed step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmagic import devicepeak
from jaxmagic._format import plural
from jaxmagic.train import distributed as dist
from jaxmagic.train import divergence as dv
from jaxmagic.train import flight, recorder
from jaxmagic.train.callbacks import Callback, CallbackList
from jaxmagic.train.checkpoint import Checkpointer
from jaxmagic.train.data import (
    ArrayFeed,
    Chunk,
    IterFeed,
    Prefetcher,
    check_same,
    device_batch,
    host_batches,
    is_array_data,
    spec_of,
)
from jaxmagic.train.history import History, RunRecord
from jaxmagic.train.history_log import HistoryLog
from jaxmagic.train.plan import (
    MAX_STEPS_PER_CALL,
    Boundary,
    EvalPlan,
    FitPlan,
    choose_guard,
    choose_steps_per_call,
    is_int,
    make_feed,
)
from jaxmagic.train.progress import Progress, resolve_progress
from jaxmagic.train.step import StepFns, readable
from jaxmagic.train.validate import abstract_outputs, check_eval_users


class TrainingDivergedError(FloatingPointError):
    """The loss, the gradients or the updates became NaN/Inf; the model holds the last finite
    state. ``divergence``: the step, the layers that went non-finite, the last checkpoint (a dict,
    as in ``History.divergence``); ``trainer.replay_diverged()`` finds the operation."""

    def __init__(self, message: str, step: int, history: History, divergence: dict[str, Any] | None = None):
        super().__init__(message)
        self.step, self.history, self.divergence = step, history, divergence or {}


@dataclasses.dataclass
class _PendingCall:
    """A launched call whose metrics are still being copied to the host."""

    chunk: Chunk
    logs: dict[str, Any]
    bad: Any  # first non-finite step, or -1 (a device scalar)
    record_epochs: bool  # record the epochs that end inside it (unless an eval at its end will)
    rec: Any = None  # the flight recorder's probe of the call's first step (device), or None


def _default_predict(model: Any, batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    if isinstance(batch, dict):
        raise TypeError("predict() with dict batches needs Trainer(predict_fn=lambda model, batch: ...)")
    return model(batch)


def _data_notes(feed: ArrayFeed | IterFeed) -> list[str]:
    """What the run did not train on, and why (shown in the run's message)."""
    if isinstance(feed, IterFeed) and feed.short_batches:
        shown = ", ".join(f"batch {i}: {rows} rows" for i, rows in feed.short_batches[:3])
        more = f" and {len(feed.short_batches) - 3} more" if len(feed.short_batches) > 3 else ""
        return [
            f"{plural(len(feed.short_batches), 'short batch', 'short batches')} not trained ({shown}{more}; "
            f"batch size {feed.spec.batch_size}), as with drop_last=True: every step keeps one shape"
        ]
    if isinstance(feed, ArrayFeed) and feed.dropped:
        return [
            f"{feed.dropped} of {feed.n} examples per epoch not trained (the short last batch is dropped"
            + ("; shuffling changes which each epoch)" if feed.shuffle else ")")
        ]
    return []


class Trainer:
    """Train an ``nnx.Module`` with an optax optimizer, from a notebook cell or a script.

    Args:
      model: the Flax NNX model; it is trained in place and always holds the latest state after
        ``fit`` returns or is interrupted. (A Linen module: wrap it with ``nnx.bridge.ToNNX``.)
      tx: an optax ``GradientTransformation`` (clipping, schedules, accumulation via
        ``optax.chain`` / ``optax.MultiSteps``). Applied to ``nnx.Param`` variables.
      loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, aux)``; ``loss`` a float scalar. It runs
        inside ``jax.jit``: no ``float()``, ``.item()`` or ``np.asarray`` on arrays in it.
      metrics: name -> ``fn(aux, batch) -> scalar`` or an ``nnx.metrics`` object (updated with
        ``loss=``, ``logits=aux`` (or the ``aux`` dict's entries), ``labels=batch[1]`` for
        ``(x, y)`` batches and the batch's own keys for dict batches).
      checkpoint_dir: enable Orbax checkpoints there; a directory with checkpoints is resumed. The
        metric history is kept beside them in ``jaxmagic-history.jsonl``. A directory with
        numbered folders the Trainer did not write (your own Orbax checkpoints) is refused.
      mesh: a ``jax.sharding.Mesh``; batches are split over its ``"data"`` axis and parameters
        sharded by their ``nnx.with_partitioning`` annotations. Default: all devices on ``"data"``.
      devices: devices for the default 1-D mesh instead (``jax.devices()[:1]``: one device).
      seed: shuffling seed for array data (with the epoch: the order is reproducible).
      save_every: also checkpoint every this many steps (at the first call boundary at or after).
      save_every_epoch: checkpoint at the end of every epoch (array data).
      keep: keep the last ``keep`` checkpoints.
      keep_best: also keep the best checkpoint by this evaluation metric (e.g. ``"eval_loss"``;
        needs ``checkpoint_dir`` and ``fit(eval_data=...)``).
      best_mode: ``"min"`` or ``"max"`` for ``keep_best``.
      predict_fn: ``predict_fn(model, batch) -> outputs`` for :meth:`predict`
        (default: ``model(batch[0])`` for tuples, ``model(batch)`` for arrays).
      wrt: which variables are trained (an NNX filter, default ``nnx.Param``); the others
        (BatchNorm statistics, RNG state, a frozen layer: ``wrt=nnx.All(nnx.Param,
        nnx.Not(nnx.PathContains("encoder")))``) are carried through each step, not trained.
      flight: the flight recorder: per layer, the gradient, update and parameter norms of the
        first step of a compiled call, probed on device and read one call behind, in
        ``History.flight`` and the progress widget's heatmap; each record runs that step once
        more, unapplied. ``True``: a record every 100+ steps (~1% of the compute), from when
        the run has trained 25x as long as its train call took to compile (the probe compiles
        on another thread then: a short run is not slowed and has no per-layer records). An int
        ``n``: a record every ``n``+ steps from the first call on (the probe compiles before it,
        beside the train call). ``False``: off.
      guard: how the model is kept at the last finite state when a step goes NaN/Inf.
        ``"call"``: one check per compiled call (every step's loss, the final parameters); a
        call that fails it is rolled back and re-run step by step to find the step. Costs one more
        copy of the train state in device memory during a call. ``"step"``: the loss and the
        gradients checked at every step (one more pass over the gradients per step, no copy;
        an update that turns non-finite from finite gradients shows at the next step's loss).
        ``"auto"``: ``"call"`` unless the copy would take more than a tenth of the device's
        memory.

    Example:
      >>> trainer = Trainer(model, optax.adam(1e-3), loss_fn, checkpoint_dir="runs/mlp")
      >>> history = trainer.fit((X, y), epochs=5, batch_size=64, eval_data=(Xv, yv))
      >>> trainer.evaluate((Xv, yv))["eval_loss"]
    """

    def __init__(
        self,
        model: nnx.Module,
        tx: Any,
        loss_fn: Callable[..., Any],
        *,
        metrics: Mapping[str, Any] | None = None,
        checkpoint_dir: str | None = None,
        mesh: jax.sharding.Mesh | None = None,
        devices: Sequence[Any] | None = None,
        seed: int = 0,
        save_every: int | None = None,
        save_every_epoch: bool = True,
        keep: int = 3,
        keep_best: str | None = None,
        best_mode: str = "min",
        predict_fn: Callable[[Any, Any], Any] | None = None,
        wrt: Any = nnx.Param,
        flight: bool | int = True,
        guard: str = "auto",
    ):
        if not isinstance(model, nnx.Module):
            hint = ""
            if (
                type(model).__module__.startswith("flax.linen")
                or hasattr(model, "init")
                and hasattr(model, "apply")
            ):
                hint = (
                    " This looks like a Linen module: wrap it with "
                    "flax.nnx.bridge.ToNNX(linen_module, rngs=nnx.Rngs(0)) and call "
                    "nnx.bridge.lazy_init(wrapped, example_input) first."
                )
            raise TypeError(
                f"model must be a flax.nnx.Module, got {type(model).__module__}.{type(model).__name__}.{hint}"
            )
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(
                f"tx must be an optax GradientTransformation (e.g. optax.adam(1e-3)), got {type(tx).__name__}"
            )
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}"
            )
        if metrics is not None and not isinstance(metrics, Mapping):
            raise TypeError("metrics must be a dict of name -> function or nnx.metrics object")
        if save_every is not None and (not is_int(save_every) or save_every < 1):
            raise ValueError(f"save_every must be a positive int, got {save_every!r}")
        if keep_best is not None and checkpoint_dir is None:
            raise ValueError(
                f"keep_best={keep_best!r} keeps the best checkpoint, but there is no checkpoint_dir"
            )
        self._model, self.tx, self.loss_fn = model, tx, loss_fn
        self.metrics = dict(metrics or {})
        for name in self.metrics:
            if name == "loss" or name.startswith("eval_") or name == "lr":
                raise ValueError(f"metric name {name!r} is reserved")
        self.seed = int(seed)
        self.save_every, self.save_every_epoch = save_every, save_every_epoch
        self.predict_fn = predict_fn or _default_predict
        self.mesh = dist.resolve_mesh(mesh, devices)
        self.history = History()
        self.progress = Progress()
        self._stop_reason: str | None = None
        self._lock = threading.Lock()
        self._compiled: dict[Any, Any] = {}
        self._compile_seconds: dict[Any, float] = {}
        self._data_position = 0  # batches of an iterable consumed before this trainer resumed
        self._batches_consumed = 0  # of the running fit's iterable, through the last finished step
        self._resume_position: dict[str, Any] | None = None  # a restored iterator position, for the next fit
        self._position: dict[str, Any] | None = None  # stateful iterator's, after the last finished step
        self._model_dirty = False
        self._running = False
        self._saving = False  # a checkpoint save is being started (a third Ctrl-C aborts it)
        self._diverged: dv.Divergence | None = None  # of the running fit
        self.divergence: dv.Divergence | None = None  # of the last fit, for replay_diverged()
        self._fits = 0
        self._run: RunRecord | None = None  # the running fit's record (also in history.runs)
        if flight is not True and flight is not False and (not is_int(flight) or flight < 1):
            raise ValueError(
                f"flight must be True, False or a positive int (steps between records), got {flight!r}"
            )
        self.wrt = wrt
        self.flight_every = recorder.FLIGHT_EVERY if flight is True else int(flight or 0)
        self._probe_eager = flight is not True  # a cadence given: record from the first call
        self._probe_job: tuple[Any, recorder.CompileJob, int] | None = None
        self._next_record = 0  # the step from which the next record is due
        self._index0 = jax.device_put(np.int32(0), dist.replicated(self.mesh))  # the probed step

        try:
            self.graphdef, params, rest = nnx.split(model, wrt, ...)
        except Exception as e:
            raise TypeError(f"wrt must be an NNX filter (e.g. nnx.Param), got {wrt!r}: {e}") from None
        if not jax.tree.leaves(params):
            raise ValueError(f"the model has no variables to train: none matches wrt={wrt!r}")
        self.layers = recorder.Layers.of(params)
        self._param_shardings = dist.state_shardings(params, self.mesh)
        self._rest_shardings = dist.state_shardings(rest, self.mesh)
        params = jax.device_put(params, self._param_shardings)
        rest = jax.device_put(rest, self._rest_shardings)
        # optimizer state is created sharded: moments inherit their parameter's annotation
        opt_shardings = dist.state_shardings(jax.eval_shape(tx.init, params), self.mesh)
        opt = jax.jit(tx.init, out_shardings=opt_shardings)(params)
        rep = dist.replicated(self.mesh)
        self._state: dict[str, Any] = {
            "params": params,
            "rest": rest,
            "opt": opt,
            "step": jax.device_put(jnp.zeros((), jnp.int32), rep),
            "bad": jax.device_put(jnp.full((), -1, jnp.int32), rep),
        }
        self._state_shardings = jax.tree.map(lambda x: x.sharding, self._state)
        self.guard = choose_guard(guard, self._state, self.mesh)
        nnx.update(model, params, rest)
        self._step = 0

        self._ckpt: Checkpointer | None = None
        self._log: HistoryLog | None = None
        if checkpoint_dir is not None:
            self._ckpt = Checkpointer(checkpoint_dir, keep=keep, keep_best=keep_best, best_mode=best_mode)
            self._log = HistoryLog(self._ckpt.directory, writer=jax.process_index() == 0)
            latest = self._ckpt.latest_step()
            if latest is not None:
                self._restore(latest)
            else:
                self._log.reset()

    # -- public state -----------------------------------------------------------------------
    @property
    def model(self) -> nnx.Module:
        """The user's model, holding the latest trained state."""
        if self._model_dirty:
            self._sync_model()
        return self._model

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (including those restored from a checkpoint)."""
        return self._step

    @property
    def checkpoint_dir(self) -> str | None:
        return str(self._ckpt.directory) if self._ckpt else None

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps with a finished checkpoint on disk."""
        if not self._ckpt:
            return []
        self._ckpt.wait()
        return self._ckpt.all_steps()

    def replay_diverged(self, *, where: Callable[[str], str | None] | None = None) -> dv.DivergenceReport:
        """Re-run the step at which the last ``fit`` diverged, under ``checkify``, and say which
        operation produced the first NaN/inf and on which line of your code.

        The step runs again from the last finite state (the one the model holds, kept by the
        trainer) on the exact batch of the bad step; nothing is applied or written back: the
        model, the trainer and JAX's configuration are left as they are, even if the model was
        changed since (the replay uses the kept state and says so).

        Args:
          where: ``filename -> label`` for the report's locations (default: ``In[5]`` for
            notebook cells, found without importing IPython; ``file.py:12`` otherwise).

        Returns:
          A :class:`~jaxmagic.train.divergence.DivergenceReport` (text, HTML, ``to_dict``):
          the step, the layers that went non-finite, the faulting operation and its source line.

        Raises:
          RuntimeError: the last ``fit`` did not diverge, or ``fit`` is running.

        Example:
          >>> try:
          ...     trainer.fit(data, steps=1000)
          ... except TrainingDivergedError:
          ...     report = trainer.replay_diverged()
          >>> report.operation, report.source
          ('log', 'return -jnp.log(p).mean()')
        """
        if self._running:
            raise RuntimeError("replay_diverged() cannot run while fit() is running")
        d = self.divergence
        if d is None:
            last = f"it ended {self.history.status}" if self.history.runs else "no fit() has run yet"
            raise RuntimeError(
                f"replay_diverged(): nothing to replay: the last fit() did not diverge ({last})"
            )
        if d.batch is None or d.state is None:
            raise RuntimeError(f"replay_diverged(): no single step of the run went non-finite: {d.what()}")
        changed = dv.model_changed(nnx.state(self._model, self.wrt), d.state["params"])
        step = readable(self._fns(gather=False).replay_step, "Trainer.replay_step")
        return dv.replay(d, step, changed=changed, where=where)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop the running ``fit`` at the next call boundary (thread-safe; used by Stop buttons)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    # -- state plumbing -----------------------------------------------------------------------
    def _sync_model(self) -> None:
        nnx.update(self._model, self._state["params"], self._state["rest"])
        self._model_dirty = False

    def _sync_from_model(self) -> None:
        """Take parameters from the user's model (it may have been edited between fits)."""
        graphdef, params, rest = nnx.split(self._model, self.wrt, ...)
        if graphdef != self.graphdef:
            raise ValueError(
                "the model's structure changed since this Trainer was created; "
                "create a new Trainer for the new model"
            )
        self._state["params"] = jax.device_put(params, self._param_shardings)
        self._state["rest"] = jax.device_put(rest, self._rest_shardings)
        # a run that diverged left its mark: the next calls would skip every step
        self._state["bad"] = jax.device_put(jnp.full((), -1, jnp.int32), self._state_shardings["bad"])

    def _fns(self, *, gather: bool) -> StepFns:
        return StepFns(
            self.graphdef,
            self.loss_fn,
            self.tx,
            self.metrics,
            gather=gather,
            wrt=self.wrt,
            layers=self.layers,
            guard=self.guard,
        )

    # -- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        steps: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        eval_data: Any = None,
        eval_every: int | None = None,
        eval_batch_size: int | None = None,
        steps_per_call: int | str = "auto",
        callbacks: Sequence[Callback] = (),
        progress: Any = "auto",
        shuffle: bool = True,
        data_on_device: bool | None = None,
        prefetch: int = 2,
    ) -> History:
        """Train until ``steps`` / ``epochs`` (counted from step 0, so a resumed run continues to
        the same target) or until an iterable of batches is exhausted.

        Args:
          data: arrays — ``(X, y)``, a dict of arrays or one array — batched with ``batch_size``,
            shuffled from ``(seed, epoch)``, final partial batch of each epoch dropped; or any
            iterable of batches (a list, a generator, a data loader), one step per batch, in order.
            Either way every step has one batch shape: a batch with fewer rows than the first (a
            loader's short last batch) is dropped like ``drop_last=True``, and the run's message
            and ``History.runs[-1].notes`` say so. Grain: a ``grain.MapDataset`` (its length is
            an epoch; one pass unless ``steps=``/``epochs=``), ``grain.IterDataset`` or
            ``grain.DataLoader``; an iterator with ``get_state``/``set_state`` has its position
            saved with each checkpoint and restored without replay (other iterables are
            replayed: their first batches are read again and discarded).
          steps: total optimizer steps to reach.
          epochs: total epochs to reach (array data or a finite ``grain.MapDataset``).
          batch_size: rows per step for array data (a multiple of the data-parallel devices).
          eval_data: arrays or iterable of batches evaluated at every epoch end (array data), every
            ``eval_every`` steps, and at the end.
          eval_every: evaluate every this many steps (at the first call boundary at or after).
          eval_batch_size: batch size for array ``eval_data`` (default: ``batch_size``).
          steps_per_call: steps fused into one compiled call (``"auto"``: from the model size,
            at most 200).
          callbacks: :class:`~jaxmagic.train.Callback` instances.
          progress: ``"auto"`` (widget in notebooks, one line in terminals), ``"widget"``,
            ``"text"``, ``None`` or a Callback.
          shuffle: shuffle array data every epoch.
          data_on_device: keep array data on device and gather batches there (default: when small).
          prefetch: device inputs prepared ahead by the background thread.

        Returns:
          The trainer's :class:`History` (cumulative over fits and resumes).

        Raises:
          KeyboardInterrupt: after an interrupt — once the model holds the last finished step and
            (with ``checkpoint_dir``) a checkpoint of it is on disk.
          TrainingDivergedError: the loss became NaN/Inf; the model holds the last finite state.

        Example:
          >>> history = trainer.fit((X, y), epochs=10, batch_size=64, eval_data=(Xv, yv))
        """
        if self._running:
            raise RuntimeError("fit() is already running")
        plan = self._plan(
            data,
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            eval_data=eval_data,
            eval_every=eval_every,
            eval_batch_size=eval_batch_size,
            steps_per_call=steps_per_call,
            callbacks=callbacks,
            progress=progress,
            shuffle=shuffle,
            data_on_device=data_on_device,
            prefetch=prefetch,
        )
        return self._run_plan(plan)

    # -- planning: validates and decides; changes nothing but the state taken from the model -------
    def _plan(
        self,
        data: Any,
        *,
        steps: int | None,
        epochs: int | None,
        batch_size: int | None,
        eval_data: Any,
        eval_every: int | None,
        eval_batch_size: int | None,
        steps_per_call: int | str,
        callbacks: Sequence[Callback],
        progress: Any,
        shuffle: bool,
        data_on_device: bool | None,
        prefetch: int,
    ) -> FitPlan:
        if steps is not None and epochs is not None:
            raise ValueError("pass steps= or epochs=, not both")
        for name, v in (("steps", steps), ("epochs", epochs)):
            if v is not None and (not is_int(v) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if eval_every is not None and (not is_int(eval_every) or eval_every < 1):
            raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
        # before the feed: building it takes the first batch of a generator
        check_eval_users(
            callbacks,
            has_eval=eval_data is not None,
            keep_best=self._ckpt.keep_best if self._ckpt else None,
            eval_names=["eval_loss", *(f"eval_{m}" for m in self.metrics)],
        )
        feed = make_feed(
            data,
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            seed=self.seed,
            mesh=self.mesh,
            shuffle=shuffle,
            data_on_device=data_on_device,
            is_array=is_array_data(data),
            resume_state=self._resume_position,
        )
        dp = dist.data_parallel_size(self.mesh)
        if feed.batch_size % dp:
            raise ValueError(
                f"batch size {feed.batch_size} is not divisible by the {dp} data-parallel devices; "
                f"use a multiple of {dp}, or pass devices=/mesh= to the Trainer"
            )
        if steps is None and epochs is None and isinstance(feed, IterFeed) and feed.steps_per_epoch:
            epochs = 1  # a finite grain.MapDataset: one pass
        target = steps if steps is not None else (epochs * feed.steps_per_epoch if epochs else None)
        self._sync_from_model()
        spec = feed.spec
        abstract_batch = spec.treedef.unflatten(
            [jax.ShapeDtypeStruct((feed.batch_size, *s), d) for s, d in zip(spec.shapes, spec.dtypes)]
        )
        fns = self._fns(gather=feed.on_device)
        abstract_outputs(
            fns,
            self._state["params"],
            self._state["rest"],
            abstract_batch,
            loss_fn=self.loss_fn,
            metrics=self.metrics,
        )
        evaluation = None
        if eval_data is not None:
            batches, local = host_batches(eval_data, eval_batch_size or feed.batch_size, "eval_data")
            check_same(spec, spec_of(batches[0], what="eval_data"), what="eval_data", batch_too=False)
            evaluation = EvalPlan(batches, local, eval_every)
        # calls end at epoch ends only when something happens there (eval, checkpoint)
        epoch_bound = bool(feed.steps_per_epoch) and (
            (evaluation is not None and eval_every is None)
            or (self._ckpt is not None and self.save_every_epoch)
        )
        k = choose_steps_per_call(
            steps_per_call,
            params=self._state["params"],
            feed=feed,
            epoch_bound=epoch_bound,
            n_steps=None if target is None else target - self._step,
        )
        view = resolve_progress(progress) if jax.process_index() == 0 else None
        return FitPlan(
            feed=feed,
            fns=fns,
            target=target,
            steps_per_call=k,
            epoch_bound=epoch_bound,
            evaluation=evaluation,
            checkpointing=self._ckpt is not None,
            save_every=self.save_every,
            save_at_epoch_end=self.save_every_epoch,
            callbacks=CallbackList([*callbacks, *([view] if view else [])]),
            prefetch=prefetch,
        )

    # -- running the plan ------------------------------------------------------------------------
    def _run_plan(self, plan: FitPlan) -> History:
        feed = plan.feed
        if isinstance(feed, IterFeed) and feed.restored:
            feed.count_from(self._data_position)  # put back by set_state: nothing read again
        elif isinstance(feed, IterFeed) and self._data_position:
            if feed.stateful:
                why = (
                    "it was saved from a plain iterable, or by a different number of processes"
                    if self._ckpt and self._ckpt.saves_data_state
                    else "Grain, which saves positions, is not installed"
                )
                warnings.warn(
                    f"the checkpoint at step {self._step} holds no position for this data iterator "
                    f"({why}): replaying {self._data_position} batches to reach it",
                    stacklevel=3,
                )
            feed.skip(self._data_position)  # resume an iterable where the checkpoint left it
        self._batches_consumed = feed.consumed if isinstance(feed, IterFeed) else 0
        self._position = feed.state if isinstance(feed, IterFeed) and feed.restored else None
        self._data_position = 0
        self._resume_position = None
        run = self._begin(plan)
        self._fits += 1
        self._next_record = 0  # every fit records its first call
        self.divergence = None  # replay_diverged() replays the last fit's divergence only
        self._running = True
        error: BaseException | None = None
        prefetcher: Prefetcher | None = None
        try:
            with self._sigint_guard():
                plan.callbacks.on_train_begin(
                    self, plan.describe(run.start_step, self.checkpoint_dir, ["loss", *self.metrics])
                )
                if plan.target is not None and run.start_step >= plan.target:
                    run.message = f"already at step {run.start_step} (target {plan.target}): nothing to do"
                else:
                    prefetcher = Prefetcher(feed, plan.calls(run.start_step), depth=plan.prefetch)
                    self._loop(plan, prefetcher)
                self._finish(plan)
        except BaseException as e:  # noqa: BLE001 - recorded, model synced, then re-raised
            error = e
        finally:
            if prefetcher is not None:
                prefetcher.close()
            self._running = False
            self._sync_model()
        return self._end(plan, run, error)

    def _begin(self, plan: FitPlan) -> RunRecord:
        """Fresh progress, the run's configuration and its record."""
        feed, start = plan.feed, self._step
        self._stop_reason = None
        self.progress = Progress(
            step=start,
            start_step=start,
            target=plan.target,
            batch_size=feed.batch_size,
            steps_per_epoch=feed.steps_per_epoch,
            epoch=feed.position(start)[0] if isinstance(feed, ArrayFeed) else None,
        )
        self.history.config = {
            "batch_size": feed.batch_size,
            "steps_per_call": plan.steps_per_call,
            "data": feed.kind,
            "data_on_device": feed.on_device,
            "steps_per_epoch": feed.steps_per_epoch,
            "dropped_per_epoch": feed.dropped,
            "devices": int(self.mesh.size),
            "mesh": {str(a): int(s) for a, s in dict(self.mesh.shape).items()},
            "processes": jax.process_count(),
            "target": plan.target,
            "seed": self.seed,
        }
        self._run = RunRecord(start_step=start, end_step=start, started=time.time())
        self.history.runs.append(self._run)
        return self._run

    def _loop(self, plan: FitPlan, prefetcher: Prefetcher) -> None:
        call = self._train_call_fn(plan.fns)
        feed = plan.feed
        data = feed.device_data
        pending: _PendingCall | None = None
        # Training time runs from here, less compiles, evals and checkpoints. Waiting for input
        # counts, the first call's included: a pipeline slower than the step shows as data-wait
        # (and in steps/s), even when the whole run is one call.
        t_mark = time.perf_counter()
        try:
            while True:
                if self._stop_reason:
                    break
                waited = time.perf_counter()
                chunk = prefetcher.get()
                self.progress.data_wait_seconds += time.perf_counter() - waited
                if chunk is None:
                    break
                key = ("train", chunk.length, feed.on_device)
                if key not in self._compiled:
                    compiling = time.perf_counter()
                    self.progress.status = "compiling"
                    if self.flight_every and self._probe_eager:  # compiles meanwhile, on another thread
                        self._start_probe_compile(plan, chunk)
                    self._compile(
                        key,
                        f"train call ({chunk.length} steps)",
                        call,
                        self._state,
                        chunk.feed,
                        data,
                        donate=True,
                        out_shardings=(self._state_shardings, None, None),
                        steps=chunk.length,
                    )
                    if self._probe_job is not None:
                        self._finish_probe_compile(wait=True)
                    t_mark += time.perf_counter() - compiling  # compile time is not training time
                fn = self._compiled[key]
                self.progress.status = "training"
                rec = self._probe(plan, chunk, key) if self.flight_every else None
                self._state, logs, bad = fn(self._state, chunk.feed, data)
                self._model_dirty = True
                for x in (*jax.tree.leaves(logs), bad):
                    x.copy_to_host_async()
                if pending is not None:
                    t_mark = self._consume(plan, pending, t_mark)
                at = plan.boundary(chunk.start, chunk.start + chunk.length)
                # the epoch record waits for the eval when one is due at the same boundary
                pending = _PendingCall(chunk, logs, bad, not (at.epoch_end and at.eval_due), rec)
                if at.eval_due or at.save_due or self._stop_reason:
                    # these need the state after this call: read it now (the only syncs in the loop)
                    t_mark = self._consume(plan, pending, t_mark)
                    pending = None
                    if self._stop_reason:
                        break
                    self._at_boundary(plan, at)
                    t_mark = time.perf_counter()
                    self.progress.status = "training"
        finally:
            if self._probe_job is not None:  # listed before fit returns: compile counts stay exact
                self._finish_probe_compile(wait=True)
            if pending is not None:  # also when feeding failed: account for the call that ran
                # a call to re-run step by step waits for the next fit when an error is on its way
                self._consume(plan, pending, t_mark, rerun=sys.exc_info()[0] is None)

    def _consume(
        self, plan: FitPlan, pending: _PendingCall, t_mark: float | None, rerun: bool = True
    ) -> float:
        """Read one call's metrics (started copying one call ago), record them, detect divergence."""
        chunk, feed = pending.chunk, plan.feed
        host = {k: np.asarray(v) for k, v in pending.logs.items()}
        bad = int(np.asarray(pending.bad))
        now = time.perf_counter()
        if t_mark is not None:
            self.progress.train_seconds += now - t_mark
        checked = False
        if bad >= 0 and self._diverged is None and plan.fns.guard == "call":
            # the call went non-finite and handed back its input state: find the step
            if not rerun:
                return now  # the model holds the state before this call; nothing of it counts
            host, bad = self._rerun_checked(plan, chunk)
            checked, now = True, time.perf_counter()
        n = chunk.length
        if bad >= 0:  # steps from `bad` on were not applied
            n = max(0, bad - 1 - chunk.start)
        steps = np.arange(chunk.start + 1, chunk.start + n + 1)
        host_ok = {k: v[:n] for k, v in host.items()}
        if n:
            self._step = chunk.start + n
            if n == chunk.length and chunk.consumed is not None:
                self._batches_consumed = chunk.consumed
            self._position = chunk.state if n == chunk.length else None
            run = self._run
            run.steps += n
            run.examples += n * feed.batch_size
            run.end_step = self._step
            self.history.add_steps(steps, host_ok)
            self.progress.step = self._step
            if feed.steps_per_epoch:
                self.progress.epoch = (self._step - 1) // feed.steps_per_epoch if self._step else 0
            self.progress.last.update({k: float(v[-1]) for k, v in host_ok.items()})
            plan.callbacks.on_steps(self, steps, host_ok)
            spe = feed.steps_per_epoch
            if spe and pending.record_epochs:  # epochs that ended inside this call
                for e in range(chunk.start // spe + 1, self._step // spe + 1):
                    self._epoch_end(plan, e, {})
        # a probe pairs the state before the call with its first batch: valid unless an earlier
        # divergence left the call a state from before it
        if pending.rec is not None and (bad < 0 or bad > chunk.start):
            self._record_flight(chunk.start + 1, pending.rec)
        if bad >= 0 and self._diverged is None:
            i = bad - 1 - chunk.start
            self._diverged = self._diagnose(
                plan, chunk, i, float(host["loss"][i]) if 0 <= i < chunk.length else math.nan, checked
            )
            self.request_stop("diverged")
        return now

    def _record_flight(self, step: int, rec: Any) -> None:
        host = {k: np.asarray(v) for k, v in rec.items()}
        mem = recorder.memory_peak(
            [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        )
        self.history.flight.add(
            self.layers.names, step, host["grad_sq"], host["update_sq"], host["param_sq"], mem
        )
        self.progress.memory_peak = mem

    def _probe_key(self, plan: FitPlan, chunk: Chunk) -> tuple:
        return ("probe", chunk.length, plan.feed.on_device)

    def _probe_args(self, plan: FitPlan, chunk: Chunk, index: int) -> tuple:
        s = self._state
        i = self._index0 if index == 0 else jax.device_put(np.int32(index), dist.replicated(self.mesh))
        return (s["params"], s["rest"], s["opt"], chunk.feed, plan.feed.device_data, i)

    def _probe_fn(self, plan: FitPlan) -> Callable:
        return readable(plan.fns.probe, "Trainer.flight_probe")

    def _start_probe_compile(self, plan: FitPlan, chunk: Chunk) -> None:
        """Lower the recorder's probe here and compile it on another thread."""
        key = self._probe_key(plan, chunk)
        if key in self._compiled or self._probe_job is not None:
            return
        t0 = time.perf_counter()
        jitted = jax.jit(self._probe_fn(plan), out_shardings=dist.replicated(self.mesh))
        lowered = jitted.lower(*self._probe_args(plan, chunk, 0))
        self._probe_job = (key, recorder.CompileJob(lowered, time.perf_counter() - t0), chunk.length)

    def _finish_probe_compile(self, wait: bool) -> None:
        """Take the compiled probe when it is ready (or wait for it) and list it."""
        assert self._probe_job is not None
        key, job, length = self._probe_job
        if not wait and not job.ready():
            return
        waited = time.perf_counter()
        compiled, seconds = job.result()
        self.progress.compile_seconds += time.perf_counter() - waited  # only the time it held us up
        self._probe_job = None
        self._compiled[key] = compiled
        self.history.compiles.append(
            {
                "what": f"flight recorder probe (one step of a {length}-step call, not applied; "
                "compiled on another thread)",
                "seconds": seconds,
            }
        )

    def _probe(self, plan: FitPlan, chunk: Chunk, train_key: Any) -> Any:
        """Dispatch the probe of the call's first step when a record is due and the probe is
        compiled (a call of another length goes unrecorded rather than compile for it); by
        default, start compiling it once the run has trained long enough."""
        key = self._probe_key(plan, chunk)
        if self._probe_job is not None:
            self._finish_probe_compile(wait=False)
        elif key not in self._compiled:
            compile_s = self._compile_seconds.get(train_key, 0.0)
            if self.progress.train_seconds >= recorder.PROBE_AFTER * compile_s:
                self._start_probe_compile(plan, chunk)
        compiled = self._compiled.get(key)
        if compiled is None or chunk.start + 1 < self._next_record:
            return None
        rec = compiled(*self._probe_args(plan, chunk, 0))
        for x in jax.tree.leaves(rec):
            x.copy_to_host_async()
        self._next_record = chunk.start + 1 + self.flight_every
        return rec

    def _rerun_checked(self, plan: FitPlan, chunk: Chunk) -> tuple[dict[str, np.ndarray], int]:
        """Re-run a call that went non-finite, every step checked, from its input state (the
        state now held: the call handed it back, any call launched after it passed it on)."""
        self.progress.status = "checking"
        state = {
            **self._state,
            "bad": jax.device_put(jnp.full((), -1, jnp.int32), self._state_shardings["bad"]),
        }
        data = plan.feed.device_data
        key = ("train-checked", chunk.length, plan.feed.on_device)
        fn = self._compile(
            key,
            f"train call ({chunk.length} steps, each checked: re-running a call that went non-finite)",
            readable(plan.fns.checked_call, "Trainer.train_steps_checked"),
            state,
            chunk.feed,
            data,
            donate=True,
            out_shardings=(self._state_shardings, None),
        )
        self._state, logs = fn(state, chunk.feed, data)
        bad = int(np.asarray(self._state["bad"]))
        if bad < 0:
            # every step finite when checked one by one, though the call's end state was not (float
            # differences between the two programs): stop here rather than trust either blindly
            bad = chunk.start + chunk.length + 1
        return {k: np.asarray(v) for k, v in logs.items()}, bad

    def _diagnose(self, plan: FitPlan, chunk: Chunk, i: int, loss: float, checked: bool) -> dv.Divergence:
        """The divergence at step ``chunk.start + i + 1``: which layers went non-finite (one
        unapplied step from the last finite state, on that step's batch), the last checkpoint,
        and what replay_diverged() needs."""
        d = dv.Divergence(
            step=chunk.start + i + 1,
            loss=loss,
            grad_layers=[],
            update_layers=[],
            layers=list(self.layers.names),
            found_by="call" if checked or plan.fns.guard == "call" else "step",
            fit=self._fits,
        )
        if 0 <= i < chunk.length:
            d.batch = dv.batch_of(chunk.feed, i, plan.feed.device_data, plan.fns.gather)
            d.state = {k: self._state[k] for k in ("params", "rest", "opt")}
            probe = self._compile(
                self._probe_key(plan, chunk),
                f"flight recorder probe (one step of a {chunk.length}-step call, not applied)",
                self._probe_fn(plan),
                *self._probe_args(plan, chunk, i),
                out_shardings=dist.replicated(self.mesh),
            )
            out = jax.device_get(probe(*self._probe_args(plan, chunk, i)))
            d.loss, d.grad_layers, d.update_layers = dv.diagnosed(self.layers.names, out)
        else:
            d.note = (
                "the call's end-of-call check failed, but every step passed when the call was re-run "
                "step by step (float differences between the two programs); stopped to be safe"
            )
        if self._ckpt is not None:
            done = [c for c in self.history.checkpoints if c["step"] < d.step]
            if done:
                d.checkpoint_step, d.checkpoint_path = done[-1]["step"], done[-1]["path"]
        return d

    def _at_boundary(self, plan: FitPlan, at: Boundary) -> None:
        """Evaluate, record the epoch, checkpoint: what is due after the call that ended at ``at.end``."""
        ev = self._run_eval(plan) if at.eval_due else {}
        if at.epoch_end and at.eval_due:
            self._epoch_end(plan, at.end // plan.steps_per_epoch, ev)
        if at.save_due:
            self._save(
                plan,
                "epoch" if at.epoch_end and plan.save_at_epoch_end else "interval",
                score=self._score(ev),
            )

    def _score(self, ev: dict[str, float]) -> float | None:
        key = self._ckpt.keep_best if self._ckpt else None
        return ev.get(key) if key else None

    def _run_eval(self, plan: FitPlan) -> dict[str, float]:
        assert plan.evaluation is not None
        self.progress.status = "evaluating"
        ev = self._evaluate_batches(
            self._fns(gather=False),
            plan.evaluation.batches,
            plan.evaluation.local,
        )
        self.history.evals.append({"step": self._step, "epoch": self.progress.epoch, **ev})
        self.progress.last.update(ev)
        plan.callbacks.on_eval(self, self._step, ev)
        return ev

    def _epoch_end(self, plan: FitPlan, epoch: int, ev: dict[str, float]) -> None:
        spe = plan.steps_per_epoch
        lo, hi = (epoch - 1) * spe, epoch * spe
        back = min(len(self.history._steps), 2 * spe + 2 * MAX_STEPS_PER_CALL)
        tail = np.asarray(self.history._steps[len(self.history._steps) - back :])
        mask = (tail > lo) & (tail <= hi)
        logs: dict[str, float] = {}
        if mask.any():
            for k, v in self.history._metrics.items():
                vals = np.asarray(v[len(v) - back :], np.float64)[mask]
                if np.isfinite(vals).any():
                    logs[k] = float(np.nanmean(vals))
        logs.update(ev)
        self.history.epochs.append({"epoch": epoch, "step": min(self._step, hi), **logs})
        plan.callbacks.on_epoch_end(self, epoch, logs)

    def _finish(self, plan: FitPlan) -> None:
        """After the loop: final eval and checkpoint (also on an interrupt: save, then re-raise)."""
        reason = self._stop_reason
        if reason == "diverged":
            return
        ev: dict[str, float] = {}
        last_eval = self.history.evals[-1]["step"] if self.history.evals else None
        if (
            plan.evaluation is not None
            and reason != "interrupted"
            and last_eval != self._step
            and self._step > 0
        ):
            ev = self._run_eval(plan)
        if self._ckpt is not None and self._step > 0:
            last_ckpt = self.history.checkpoints[-1]["step"] if self.history.checkpoints else None
            if last_ckpt != self._step:
                self._save(plan, "interrupt" if reason == "interrupted" else "end", score=self._score(ev))
            self.progress.status = "saving"
            self._saving = True
            try:
                self._ckpt.wait()  # durable before we return or re-raise; errors surface here
            finally:
                self._saving = False

    def _end(self, plan: FitPlan, run: RunRecord, error: BaseException | None) -> History:
        reason = self._stop_reason
        run.notes = _data_notes(plan.feed)
        diverged = self._diverged
        if diverged is not None:
            self._diverged = None
            self.divergence = diverged
            self.history.divergence = diverged.to_dict()
            status, msg = "diverged", diverged.message()
        elif isinstance(error, KeyboardInterrupt) or reason == "interrupted":
            status, msg = "interrupted", f"interrupted at step {self._step}"
            if self._ckpt is not None and not isinstance(error, KeyboardInterrupt):
                msg += f"; checkpoint saved in {self.checkpoint_dir}"
            if error is None:
                error = KeyboardInterrupt()
        elif error is not None:
            status, msg = "failed", f"failed at step {self._step}: {type(error).__name__}: {error}"
        elif reason:
            status, msg = (
                "stopped",
                f"stopped at step {self._step}" + ("" if reason == "stopped" else f": {reason}"),
            )
        else:
            status = "completed"
            msg = run.message or f"completed {run.steps} steps (step {self._step})"
        if status in ("completed", "stopped", "interrupted") and run.notes:
            msg += "; " + "; ".join(run.notes)
        run.status, run.message, run.end_step = status, msg, self._step
        run.train_seconds, run.compile_seconds = self.progress.train_seconds, self.progress.compile_seconds
        run.data_wait_seconds = self.progress.data_wait_seconds
        run.flops_per_step, run.peak_flops = self.progress.flops_per_step, self.progress.peak_flops
        run.wall_seconds = time.time() - run.started
        self.progress.status, self.progress.message = status, msg
        if self._log is not None:
            try:
                self._log.append(self.history)  # the run's outcome, for whoever resumes
            except OSError as log_error:
                if error is None:
                    error = log_error
        try:
            plan.callbacks.on_train_end(self, self.history)
        except Exception as cb_error:  # a failing view must not hide the training outcome
            if error is None:
                error = cb_error
        self._stop_reason = None
        if diverged is not None:
            raise TrainingDivergedError(msg, diverged.step, self.history, diverged.to_dict())
        if error is not None:
            raise error
        return self.history

    # -- checkpoint ---------------------------------------------------------------------------
    def _save(self, plan: FitPlan, reason: str, score: float | None = None) -> None:
        ckpt = self._ckpt
        if ckpt is None or ckpt.has_step(self._step):
            return
        feed = plan.feed
        epoch, index = feed.position(self._step) if isinstance(feed, ArrayFeed) else (None, None)
        # fixed-size metadata: the history goes to the log beside the checkpoints
        meta = {
            "step": self._step,
            "epoch": epoch,
            "index_in_epoch": index,
            "seed": self.seed,
            "batch_size": feed.batch_size,
            "steps_per_epoch": feed.steps_per_epoch,
            "data": feed.kind,
            "batches_consumed": self._batches_consumed if feed.kind == "iterable" else None,
            "reason": reason,
        }
        self.history.checkpoints.append(
            {"step": self._step, "path": ckpt.step_path(self._step), "reason": reason, "time": time.time()}
        )
        self.progress.status = "saving"
        self._saving = True
        try:
            assert self._log is not None
            self._log.append(self.history)  # before the save starts: the log covers every checkpoint
            ckpt.save(self._step, self._state, meta, score=score, data_position=self._position)
        finally:
            self._saving = False
        plan.callbacks.on_checkpoint(self, self._step, ckpt.step_path(self._step))

    def _restore(self, step: int) -> None:
        assert self._ckpt is not None and self._log is not None
        state, meta = self._ckpt.restore(step, self._state)
        self._state = jax.device_put(state, self._state_shardings)
        self._step = int(meta.get("step", step))
        self._data_position = int(meta.get("batches_consumed") or 0)
        self._resume_position = meta.get("data_state")
        history = self._log.load()
        if history is None and meta.get("history"):  # written before the log existed: in the metadata
            history = History.from_dict(meta["history"])
        if history is not None:
            history.truncate(self._step)  # the log may run ahead of the last committed checkpoint
            self.history = history
        self.history.runs.append(
            RunRecord(
                start_step=self._step,
                end_step=self._step,
                status="resumed",
                message=f"resumed from checkpoint at step {self._step}",
            )
        )
        self._log.rewrite(self.history)
        self._sync_model()

    # -- compilation --------------------------------------------------------------------------
    def _record_peak(self, device: Any) -> None:
        """The device's peak FLOP/s for MFU; a measurement (once per process) compiles and runs
        a matmul, listed in ``History.compiles`` so compile counts stay honest."""
        measuring = not devicepeak.peak_known(device)
        t0 = time.perf_counter()
        self.progress.peak_flops = devicepeak.peak_flops(device, name="Trainer.measure_peak_flops")
        if measuring:
            self.history.compiles.append(
                {
                    "what": "device peak FLOP/s (a matmul, measured once per process)",
                    "seconds": time.perf_counter() - t0,
                }
            )

    def _flops_per_step(self, compiled: Any, steps: int) -> float | None:
        """FLOPs per step of a compiled train call; probing the backend's cost-analysis
        convention (once per process) compiles a tiny scan, listed in ``History.compiles``."""
        device = self.mesh.devices.flat[0]
        probing = not flight.convention_known(device)
        t0 = time.perf_counter()
        per_trip = flight.counts_per_trip(device)
        if probing:
            self.history.compiles.append(
                {
                    "what": "cost analysis convention (a tiny scan, probed once per process)",
                    "seconds": time.perf_counter() - t0,
                }
            )
        return flight.flops_per_step(compiled, steps, per_trip)

    def _compile(
        self,
        key: Any,
        what: str,
        fn: Callable,
        *args: Any,
        donate: bool = False,
        out_shardings: Any = None,
        steps: int | None = None,
    ) -> Any:
        """Compile once per ``key`` (timed); ``steps``: a train call's length (its FLOPs per step
        and the device peak are recorded for MFU)."""
        compiled = self._compiled.get(key)
        if compiled is None:
            t0 = time.perf_counter()
            jitted = jax.jit(fn, donate_argnums=(0,) if donate else (), out_shardings=out_shardings)
            lowered = jitted.lower(*args)
            compiled = lowered.compile()
            seconds = time.perf_counter() - t0
            if steps is not None:
                self.progress.flops_per_step = self._flops_per_step(compiled, steps)
                if self.progress.flops_per_step and self.progress.peak_flops is None:
                    self._record_peak(self.mesh.devices.flat[0])
            entry: dict[str, Any] = {"what": what, "seconds": seconds}
            try:
                mem = compiled.memory_analysis()
                entry["alias_bytes"] = int(getattr(mem, "alias_size_in_bytes", 0))
                entry["argument_bytes"] = int(getattr(mem, "argument_size_in_bytes", 0))
            except Exception:  # some backends have no memory analysis
                pass
            self.history.compiles.append(entry)
            self.progress.compile_seconds += seconds
            self._compiled[key] = compiled
            self._compile_seconds[key] = seconds
        return compiled

    def _train_call_fn(self, fns: StepFns) -> Callable:
        def call(state: dict, feed: Any, data: Any) -> tuple[dict, dict, Any]:
            new, logs = fns.train_call(state, feed, data)
            return new, logs, new["bad"] + 0

        return readable(call, "Trainer.train_steps")

    # -- eval / predict plumbing --------------------------------------------------------------
    def _per_batch(self, kind: str, fn: Callable, batches: list[Any], local: bool) -> list[Any]:
        """``fn(params, rest, batch)`` on each batch, compiled once per batch signature;
        the outputs (on device, replicated), in order."""
        params, rest = self._state["params"], self._state["rest"]
        outs = []
        for b in batches:
            db = device_batch(b, local, self.mesh)
            sig = (kind, tuple((x.shape, str(x.dtype), x.sharding) for x in jax.tree.leaves(db)))
            compiled = self._compile(
                sig,
                f"{kind} ({spec_of(b).batch_size} rows)",
                fn,
                params,
                rest,
                db,
                out_shardings=dist.replicated(self.mesh),
            )
            outs.append(compiled(params, rest, db))
        return outs

    def _evaluate_batches(self, fns: StepFns, batches: list[Any], local: bool) -> dict[str, float]:
        host = jax.device_get(self._per_batch("eval", fns.eval_batch, batches, local))
        w = np.asarray([spec_of(b).batch_size for b in batches], np.float64)
        return {
            f"eval_{k}": float(np.sum(w * np.asarray([o[k] for o in host], np.float64)) / w.sum())
            for k in host[0]
        }

    def evaluate(self, data: Any, *, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss and metrics over ``data`` (weighted by batch size; model in eval mode).

        Args:
          data: arrays (``(X, y)``, dict) batched in order, or an iterable of batches.
          batch_size: for arrays; default: the whole array at once.

        Returns:
          ``{"eval_loss": ..., "eval_<metric>": ...}``.

        Example:
          >>> trainer.evaluate((X_test, y_test), batch_size=128)
          {'eval_loss': 0.11, 'eval_accuracy': 0.97}
        """
        if self._running:
            raise RuntimeError("evaluate() cannot run while fit() is running")
        self._sync_from_model()
        batches, local = host_batches(data, batch_size, "evaluation data")
        fns = self._fns(gather=False)
        abstract_outputs(
            fns,
            self._state["params"],
            self._state["rest"],
            batches[0],
            loss_fn=self.loss_fn,
            metrics=self.metrics,
        )
        return self._evaluate_batches(fns, batches, local)

    def predict(self, data: Any, *, batch_size: int | None = None) -> Any:
        """Model outputs for ``data``, batch by batch, concatenated on the host (model in eval mode).

        Args:
          data: an array, ``(X, y)`` / dict arrays, or an iterable of batches.
          batch_size: for arrays; default: everything at once.

        Returns:
          The outputs of ``predict_fn`` concatenated along the first axis (numpy).

        Example:
          >>> logits = trainer.predict(X_test, batch_size=256); logits.shape
          (360, 10)
        """
        if self._running:
            raise RuntimeError("predict() cannot run while fit() is running")
        self._sync_from_model()
        batches, local = host_batches(data, batch_size, "prediction data")
        predict = readable(
            functools.partial(StepFns.predict_batch, self.graphdef, self.predict_fn), "Trainer.predict"
        )
        host = jax.device_get(self._per_batch("predict", predict, batches, local))
        return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *host)

    # -- interrupts ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """Turn SIGINT into a stop request while training; a third one during a save aborts it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        count = [0]

        def handler(signum: int, frame: Any) -> None:
            count[0] += 1
            if self._saving and count[0] >= 3:
                raise KeyboardInterrupt
            self.request_stop("interrupted")

        self._saving = False
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
