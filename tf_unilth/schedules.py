"""Pruning schedules whose decisions are made while training runs.

tfmot traces `schedule(step)` into the training graph once, so any state kept
in Python attributes is frozen at trace time. The schedules here keep their
run-time state in `tf.Variable`s instead: a plateau trigger (or any callback)
can start a round plan mid-training and the traced graph follows it.

Step counting follows tfmot: each wrapper's `pruning_step` starts at -1,
`UpdatePruningStep` sets it to 0 at the start of training, and the forward
pass increments it *before* asking the schedule, so the first training batch
sees step 1. A plan started with `start(step)` while the wrapper is at `step`
prunes at `step + offset` for each offset: offset 1 is the very next batch.
"""

from tf_unilth._compat import keras, tf, tfmot
from tf_unilth.sparsity.plans import (check_sparsity, fixed_rate_densities,  # noqa: F401
                                      geometric_densities, rounds_to_reach)

_PruningSchedule = tfmot.sparsity.keras.PruningSchedule
_check_sparsity = check_sparsity  # the name earlier versions used


@keras.utils.register_keras_serializable(package="tf_unilth")
class TriggeredSchedule(_PruningSchedule, tf.Module):
    """Does nothing until started, then prunes once per planned event.

    The plan is `sparsities[i]` at `offsets[i]` steps after the start step.
    All three live in variables, so a controller can retarget a layer or start
    the plan at run time without a retrace (global selection decides each
    layer's share only when the round begins), and all three are in the
    config: a model saved mid-plan (.keras, .h5, through our API or tfmot's)
    comes back with its plan still armed. `start(step)` arms the plan,
    `freeze()` disarms it: a frozen schedule never changes the mask. The
    config's class name is the registered `tf_unilth>TriggeredSchedule`, which
    Keras' (and so tfmot's) deserialization finds once tf_unilth is imported.
    """

    def __init__(self, sparsities=(), offsets=(), name="triggered_schedule", start_step=-1):
        tf.Module.__init__(self, name=name)
        sparsities = [float(s) for s in sparsities]
        offsets = [int(o) for o in offsets]
        if len(sparsities) != len(offsets):
            raise ValueError(
                f"sparsities ({len(sparsities)}) and offsets ({len(offsets)}) "
                "must have one entry per pruning event.")
        for s in sparsities:
            _check_sparsity(s, "event sparsity")
        if any(o < 1 for o in offsets) or offsets != sorted(set(offsets)):
            raise ValueError(
                f"offsets must be distinct, increasing and >= 1, got {offsets}.")
        self._config_sparsities = sparsities
        self._config_offsets = offsets
        # A schedule with no events still needs non-empty tensors to compare.
        padded_s = sparsities or [0.0]
        padded_o = offsets or [-1]
        self.offsets = tf.Variable(padded_o, trainable=False, dtype=tf.int64, name="offsets")
        self.sparsities = tf.Variable(
            padded_s, trainable=False, dtype=tf.float32, name="sparsities")
        # -1: not started (or frozen).
        self.start_step = tf.Variable(
            int(start_step), trainable=False, dtype=tf.int64, name="start_step")

    @property
    def num_events(self):
        return len(self._config_offsets)

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        started = tf.greater_equal(self.start_step, 0)
        hits = tf.logical_and(
            tf.equal(self.start_step + self.offsets, step), started)
        if not self._config_offsets:
            hits = tf.zeros_like(hits)
        should_prune = tf.reduce_any(hits)
        sparsity = tf.reduce_max(
            tf.where(hits, self.sparsities, tf.zeros_like(self.sparsities)))
        return should_prune, sparsity

    def start(self, step):
        """Arms the plan: event i fires at `step + offsets[i]`."""
        self.start_step.assign(int(step))

    def freeze(self):
        """Disarms the plan; the mask no longer changes."""
        self.start_step.assign(-1)

    @property
    def started(self):
        return int(self.start_step.numpy()) >= 0

    def event_steps(self):
        """Absolute steps of the events, or [] when not started."""
        start = int(self.start_step.numpy())
        return [] if start < 0 else [start + int(o) for o in self.offsets.numpy()
                                     ][:self.num_events]

    def set_plan(self, sparsities, offsets):
        """Replaces the plan at run time (same number of events as configured),
        e.g. once the round length in steps is known."""
        sparsities, offsets = list(sparsities), [int(o) for o in offsets]
        if len(sparsities) != self.num_events or len(offsets) != self.num_events:
            raise ValueError(f"This schedule has {self.num_events} events; got "
                             f"{len(sparsities)} sparsities and {len(offsets)} offsets.")
        for sp in sparsities:
            _check_sparsity(sp, "event sparsity")
        if any(o < 1 for o in offsets) or offsets != sorted(set(offsets)):
            raise ValueError(f"offsets must be distinct, increasing and >= 1, got {offsets}.")
        if self.num_events:
            self.sparsities.assign(sparsities)
            self.offsets.assign(offsets)

    def set_sparsity(self, event, sparsity):
        """Retargets one event (e.g. a layer's share of a global selection)."""
        _check_sparsity(sparsity, "event sparsity")
        values = self.sparsities.numpy()
        values[event] = sparsity
        self.sparsities.assign(values)

    def _plan_now(self):
        n = self.num_events
        return ([float(v) for v in self.sparsities.numpy()[:n]],
                [int(v) for v in self.offsets.numpy()[:n]])

    def get_config(self):
        sparsities, offsets = self._plan_now()
        return {"class_name": keras.utils.get_registered_name(type(self)),
                "config": {"sparsities": sparsities, "offsets": offsets,
                           "start_step": int(self.start_step.numpy()), "name": self.name}}

    @classmethod
    def from_config(cls, config):
        config = dict(config.get("config", config))
        return cls(**config)

    @classmethod
    def rounds(cls, densities, steps_per_round, name=None):
        """A round plan: one event at the last step of each round.

        `densities` are the densities after each round (e.g.
        `geometric_densities(...)`); the sparsity of event i is 1 - d_i.
        """
        if steps_per_round < 1:
            raise ValueError(f"steps_per_round must be >= 1, got {steps_per_round}.")
        return cls(sparsities=[1.0 - d for d in densities],
                   offsets=[steps_per_round * (i + 1) for i in range(len(densities))],
                   name=name or "triggered_schedule")


