"""tf_unilth: find winning lottery tickets and transform random tickets into winning ones.

Importing it first sets Keras up for tfmot (Keras 2 via `tf_keras`, see
`_compat`). The public API is re-exported here; the parts live in one module
per concern: `sparsity` (the numpy core), `schedules`, `wrapper`, `masks`,
`regularizers`, `callbacks`, `search` (what a method may use), `methods`.
"""

from tf_unilth._compat import KERAS2_RULE, check_model, keras, tf, tfmot  # noqa: F401
from tf_unilth import (callbacks, data, masks, methods, models, regularizers,  # noqa: F401
                       results, schedules, search, sparsity, training, wrapper)
from tf_unilth import analysis  # noqa: F401  (stability: instability, distances)
from tf_unilth import distribute  # noqa: F401  (strategies, chief/worker files)
from tf_unilth.callbacks import (PlateauTrigger, RegularizerGrowth, Rewind,  # noqa: F401
                                 UpdatePruningStep)
from tf_unilth.export import to_tflite  # noqa: F401  (TFLite export, sparse encoding)
from tf_unilth.finder import TicketResult, find_ticket, ticket_sparsity  # noqa: F401
from tf_unilth.methods import Method, hparam, register_method  # noqa: F401
from tf_unilth.regularizers import GrowingRegularizer  # noqa: F401
from tf_unilth.schedules import OneShotSchedule, TriggeredSchedule  # noqa: F401
from tf_unilth.serialization import custom_object_scope, load_model  # noqa: F401
from tf_unilth.sparsity import Mask, register_criterion  # noqa: F401
from tf_unilth.wrapper import MonotonePruneLowMagnitude, prune, strip  # noqa: F401

__version__ = "0.1.0"
