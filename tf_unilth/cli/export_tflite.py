"""Export a ticket to a sparse .tflite file and check it against the Keras model.

    python examples/export_tflite.py --ticket=runs/unilth_mnist/ticket.keras \
        --output=runs/unilth_mnist/ticket.tflite [--quantize=dynamic_int8]

Strips pruning wrappers if present, converts with EXPERIMENTAL_SPARSITY (plus
DEFAULT for dynamic int8), writes --output, runs it in the LiteRT interpreter
on the first --check_examples test images of --dataset and compares with the
Keras model. Prints the file size against a dense conversion, how the zeros are
encoded (read from the flatbuffer), the check and, with --latency_runs > 0, the
batch-1 single-thread latency of the sparse and the dense file (interleaved,
median). --report writes all of it as JSON.

TensorFlow's and absl's Python logging is set to WARNING, so the report is what
the program prints; errors it raises on purpose (bad flags or files, a failed
check, LiteRT missing) are one `error: ...` line on stderr, exit status 1.
"""

import json
import sys

from absl import app, flags, logging

import tf_unilth
from tf_unilth import export

FLAGS = flags.FLAGS
# What `run` reports as `error: ...` instead of a traceback.
EXPECTED_ERRORS = (FileNotFoundError, ValueError, TypeError, export.ExportCheckError,
                   export.MissingLiteRTError)


def define_flags():
    """Defines the program's flags (once; in `run`, not at import)."""
    if "ticket" in FLAGS:
        return
    flags.DEFINE_string("ticket", None, "Saved tf_keras model (.keras), e.g. find_ticket.py's "
                        "ticket.keras.", required=True)
    flags.DEFINE_string("output", None, "The .tflite file to write.", required=True)
    flags.DEFINE_enum("quantize", "none", ["none", "dynamic_int8"],
                      "none: float32; dynamic_int8: int8 weights, float activations.")
    flags.DEFINE_boolean("sparse", True, "Encode zeros (EXPERIMENTAL_SPARSITY); --nosparse for "
                         "a plain dense export.")
    flags.DEFINE_enum("prefer", "speed", list(export.PREFER),
                      "speed: the converter's encoding; size: re-encode block-sparse weights as "
                      "CSR where that is smaller (dense speed).")
    flags.DEFINE_string("dataset", "mnist", "TFDS dataset whose test images check the export "
                        "('none': random inputs in [0, 1)).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR). Never "
                        "downloads.")
    flags.DEFINE_boolean("standardize", False, "Standardize the check images as the ticket was "
                         "trained (find_ticket.py --standardize).")
    flags.DEFINE_integer("check_examples", 1000, "Test images the check runs on.")
    flags.DEFINE_integer("latency_runs", 500, "Invokes per round (10 rounds) for the latency "
                         "comparison; 0 skips it.")
    flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
    flags.DEFINE_string("report", None, "Optional JSON file for the export report.")


def check_inputs():
    """The first --check_examples test images of --dataset (None for 'none')."""
    if FLAGS.dataset == "none":
        return None
    splits = tf_unilth.data.load(FLAGS.dataset, data_dir=FLAGS.data_dir, download=False,
                                 batch_size=FLAGS.check_examples, validation_size=0,
                                 standardize=FLAGS.standardize, shuffle=False)
    return next(iter(splits.test))[0].numpy()


def main(argv):
    del argv
    # Keep the output to the report (TFDS, the converter and the SavedModel
    # writer log INFO lines otherwise).
    logging.set_verbosity(logging.WARNING)
    tf_unilth.tf.get_logger().setLevel("WARNING")
    model = export.load_ticket(FLAGS.ticket)
    sample = check_inputs()
    expected = tuple(model.inputs[0].shape[1:])
    if sample is not None and tuple(sample.shape[1:]) != expected:
        raise ValueError(f"--dataset={FLAGS.dataset} gives inputs of shape {sample.shape[1:]}, "
                         f"the ticket expects {expected}: pick the dataset it was trained on.")
    quantize = None if FLAGS.quantize == "none" else FLAGS.quantize
    report = export.to_tflite(model, FLAGS.output, sparse=FLAGS.sparse, quantize=quantize,
                              prefer=FLAGS.prefer, sample=sample, latency_runs=FLAGS.latency_runs,
                              num_threads=FLAGS.num_threads)
    print(report.summary())
    if FLAGS.report:
        with open(FLAGS.report, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
        print(f"report written to {FLAGS.report}")


def run(argv=None):
    """The program: defines the flags, runs `main`; expected errors as one line, exit 1."""
    define_flags()
    try:
        app.run(main, argv=argv)
    except EXPECTED_ERRORS as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(1)
