"""Selection: scores + surviving weights + allocation -> the weights to remove.

`remove_lowest` removes, per key, the lowest-scored surviving weights at the
allocation's rates, or, with one global rate, the lowest over all keys.
`Selector` bundles a criterion, an allocation and a block structure, and
names today's selection strings as such bundles (`Selector.named`).
"""

import dataclasses

import numpy as np

from tf_unilth.sparsity import allocation as allocation_lib
from tf_unilth.sparsity import criteria as criteria_lib
from tf_unilth.sparsity.mask import Mask
from tf_unilth.sparsity.plans import check_rate

# Selection names of earlier versions: (criterion, allocation, block size).
NAMED = {
    "magnitude_layerwise": ("magnitude", "uniform", None),
    "magnitude_global": ("magnitude", "global", None),
    "random": ("random", "uniform", None),
    "block": ("magnitude", "uniform", (4, 1)),
}


def removal_count(alive, rate, unit=1, minimum=0):
    """Weights to remove: a whole number of blocks of `unit` entries, leaving
    at least `minimum` (a floor)."""
    count = int(round(alive * rate / unit)) * unit
    room = max(0, alive - minimum)
    return min(count, room - room % unit)


def block_unit(shape, block_size):
    """Entries per removed block of a weight of `shape` (1 without blocks or
    for weights of rank other than 2)."""
    return int(np.prod(block_size)) if block_size is not None and len(shape) == 2 else 1


def lowest(scores, alive, count):
    """Bool array marking the `count` alive entries with the lowest scores
    (ties broken by position)."""
    chosen = np.zeros(scores.shape, dtype=bool)
    if count <= 0:
        return chosen
    flat_idx = np.flatnonzero(alive)
    order = np.argsort(scores.reshape(-1)[flat_idx], kind="stable")[:count]
    chosen.reshape(-1)[flat_idx[order]] = True
    return chosen


def remove_lowest(scores, alive, rates, block_size=None, minima=None):
    """The removal set (a Mask, True = remove) of one pruning step.

    `rates`: key -> fraction of that key's surviving weights (rank-2 weights
    remove whole blocks of `block_size` when given), or one float: the
    fraction of all surviving weights, by one threshold across keys.
    `minima` (key -> weights it keeps at least, an allocation's floor) bounds
    every key's removal; under one threshold, what a key at its floor cannot
    give is taken from the next-lowest scores of the others."""
    minima = minima or {}
    if isinstance(rates, dict):
        unknown = set(rates) - set(alive)
        if unknown:
            raise ValueError(f"Rates for unknown weights {sorted(unknown)}; known: {list(alive)}.")
        removal = {}
        for key, keep in alive.items():
            count = removal_count(int(keep.sum()), check_rate(rates.get(key, 0.0)),
                                  block_unit(keep.shape, block_size), minima.get(key, 0))
            removal[key] = lowest(scores[key], keep, count)
        return Mask(removal)
    if block_size is not None:
        raise ValueError("One global threshold has no block form; use a layer-wise "
                         "allocation ('uniform' or 'erk') with block_size.")
    rate = check_rate(rates)
    keys = list(alive)
    alive_scores = np.concatenate([scores[k][alive[k]] for k in keys])
    count = removal_count(alive_scores.size, rate)
    removal = {k: np.zeros(alive[k].shape, bool) for k in keys}
    if count:
        # Rank over the concatenation so ties are broken deterministically.
        flat_keys = np.concatenate([np.full(alive[k].sum(), i) for i, k in enumerate(keys)])
        flat_pos = np.concatenate([np.flatnonzero(alive[k]) for k in keys])
        order = np.argsort(alive_scores, kind="stable")
        rooms = np.array([int(alive[k].sum()) - minima.get(k, 0) for k in keys])
        # The `count` lowest scores whose key still has room above its floor.
        rank_in_key = np.empty(order.size, np.int64)
        for i in range(len(keys)):
            mine = flat_keys[order] == i
            rank_in_key[mine] = np.arange(int(mine.sum()))
        order = order[rank_in_key < rooms[flat_keys[order]]][:count]
        for i, k in enumerate(keys):
            removal[k].reshape(-1)[flat_pos[order[flat_keys[order] == i]]] = True
    return Mask(removal)


@dataclasses.dataclass
class Selector:
    """A criterion, an allocation and an optional block structure: everything
    that decides which weights a pruning step removes."""

    criterion: object = "magnitude"
    allocation: object = "uniform"
    block_size: tuple = None
    output_rate_scale: float = 0.5
    seed: int = 0
    floor: allocation_lib.Floor = None

    def __post_init__(self):
        if self.block_size is not None:
            self.block_size = tuple(int(b) for b in self.block_size)
            if len(self.block_size) != 2 or min(self.block_size) < 1:
                raise ValueError(f"block_size must be two positive ints like (4, 1), got "
                                 f"{self.block_size}.")
            if self.block_size == (1, 1):
                self.block_size = None
        self.criterion = criteria_lib.get(self.criterion, seed=self.seed)
        self.allocation = allocation_lib.get(self.allocation, self.output_rate_scale,
                                             self.floor)
        if self.block_size is not None and isinstance(self.allocation, allocation_lib.Global):
            raise ValueError("magnitude_global (one global threshold) has no block form; use "
                             "selection='magnitude_layerwise' (or 'block') with block_size.")

    @classmethod
    def named(cls, name, block_size=None, **kwargs):
        """A selector from an earlier version's selection name."""
        if name not in NAMED:
            raise ValueError(f"Unknown selection {name!r}; known: {list(NAMED)}.")
        criterion, allocation, default_block = NAMED[name]
        return cls(criterion, allocation, block_size or default_block, **kwargs)

    @property
    def needs_gradients(self):
        return self.criterion.needs_gradients

    def scores(self, weights, gradients=None):
        if self.block_size is None:
            return self.criterion.score(weights, gradients)
        return self.criterion.block_score(weights, self.block_size, gradients)

    def removal(self, weights, alive, rates, gradients=None):
        """The removal set at `rates` (from this selector's allocation), never
        taking a layer below the allocation's floor."""
        return remove_lowest(self.scores(weights, gradients), alive, rates, self.block_size,
                             self.allocation.floor.minima(alive))
