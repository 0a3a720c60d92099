"""Pruning schedules of the Keras 3 path: the same plan API as
`tf_unilth.schedules` (start / freeze / set_plan / set_sparsity / event_steps),
kept in Python. The tf_keras schedules are traced into tfmot's step; here the
events run in Python at step boundaries (`UpdatePruningStep` asks `due`), so
the plan needs no variables. Step counting is tfmot's: a plan started at
`step` prunes at `step + offset` for each offset (offset 1: the next batch).
"""

from tf_unilth.sparsity.plans import check_sparsity


class TriggeredSchedule:
    """Does nothing until started, then prunes once per planned event."""

    def __init__(self, sparsities=(), offsets=(), name="triggered_schedule", start_step=-1):
        sparsities = [float(s) for s in sparsities]
        offsets = [int(o) for o in offsets]
        if len(sparsities) != len(offsets):
            raise ValueError(f"sparsities ({len(sparsities)}) and offsets ({len(offsets)}) "
                             "must have one entry per pruning event.")
        self._check(sparsities, offsets)
        self.sparsities, self.offsets = sparsities, offsets
        self.name = name
        self.start_step = int(start_step)
        self.fired = set()

    @staticmethod
    def _check(sparsities, offsets):
        for s in sparsities:
            check_sparsity(s, "event sparsity")
        if any(o < 1 for o in offsets) or offsets != sorted(set(offsets)):
            raise ValueError(f"offsets must be distinct, increasing and >= 1, got {offsets}.")

    @property
    def num_events(self):
        return len(self.offsets)

    def start(self, step):
        self.start_step = int(step)
        self.fired = set()

    def freeze(self):
        self.start_step = -1

    @property
    def started(self):
        return self.start_step >= 0

    def event_steps(self):
        return [] if self.start_step < 0 else [self.start_step + o for o in self.offsets]

    def pending(self):
        return [s for s in self.event_steps() if s not in self.fired]

    def due(self, step):
        """The sparsity of the latest unfired event at or before `step` (None if
        none is due); marks every such event fired."""
        due = [i for i, s in enumerate(self.event_steps()) if s <= step and s not in self.fired]
        if not due:
            return None
        for i in due:
            self.fired.add(self.event_steps()[i])
        return self.sparsities[due[-1]]

    def set_plan(self, sparsities, offsets):
        sparsities, offsets = [float(s) for s in sparsities], [int(o) for o in offsets]
        if len(sparsities) != self.num_events or len(offsets) != self.num_events:
            raise ValueError(f"This schedule has {self.num_events} events; got "
                             f"{len(sparsities)} sparsities and {len(offsets)} offsets.")
        self._check(sparsities, offsets)
        self.sparsities, self.offsets = sparsities, offsets

    def set_sparsity(self, event, sparsity):
        check_sparsity(sparsity, "event sparsity")
        self.sparsities[event] = float(sparsity)

    def get_state(self):
        return {"sparsities": list(self.sparsities), "offsets": list(self.offsets),
                "start_step": self.start_step, "fired": sorted(self.fired)}

    def set_state(self, state):
        self.sparsities, self.offsets = list(state["sparsities"]), list(state["offsets"])
        self.start_step, self.fired = int(state["start_step"]), set(state["fired"])

    @classmethod
    def rounds(cls, densities, steps_per_round, name=None):
        if steps_per_round < 1:
            raise ValueError(f"steps_per_round must be >= 1, got {steps_per_round}.")
        return cls(sparsities=[1.0 - d for d in densities],
                   offsets=[steps_per_round * (i + 1) for i in range(len(densities))],
                   name=name or "triggered_schedule")


class OneShotSchedule(TriggeredSchedule):
    """Prunes once, to `sparsity`, at the first training step after `start()`."""

    def __init__(self, sparsity=0.0, name="one_shot_schedule", start_step=-1):
        super().__init__(sparsities=[sparsity], offsets=[1], name=name, start_step=start_step)
