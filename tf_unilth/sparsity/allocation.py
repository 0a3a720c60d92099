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
"""

import numpy as np

from tf_unilth.sparsity.mask import Mask
from tf_unilth.sparsity.plans import check_rate, rate_between

_ALLOCATIONS = {}


class Allocation:
    """Splits a removal over the prunable weights (see module doc)."""

    name = None

    def rates(self, alive, density, output_layer=None):
        """Rates that take the surviving weights `alive` (a Mask) to `density` overall."""
        raise NotImplementedError

    def fixed_rates(self, alive, rate, output_layer=None):
        """Rates of a step that removes `rate` of the surviving weights."""
        raise ValueError(f"The {self.name!r} allocation has no fixed-rate form; use "
                         "'uniform' or 'global' for a fixed pruning rate.")

    def round_rates(self, alive, density, final_density, round_index, rounds,
                    output_layer=None):
        """Rates of round `round_index` (1-based) of `rounds` on a plan to
        `final_density`, reaching `density` overall after it."""
        del final_density, round_index, rounds
        return self.rates(alive, density, output_layer)


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


def get(name, output_rate_scale=0.5):
    """An allocation by name ('uniform' takes `output_rate_scale`), or an instance as is."""
    if isinstance(name, Allocation):
        return name
    if name not in _ALLOCATIONS:
        raise ValueError(f"Unknown allocation {name!r}; known: {list(names())}.")
    cls = _ALLOCATIONS[name]
    return cls(output_rate_scale) if cls is Uniform else cls()


def _output_keys(alive, output_layer):
    return [k for k in alive if Mask.layer_name(k) == output_layer]


@register_allocation("uniform")
class Uniform(Allocation):
    """Every layer loses the same fraction; the output layer `output_rate_scale`
    times it (1.0: all alike)."""

    def __init__(self, output_rate_scale=0.5):
        if not 0.0 <= output_rate_scale <= 1.0:
            raise ValueError(f"output_rate_scale must be in [0, 1], got {output_rate_scale}.")
        self.output_rate_scale = output_rate_scale

    def _layer_rates(self, alive, rate, output_layer):
        out = set(_output_keys(alive, output_layer))
        return {k: self.output_rate_scale * rate if k in out else rate for k in alive}

    def rates(self, alive, density, output_layer=None):
        counts, out = alive.alive_counts(), set(_output_keys(alive, output_layer))
        alive_out = sum(n for k, n in counts.items() if k in out)
        alive_rest = sum(n for k, n in counts.items() if k not in out)
        remove = alive_out + alive_rest - density * alive.count
        if remove < 0:
            raise ValueError(f"Cannot grow density to {density} (now {alive.density:.4f}).")
        rate = check_rate(remove / (self.output_rate_scale * alive_out + alive_rest))
        return self._layer_rates(alive, rate, output_layer)

    def fixed_rates(self, alive, rate, output_layer=None):
        return self._layer_rates(alive, check_rate(rate), output_layer)


@register_allocation("global")
class Global(Allocation):
    """One threshold over every prunable weight."""

    def rates(self, alive, density, output_layer=None):
        if alive.alive == 0:
            return 0.0
        return check_rate((alive.alive - density * alive.count) / alive.alive)

    def fixed_rates(self, alive, rate, output_layer=None):
        return check_rate(rate)


@register_allocation("erk")
class ERK(Allocation):
    """Erdos-Renyi-Kernel densities: small layers (the output layer) stay
    denser, the big first layer sparser. Random sparse networks train much
    better with it than with uniform rates (Liu et al. 2022)."""

    @staticmethod
    def densities(shapes, density):
        """Per-key densities at `density` overall (`shapes`: key -> shape)."""
        sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
        raw = {k: float(np.sum(s)) / sizes[k] for k, s in shapes.items()}
        budget, dense = density * sum(sizes.values()), set()
        while True:
            free = [k for k in sizes if k not in dense]
            scale = (budget - sum(sizes[k] for k in dense)) / sum(raw[k] * sizes[k] for k in free)
            over = [k for k in free if raw[k] * scale > 1.0]
            if not over:
                return {k: 1.0 if k in dense else raw[k] * scale for k in sizes}
            dense.update(over)

    @staticmethod
    def rates_to(alive, targets):
        """Rates taking each key from its surviving density to `targets[key]`
        (never growing: a layer already below its target loses nothing)."""
        rates = {}
        for key, array in alive.items():
            now = array.sum() / array.size
            rates[key] = max(0.0, rate_between(now, min(now, targets[key])))
        return rates

    def rates(self, alive, density, output_layer=None):
        return self.rates_to(alive, self.densities({k: a.shape for k, a in alive.items()},
                                                   density))

    def round_rates(self, alive, density, final_density, round_index, rounds,
                    output_layer=None):
        # Each layer geometrically to its final ERK density.
        final = self.densities({k: a.shape for k, a in alive.items()}, final_density)
        return self.rates_to(alive, {k: d ** (round_index / rounds) for k, d in final.items()})
