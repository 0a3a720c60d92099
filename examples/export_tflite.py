"""Export a ticket to a checked, sparse .tflite file: `tf_unilth.cli.export_tflite`.

    python examples/export_tflite.py --ticket=runs/unilth_mnist/ticket.keras \
        --output=runs/unilth_mnist/ticket.tflite [--quantize=dynamic_int8]
"""

import os

# Before TensorFlow loads (importing tf_unilth does): no C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_unilth.cli import export_tflite  # noqa: E402  (after the environment is set)

if __name__ == "__main__":
    export_tflite.run()
