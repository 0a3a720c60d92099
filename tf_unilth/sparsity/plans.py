"""Density plans: the density after each pruning round.

A round reaching density d_i from d_{i-1} removes 1 - d_i / d_{i-1} of the
surviving weights. Iterative methods use the geometric sequence
d_i = d_0 (d_R / d_0)^(i/R), or a fixed rate p per round (LTH's 20%).
"""

import math
import numbers


def check_sparsity(sparsity, name="target sparsity"):
    """Raises unless `sparsity` is a number in [0, 1)."""
    if not (isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool)
            and 0.0 <= sparsity < 1.0):
        raise ValueError(
            f"The {name} must be a number in [0, 1) (fraction of prunable weights "
            f"removed), got {sparsity!r}.")
    return float(sparsity)


def check_rate(rate, name="pruning rate"):
    """Raises unless `rate` (a fraction of surviving weights to remove) is in [0, 1)."""
    if not (isinstance(rate, numbers.Real) and 0.0 <= rate < 1.0):
        raise ValueError(f"A {name} must be in [0, 1), got {rate}.")
    return rate


def geometric_densities(target_sparsity, rounds, start_density=1.0):
    """Densities d_i = start * (d_target / start)^(i/R), i = 1..R."""
    check_sparsity(target_sparsity)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    end = 1.0 - target_sparsity
    if end > start_density:
        raise ValueError(
            f"Target density {end:.4f} is above the current density "
            f"{start_density:.4f}: pruning can only remove weights.")
    return [start_density * (end / start_density) ** (i / rounds)
            for i in range(1, rounds + 1)]


def fixed_rate_densities(rate, rounds, start_density=1.0):
    """Densities after removing `rate` of the remaining weights per round."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"Pruning rate must be in (0, 1), got {rate}.")
    return [start_density * (1.0 - rate) ** i for i in range(1, rounds + 1)]


def rounds_to_reach(target_sparsity, rate):
    """Rounds of fixed `rate` needed to reach at least `target_sparsity`."""
    check_sparsity(target_sparsity)
    if target_sparsity == 0.0:
        return 0
    return int(math.ceil(math.log(1.0 - target_sparsity) / math.log(1.0 - rate) - 1e-9))


def rate_between(density_from, density_to):
    """Fraction of the surviving weights to remove to go from one density to another."""
    if density_to > density_from + 1e-12:
        raise ValueError(f"Cannot grow density from {density_from} to {density_to}.")
    return 1.0 - density_to / density_from
