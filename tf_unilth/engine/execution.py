"""How a search's training steps run: multi-step execution and XLA.

On small networks a Keras step is dominated by per-step host work, not by the
math: running many steps per call of the train function
(`steps_per_execution`) and compiling the step with XLA (`jit_compile`) make
a search several times faster with the same tickets. Both are `auto` by
default and pick the fast setting where it is exact:

- multi-step execution changes nothing the search computes: pruning events
  and lambda's growth are decided in the graph from the step counter, the
  rewind checkpoint at step k cuts its chunk short to end exactly at k
  (`callbacks.Rewind`), and every other callback of the library runs per
  epoch. It is turned off (1) when a callback of the user's has per-batch
  hooks, which Keras would call once per chunk instead of once per step.
- XLA compiles the step (pruning wrapper, schedules, penalties included) and
  gives the same masks; float results can differ in the last bits (fused
  operations), so it is a setting, reported with every run. `auto` uses it on
  one device; under a distribution strategy it stays off: the pruning
  wrapper's mask update is a cross-replica `merge_call`, which XLA cannot
  compile inside the replicated step. It also stays off for a model with
  convolutions when no GPU is visible: XLA's CPU convolutions are slower than
  TensorFlow's own (oneDNN) kernels; Conv-2 on MNIST trained 2.5x slower with
  it on this project's 2-core CPU (benchmarks/README.md, "Search speed"). And
  it stays off for a search planned shorter than AUTO_XLA_MIN_STEPS steps:
  compiling costs a few seconds (about 4 s for LeNet-300-100's first fit on
  the 2-core CPU), what it saves is about 1.5 ms a step there, so a short
  search (a smoke run, a test) is faster without it.
"""

import dataclasses
import random

import numpy as np

from tf_unilth._compat import implements_train_batch_hooks, keras, tf

AUTO = "auto"
# Steps per call with `auto`: past ~50 the per-call host work is below 1% of a
# LeNet-300-100 step (benchmarks/search_speed.py); an epoch shorter than this
# runs as one call.
AUTO_STEPS_PER_EXECUTION = 100
# The shortest planned search `auto` compiles with XLA (module doc): ~4 s of
# compilation over ~1.5 ms saved a step breaks even near 2,700 steps.
AUTO_XLA_MIN_STEPS = 3000


# The public Keras convolution layers (Conv2DTranspose and the like subclass these).
_CONVOLUTIONS = tuple(getattr(keras.layers, name) for name in (
    "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
    "SeparableConv2D") if hasattr(keras.layers, name))


def has_convolutions(model):
    """True when `model` (or a layer nested in it, wrapped or not) convolves."""
    return any(isinstance(m, _CONVOLUTIONS) for m in [model, *model.submodules])


def accelerator_visible():
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


@dataclasses.dataclass
class Execution:
    """The resolved settings and why they were chosen."""
    steps_per_execution: int
    jit_compile: bool
    reasons: list
    jit_auto: bool = False  # jit_compile came from `auto` (for_model may turn it off)

    @classmethod
    def resolve(cls, steps_per_execution=AUTO, jit_compile=AUTO, *, strategy=None,
                steps_per_epoch=None, callbacks=(), planned_steps=None):
        """Resolves `auto` settings (see the module doc); checks explicit ones.
        `planned_steps`: the search's planned training steps (None: unknown)."""
        strategy = strategy or tf.distribute.get_strategy()
        reasons = []
        if steps_per_execution == AUTO:
            hooked = [type(cb).__name__ for cb in callbacks if implements_train_batch_hooks(cb)]
            if hooked:
                spe = 1
                reasons.append(f"steps_per_execution=1: callback(s) {', '.join(hooked)} have "
                               "per-batch hooks (Keras would call them once per chunk)")
            else:
                spe = min(AUTO_STEPS_PER_EXECUTION, steps_per_epoch or AUTO_STEPS_PER_EXECUTION)
        else:
            if isinstance(steps_per_execution, bool) or not isinstance(
                    steps_per_execution, int) or steps_per_execution < 1:
                raise ValueError(f"steps_per_execution must be 'auto' or an int >= 1, got "
                                 f"{steps_per_execution!r} (flag --steps_per_execution).")
            spe = steps_per_execution
        if jit_compile == AUTO:
            distributed = strategy.num_replicas_in_sync > 1 or \
                type(strategy).__name__ not in ("_DefaultDistributionStrategy",
                                                "OneDeviceStrategy")
            short = planned_steps is not None and planned_steps < AUTO_XLA_MIN_STEPS
            jit = not distributed and not short
            if distributed:
                reasons.append(f"jit_compile=False: under {type(strategy).__name__} the "
                               "pruning wrapper's cross-replica mask update cannot be "
                               "compiled by XLA")
            elif short:
                reasons.append(f"jit_compile=False: {planned_steps} planned steps are too few "
                               f"to repay XLA's compilation (it pays from "
                               f"{AUTO_XLA_MIN_STEPS})")
            elif not accelerator_visible():
                # Said up front as a rule (no model is known yet); for_model
                # applies it to each compiled model.
                reasons.append("a model with convolutions compiles without XLA: no GPU is "
                               "visible, and XLA's CPU convolutions are slower")
        elif isinstance(jit_compile, bool):
            jit = jit_compile
        else:
            raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r} "
                             "(flag --jit_compile).")
        return cls(spe, jit, reasons, jit_auto=jit_compile == AUTO)

    def for_model(self, model):
        """These settings for compiling `model`: an `auto` XLA is turned off
        for a model with convolutions when no GPU is visible (module doc)."""
        if self.jit_compile and self.jit_auto and not accelerator_visible() \
                and has_convolutions(model):
            return dataclasses.replace(
                self, jit_compile=False, jit_auto=False, reasons=self.reasons + [
                    f"for {model.name}: it has convolutions and no GPU is visible"])
        return self

    def describe(self):
        text = (f"Execution: {self.steps_per_execution} step(s) per call, XLA "
                f"{'on' if self.jit_compile else 'off'}")
        return text + (f" ({'; '.join(self.reasons)})" if self.reasons else "") + "."

    def compile_kwargs(self):
        """Keyword arguments for `model.compile`."""
        return {"steps_per_execution": self.steps_per_execution,
                "jit_compile": self.jit_compile}


def make_deterministic(seed):
    """Seeds Python, numpy and TensorFlow and turns on TensorFlow's op
    determinism, so the same run gives the same numbers in another process.

    Without it a run is already reproducible when every random choice is
    seeded (tf_unilth's models, data orders and tickets are); a model built
    with unseeded initializers, or ops with non-deterministic kernels, are
    what this fixes. Process-wide and irreversible: call it first."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
