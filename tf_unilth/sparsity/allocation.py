"""Allocations: how much of a removal each layer takes.

An allocation answers "which fraction of its surviving weights does each
prunable weight lose" for a step that takes the model to an overall density
(`rates`), or that removes a fixed fraction (`fixed_rates`, LTH's 20% a
round). Rates are a dict key -> rate for layer-wise allocations, or one
float for `global` (one threshold over all layers). Register your own with
`register_allocation`.

- `uniform`: every layer loses the same fraction, the output layer
  `output_rate_scale` times it (LTH's convention: half), and the others a
  little more so the overall density is still reached.
- `global`: one magnitude threshold across all layers (OpenLTH's
  `sparse_global`; tfmot has none).
- `erk`: Erdos-Renyi-Kernel densities (Evci et al. 2020): a layer's density
  proportional to sum(shape) / prod(shape), capped at 1.

Every allocation respects a `Floor`: a layer never keeps fewer than
max(count, fraction x its size) weights (all of them if it is smaller). What
a layer at its floor cannot give up is taken from the others, so the overall
density still holds; when even every layer at its floor cannot reach it, an
`AllocationError` names the layers and the settings that fix it.
"""

import dataclasses
import math

import numpy as np

from tf_unilth.sparsity.mask import Mask
from tf_unilth.sparsity.plans import check_rate, rate_between

_ALLOCATIONS = {}

FIX_HINT = ("lower the target sparsity, keep the layer dense (exclude / --exclude), lower "
            "the floor (floor_count / --floor_count, floor_fraction / --floor_fraction), or "
            "prune the output layer at a higher rate (output_rate_scale / "
            "--output_rate_scale)")


class AllocationError(ValueError):
    """The target density cannot be reached under the allocation's rules."""


@dataclasses.dataclass(frozen=True)
class Floor:
    """The fewest weights a prunable weight keeps: max(count, ceil(fraction x
    size)), or all of them when it has fewer. The default keeps at least 8
    weights (a 160-weight first conv layer keeps 5% of itself) and never binds
    on LeNet-300-100 down to 1.5% density."""

    count: int = 8
    fraction: float = 0.005

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"floor_count must be an int >= 0, got {self.count!r}.")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"floor_fraction must be in [0, 1), got {self.fraction!r}.")

    def minimum(self, size):
        return min(int(size), max(int(self.count), int(math.ceil(self.fraction * size))))

    def minima(self, mask):
        """{key: fewest weights it keeps}: its floor, or what it keeps now if that is less."""
        alive = mask.alive_counts()
        return {k: min(alive[k], self.minimum(a.size)) for k, a in mask.items()}


NO_FLOOR = Floor(0, 0.0)


class Allocation:
    """Splits a removal over the prunable weights (see module doc)."""

    name = None

    def __init__(self, floor=None):
        self.floor = floor if floor is not None else Floor()

    def rates(self, alive, density, output_layers=()):
        """Rates that take the surviving weights `alive` (a Mask) to `density` overall."""
        raise NotImplementedError(f"{type(self).__name__}: an allocation implements rates() "
                                  "(docs/EXTENDING.md)")

    def fixed_rates(self, alive, rate, output_layers=()):
        """Rates of a step that removes `rate` of the surviving weights."""
        raise ValueError(f"The {self.name!r} allocation has no fixed-rate form; use "
                         "'uniform' or 'global' for a fixed pruning rate.")

    def round_rates(self, alive, density, final_density, progress, output_layers=()):
        """Rates of a round on a plan to `final_density` that reaches `density`
        overall after it; `progress` is the share of the plan done then (round
        i of R geometric rounds: i / R; in general log d / log d_final)."""
        del final_density, progress
        return self.rates(alive, density, output_layers)

    def check_reachable(self, alive, density):
        """Raises AllocationError when `density` is below what the floors keep."""
        minima = self.floor.minima(alive)
        target = density * alive.count
        if sum(minima.values()) > target + 1e-9:
            raise AllocationError(_unreachable(alive, density, minima))


def _unreachable(alive, density, minima):
    sizes = alive.sizes()
    worst = sorted(minima, key=lambda k: minima[k] / sizes[k], reverse=True)[:4]
    layers = ", ".join(f"{Mask.layer_name(k)} ({sizes[k]:,} weights, keeps >= {minima[k]})"
                       for k in worst)
    return (f"A density of {density:.4%} ({density * alive.count:,.0f} of {alive.count:,} "
            f"weights) is below what the layers keep at their floors "
            f"({sum(minima.values()):,} weights; {layers}). To fix it: {FIX_HINT}.")


def register_allocation(name):
    """Class decorator: makes an `Allocation` subclass available by `name`."""
    def decorator(cls):
        if name in _ALLOCATIONS and _ALLOCATIONS[name] is not cls:
            raise ValueError(f"An allocation named {name!r} is already registered.")
        cls.name = name
        _ALLOCATIONS[name] = cls
        return cls
    return decorator


def names():
    return tuple(sorted(_ALLOCATIONS))


def get(name, output_rate_scale=0.5, floor=None):
    """An allocation by name ('uniform' takes `output_rate_scale`), or an instance as is."""
    if isinstance(name, Allocation):
        return name
    if name not in _ALLOCATIONS:
        raise ValueError(f"Unknown allocation {name!r}; known: {list(names())}.")
    cls = _ALLOCATIONS[name]
    return cls(output_rate_scale, floor=floor) if cls is Uniform else cls(floor=floor)


