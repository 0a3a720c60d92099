"""A learning rate that follows a search's stages, evaluated in the training step.

`StageLearningRate` is the base rate until a controller starts a segment
(a pruning round, the fine-tuning): over the segment's `length` steps the rate
decays from the base along a cosine or a line, and the next segment starts
from the base again (learning-rate rewinding at every round start). It reads
the pruning wrappers' step counter, which only grows: a rewind puts the
optimizer's own iteration count back, which would replay a schedule keyed on
it. Its state lives in variables (checkpointed with the optimizer that holds
it), so starting a segment needs no retrace.

`DecoupledDecay` is AdamW's decoupled weight decay (Loshchilov & Hutter 2019)
on the surviving prunable weights: after every optimizer update each weight
is multiplied by 1 - lr * rate, inside the wrappers' constraint (see
`tf_unilth.wrapper`). The rate is a variable, 0 until a controller sets it, so
stage 1 of UniLTH trains without any regularization.
"""

import math

from tf_unilth._compat import keras, module_ignoring, tf

KINDS = ("constant", "cosine", "linear")


@keras.utils.register_keras_serializable(package="tf_unilth")
class StageLearningRate(keras.optimizers.schedules.LearningRateSchedule, tf.Module):
    """The base rate, or its decay over the segment a controller started."""

    _TF_MODULE_IGNORED_PROPERTIES = module_ignoring("_step")

    def __init__(self, base, step=None, name="stage_learning_rate"):
        tf.Module.__init__(self, name=name)
        self.base = float(base)
        object.__setattr__(self, "_step", step)  # the wrappers' counter (theirs)
        self.start_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="start_step")
        self.length = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="length")
        self.kind = tf.Variable(0, dtype=tf.int64, trainable=False, name="kind")

    def __call__(self, iterations):
        del iterations  # rewound by every rewind; the wrappers' step is not
        if self._step is None:
            return tf.constant(self.base, tf.float32)
        t = tf.cast(self._step - self.start_step, tf.float32)
        x = tf.clip_by_value(t / self.length, 0.0, 1.0)
        shape = tf.where(tf.equal(self.kind, 1), 0.5 * (1.0 + tf.cos(math.pi * x)),
                         tf.where(tf.equal(self.kind, 2), 1.0 - x, 1.0))
        return self.base * tf.where(self.start_step >= 0, shape, 1.0)

    def begin(self, step, length, kind):
        """A segment of `length` steps from the step after `step` (`kind`: one of KINDS)."""
        if kind not in KINDS:
            raise ValueError(f"A learning-rate schedule is one of {list(KINDS)}, got {kind!r}.")
        self.kind.assign(KINDS.index(kind))
        self.length.assign(float(max(1, length)))
        self.start_step.assign(int(step))

    def hold(self):
        """The base rate from now on."""
        self.start_step.assign(-1)

    def current(self):
        return float(self(None))

    def get_config(self):
        return {"base": self.base, "name": self.name}


class DecoupledDecay(tf.Module):
    """Decoupled weight decay: the factor 1 - lr * rate the wrappers' constraint
    applies to the surviving weights after each update (1.0 while rate is 0)."""

    def __init__(self, learning_rate, name="decoupled_decay"):
        super().__init__(name=name)
        self.rate = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="rate")
        self.learning_rate = learning_rate  # a float or a StageLearningRate

    def factor(self):
        lr = self.learning_rate(None) if callable(self.learning_rate) else self.learning_rate
        return 1.0 - tf.cast(lr, tf.float32) * self.rate

    def set(self, rate):
        self.rate.assign(float(rate))