@keras.utils.register_keras_serializable(package="tf_unilth")
class OneShotSchedule(TriggeredSchedule):
    """Prunes once, to `sparsity`, at the first training step after `start()`.

    DLTH's removal step: the controller calls `start(current_step)` when the
    regularization phase ends and the next batch removes the weights.
    """

    def __init__(self, sparsity=0.0, name="one_shot_schedule", start_step=-1):
        super().__init__(sparsities=[sparsity], offsets=[1], name=name, start_step=start_step)

    def get_config(self):
        return {"class_name": keras.utils.get_registered_name(type(self)),
                "config": {"sparsity": self._plan_now()[0][0],
                           "start_step": int(self.start_step.numpy()), "name": self.name}}



def deserialize(schedule):
    """A PruningSchedule from its config: ours or tfmot's."""
    if isinstance(schedule, _PruningSchedule):
        return schedule
    known = {
        "TriggeredSchedule": TriggeredSchedule,
        "OneShotSchedule": OneShotSchedule,
        "ConstantSparsity": tfmot.sparsity.keras.ConstantSparsity,
        "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay,
    }
    if isinstance(schedule, str):
        raise ValueError(
            f"Pruning schedule was saved as the bare string {schedule!r}, without "
            "its config; it cannot be restored. Save with tf_unilth >= 0.1.")
    name = schedule["class_name"].split(">")[-1]
    if name not in known:
        raise ValueError(f"Unknown pruning schedule {schedule['class_name']!r}; "
                         f"known: {sorted(known)}.")
    return known[name].from_config(schedule["config"])
