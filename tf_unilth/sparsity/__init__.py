"""The sparsity core: masks, density plans, scores, allocations and selections.

Pure numpy, no TensorFlow: every part works on plain arrays keyed by
`Mask.key(layer, index)` and is tested that way. The TensorFlow side
(`tf_unilth.masks`) reads those arrays out of a pruned model and writes the
result back; nothing here knows about models.

- `Mask`: which weights survive, as an immutable value (sparsity, digest,
  fidelity, save/load).
- `plans`: density sequences (geometric rounds, fixed rate per round).
- `criteria`: how important each weight is (magnitude, fixed random scores,
  your own: `register_criterion`).
- `allocation`: how much each layer keeps (uniform with the output layer's
  rate, one global threshold, Erdos-Renyi-Kernel).
- `selection`: scores + surviving weights + allocation -> the weights to remove.
"""

from tf_unilth.sparsity.mask import Mask  # noqa: F401
from tf_unilth.sparsity import allocation, criteria, plans, selection  # noqa: F401
from tf_unilth.sparsity.criteria import Criterion, register_criterion  # noqa: F401
from tf_unilth.sparsity.allocation import Allocation, register_allocation  # noqa: F401
from tf_unilth.sparsity.selection import Selector  # noqa: F401
