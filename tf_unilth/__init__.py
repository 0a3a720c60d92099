"""tf_unilth: find winning lottery tickets and transform random tickets into winning ones."""

from tf_unilth._compat import keras, tf, tfmot  # noqa: F401  (sets up Keras 2 first)
