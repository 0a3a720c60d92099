"""Criteria: a score per prunable weight; a pruning step removes the lowest.

A criterion turns the weights (and, if it asks for them, the loss gradients
of one batch) into scores, key by key. Register your own with
`register_criterion`, and every method's `criterion` hyperparameter (flag
`--criterion`) accepts its name:

    @register_criterion("saliency")
    class Saliency(Criterion):
        needs_gradients = True            # SNIP-style: |w * dL/dw| on a batch
        def score(self, weights, gradients=None):
            return {k: np.abs(w * gradients[k]) for k, w in weights.items()}

Blocks: `block_score` pools the scores over (rows x cols) blocks of rank-2
weights, so a block survives or goes as a whole (TFLite's sparse kernels run
1x4 blocks fast). Magnitude pools by the L2 norm of the block's weights; other
criteria by the mean of their scores (a random ticket is drawn block by block).
"""

import inspect

import numpy as np

_CRITERIA = {}


class Criterion:
    """Scores the prunable weights; lower scores are removed first.

    Subclasses set `needs_gradients = True` to receive `gradients` (the
    gradient of the training loss on one batch, keyed like `weights`).
    Constructor arguments a criterion accepts are given by the caller from
    the method's hyperparameters (`seed` for random ones).
    """

    name = None
    needs_gradients = False

    def score(self, weights, gradients=None):
        """{key: array of weights.shape}: how much each weight matters."""
        raise NotImplementedError(f"{type(self).__name__}: a criterion implements score() "
                                  "(docs/EXTENDING.md)")

    def block_score(self, weights, block_size, gradients=None):
        """Scores pooled over blocks of rank-2 weights (mean of the block)."""
        return {k: _pool(s, block_size, mean=True) for k, s in
                self.score(weights, gradients).items()}


def register_criterion(name):
    """Class decorator: makes a `Criterion` subclass available by `name`."""
    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Criterion)):
            raise TypeError(f"register_criterion({name!r}) decorates a Criterion subclass, "
                            f"got {cls!r}.")
        known = _CRITERIA.get(name)
        if known is not None and known is not cls and (
                known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"A criterion named {name!r} is already registered "
                             f"({known.__module__}.{known.__qualname__}).")
        cls.name = name
        _CRITERIA[name] = cls
        return cls
    return decorator


def names():
    return tuple(sorted(_CRITERIA))


def get(name, **kwargs):
    """A criterion instance: by registered name (with its constructor
    arguments; ones it does not take are ignored), or an instance as is."""
    if isinstance(name, Criterion):
        return name
    if name not in _CRITERIA:
        raise ValueError(f"Unknown criterion {name!r}; known: {list(names())}. Register "
                         "your own with tf_unilth.sparsity.register_criterion.")
    cls = _CRITERIA[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


@register_criterion("magnitude")
class Magnitude(Criterion):
    """|w|: LTH's and tfmot's criterion."""

    def score(self, weights, gradients=None):
        return {k: np.abs(w) for k, w in weights.items()}

    def block_score(self, weights, block_size, gradients=None):
        # The L2 norm of the block's weights (what tfmot's block pooling ranks).
        return {k: _pool(np.abs(w), block_size, mean=False) for k, w in weights.items()}


@register_criterion("random")
class FixedRandom(Criterion):
    """Fixed uniform scores drawn from `seed`: ranking by them draws a random
    ticket, and later rounds remove the next chunk of the same random order
    (UniDLTH's random ticket is drawn once, at initialization)."""

    def __init__(self, seed=0):
        self.seed = seed

    def score(self, weights, gradients=None):
        rng = np.random.default_rng(self.seed)  # drawn in key order, one array a weight
        return {k: rng.random(np.shape(w)) for k, w in weights.items()}


def _pool(values, block_size, mean):
    """Pools rank-2 `values` over (rows x cols) blocks, broadcast back to their shape:
    the mean of each block, or (mean=False) the L2 norm. Other ranks are unchanged."""
    bh, bw = (int(b) for b in block_size)
    if bh < 1 or bw < 1:
        raise ValueError(f"block_size must be two positive ints, got {block_size}.")
    if values.ndim != 2:
        return values
    rows, cols = values.shape
    padded = np.pad(values if mean else values ** 2, ((0, -rows % bh), (0, -cols % bw)))
    blocks = padded.reshape(padded.shape[0] // bh, bh, padded.shape[1] // bw, bw)
    pooled = blocks.mean(axis=(1, 3)) if mean else np.sqrt(blocks.sum(axis=(1, 3)))
    return np.repeat(np.repeat(pooled, bh, axis=0), bw, axis=1)[:rows, :cols]