def _output_keys(alive, output_layers):
    if isinstance(output_layers, str):
        output_layers = (output_layers,)
    names_ = set(output_layers or ())
    return {k for k in alive if Mask.layer_name(k) in names_}


def _capped(alive, rates, minima):
    """`rates` with each key's removal limited to what it can give above its floor."""
    counts = alive.alive_counts()
    return {k: min(r, rate_between(counts[k], minima[k])) if counts[k] else 0.0
            for k, r in rates.items()}


@register_allocation("uniform")
class Uniform(Allocation):
    """Every layer loses the same fraction; the output layer `output_rate_scale`
    times it (1.0: all alike). A layer at its floor loses no more, and the
    others lose a little more instead."""

    def __init__(self, output_rate_scale=0.5, floor=None):
        super().__init__(floor)
        if not 0.0 <= output_rate_scale <= 1.0:
            raise ValueError(f"output_rate_scale must be in [0, 1], got {output_rate_scale}.")
        self.output_rate_scale = output_rate_scale

    def _layer_rates(self, alive, rate, output_layers):
        out = _output_keys(alive, output_layers)
        return {k: self.output_rate_scale * rate if k in out else rate for k in alive}

    def rates(self, alive, density, output_layers=()):
        counts, out = alive.alive_counts(), _output_keys(alive, output_layers)
        alive_out = sum(n for k, n in counts.items() if k in out)
        alive_rest = sum(n for k, n in counts.items() if k not in out)
        remove = alive_out + alive_rest - density * alive.count
        if remove < 0:
            raise ValueError(f"Cannot grow density to {density} (now {alive.density:.4f}).")
        self.check_reachable(alive, density)
        minima, fixed = self.floor.minima(alive), {}
        while True:  # layers that would go below their floor are held at it
            free_out = sum(n for k, n in counts.items() if k in out and k not in fixed)
            free_rest = sum(n for k, n in counts.items() if k not in out and k not in fixed)
            left = remove - sum(counts[k] - minima[k] for k in fixed)
            weight = self.output_rate_scale * free_out + free_rest
            rate = left / weight if weight else 0.0
            rates = {k: (rate_between(counts[k], minima[k]) if counts[k] else 0.0)
                     if k in fixed else (self.output_rate_scale * rate if k in out else rate)
                     for k in alive}
            over = [k for k in alive if k not in fixed and
                    counts[k] - counts[k] * rates[k] < minima[k] - 1e-9]
            if not over:
                for value in rates.values():
                    check_rate(value)
                return rates
            fixed.update({k: True for k in over})

    def fixed_rates(self, alive, rate, output_layers=()):
        return _capped(alive, self._layer_rates(alive, check_rate(rate), output_layers),
                       self.floor.minima(alive))


@register_allocation("global")
class Global(Allocation):
    """One threshold over every prunable weight (a layer at its floor is
    skipped by it: `selection.remove_lowest` takes the floors)."""

    def rates(self, alive, density, output_layers=()):
        if alive.alive == 0:
            return 0.0
        self.check_reachable(alive, density)
        return check_rate((alive.alive - density * alive.count) / alive.alive)

    def fixed_rates(self, alive, rate, output_layers=()):
        return check_rate(rate)


@register_allocation("erk")
class ERK(Allocation):
    """Erdos-Renyi-Kernel densities: small layers (the output layer) stay
    denser, the big first layer sparser. Random sparse networks train much
    better with it than with uniform rates (Liu et al. 2022)."""

    @staticmethod
    def densities(shapes, density, floor=None):
        """Per-key densities at `density` overall (`shapes`: key -> shape): ERK's,
        capped at 1 and raised to each key's floor, the others sharing the rest."""
        floor = floor or NO_FLOOR
        sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
        raw = {k: float(np.sum(s)) / sizes[k] for k, s in shapes.items()}
        low = {k: floor.minimum(sizes[k]) / sizes[k] for k in sizes}
        budget, fixed = density * sum(sizes.values()), {}
        if sum(low[k] * sizes[k] for k in sizes) > budget + 1e-9:
            minima = {k: floor.minimum(sizes[k]) for k in sizes}
            raise AllocationError(_unreachable(Mask.ones(shapes), density, minima))
        while True:
            free = [k for k in sizes if k not in fixed]
            if not free:
                return dict(fixed)
            scale = (budget - sum(fixed[k] * sizes[k] for k in fixed)) / \
                sum(raw[k] * sizes[k] for k in free)
            over = {k: 1.0 for k in free if raw[k] * scale > 1.0}
            under = {k: low[k] for k in free if raw[k] * scale < low[k]}
            if not over and not under:
                return {k: fixed[k] if k in fixed else raw[k] * scale for k in sizes}
            fixed.update(over or under)

    @staticmethod
    def rates_to(alive, targets):
        """Rates taking each key from its surviving density to `targets[key]`
        (never growing: a layer already below its target loses nothing)."""
        rates = {}
        for key, array in alive.items():
            now = array.sum() / array.size
            rates[key] = max(0.0, rate_between(now, min(now, targets[key])))
        return rates

    def rates(self, alive, density, output_layers=()):
        return self.rates_to(alive, self.densities({k: a.shape for k, a in alive.items()},
                                                   density, self.floor))

    def round_rates(self, alive, density, final_density, progress, output_layers=()):
        # Each layer geometrically to its final ERK density.
        final = self.densities({k: a.shape for k, a in alive.items()}, final_density,
                               self.floor)
        return self.rates_to(alive, {k: d ** progress for k, d in final.items()})
