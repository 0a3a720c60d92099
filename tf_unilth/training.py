"""Earlier versions' module of the training loop, kept for their imports.

The loop is now `tf_unilth.search.Search` (what a method may use) over
`tf_unilth.engine` (trainer, journal, round records).
"""

from tf_unilth.engine.records import format_round  # noqa: F401
from tf_unilth.engine.trainer import OPTIMIZERS, WorkersAgree, make_optimizer  # noqa: F401
from tf_unilth.masks import masks_digest  # noqa: F401
from tf_unilth import masks as _masks
from tf_unilth import wrapper as _wrapper
from tf_unilth.search import Data, Search  # noqa: F401

Session = Search  # the earlier name


replica_masks_digests = _masks.replica_digests


def current_sparsity(model):
    return float(_masks.sparsity(model)) if _wrapper.wrappers(model) else 0.0
