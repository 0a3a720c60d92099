"""TFLite export of LeNet-300-100 tickets: file size, latency and accuracy.

Trains (once; cached in --work_dir) the dense LeNet-300-100 and four UniLTH
tickets on MNIST -- target sparsity 0.9 and 0.965, unstructured
(`selection="magnitude_layerwise"`) and block (`selection="block"`, 4x1 blocks
of consecutive input rows per output column) -- and exports each with
`tf_unilth.to_tflite`, float and dynamic-range int8. Protocol (also written
into the JSON under "protocol"):

* Training: `tf_unilth.find_ticket` on `data.load("mnist", batch_size=60)`
  (55,000 train / 5,000 validation / 10,000 test), seed 0, the library's
  default protocol (Adam 6e-4). Dense: method "dense" (30 epochs, keeps the
  weights of its best validation-accuracy epoch). UniLTH: its defaults (60-epoch
  budget, plateau trigger, 5 rounds). A model is trained only when
  `<work_dir>/<name>/ticket.keras` is missing, so a rerun resumes.
* Export: the dense model with `sparse=False` (the reference file), every model
  with `sparse=True` (EXPERIMENTAL_SPARSITY), each float and dynamic int8. Each
  export is checked against the Keras model on the first 1,000 test images.
* Accuracy: the .tflite file itself, run in the LiteRT interpreter on all
  10,000 MNIST test images (not the Keras model).
* Latency: batch 1, `num_threads=1`, after warm-up. All interpreters are
  loaded at once and measured round robin (--latency_rounds rounds of
  --latency_runs invokes each, per-invoke `perf_counter`), so machine noise hits
  every file alike. Reported: median microseconds per example over all invokes,
  and the speed-up against the dense file of the same precision as the median
  of per-round ratios.
* Sparsity encoded: read from the flatbuffer (tensors with sparsity
  parameters: format, stored values against dense size, and whether a DENSIFY
  op expands them at load or the FULLY_CONNECTED kernel reads them sparse).

Usage:

    python benchmarks/tflite_export.py --data_dir=/work/shared/data/tfds \
        --work_dir=/tmp/tflite_export_work
"""

import datetime
import json
import os
import platform
import shutil
import sys
import time

from absl import app, flags, logging

import tf_unilth

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data dir holding mnist (default: $TFDS_DATA_DIR).")
flags.DEFINE_string("work_dir", "/tmp/tf_unilth_tflite_export",
                    "Cache of trained tickets and exported files (reused on rerun).")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "results", "tflite_export.json"),
                    "Result JSON; the plot is written next to it (.png).")
flags.DEFINE_boolean("train_only", False, "Only train (and cache) the models, then exit.")
flags.DEFINE_integer("latency_rounds", 30, "Round-robin rounds of latency measurement.")
flags.DEFINE_integer("latency_runs", 200, "Invokes per file per round.")
flags.DEFINE_integer("seed", 0, "Seed of initialization and data order.")

TARGETS = (0.9, 0.965)
SELECTIONS = ("magnitude_layerwise", "block")


def model_specs():
    """(name, method, kwargs) of every model the benchmark trains."""
    specs = [("dense", "dense", {})]
    for selection in SELECTIONS:
        for target in TARGETS:
            kind = "block" if selection == "block" else "unstructured"
            specs.append((f"unilth_{kind}_{target}", "unilth",
                          {"target_sparsity": target, "selection": selection}))
    return specs


def train(name, method, kwargs, splits_fn):
    """Trains one model into <work_dir>/<name>/ unless it is already there."""
    directory = os.path.join(FLAGS.work_dir, name)
    ticket_path = os.path.join(directory, "ticket.keras")
    info_path = os.path.join(directory, "result.json")
    if os.path.exists(ticket_path) and os.path.exists(info_path):
        logging.info("%s: cached in %s", name, directory)
        with open(info_path, encoding="utf-8") as f:
            return json.load(f)
    splits = splits_fn()
    model = tf_unilth.models.build("lenet300_100", (28, 28, 1), 10, seed=FLAGS.seed)
    logging.info("%s: training (%s, %s)", name, method, kwargs)
    start = time.perf_counter()
    result = tf_unilth.find_ticket(model, method, splits.train, splits.validation,
                                   test_data=splits.test, verbose=0, **kwargs)
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    result.model.save(os.path.join(tmp, "ticket.keras"))
    info = {"name": name, "method": method, "args": kwargs, "final": result.final,
            "sparsity": result.sparsity, "total": result.total,
            "method_info": result.method_info,
            "ticket_sparsity": tf_unilth.ticket_sparsity(result.model),
            "train_seconds": time.perf_counter() - start}
    with open(os.path.join(tmp, "result.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=float)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)  # a killed run leaves only .tmp, retrained next time
    logging.info("%s: test accuracy %.4f, sparsity %.4f, %.0f s", name,
                 result.final["test_accuracy"], result.sparsity, info["train_seconds"])
    return info


def main(argv):
    del argv
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    cache = {}

    def splits_fn():
        if "splits" not in cache:
            cache["splits"] = tf_unilth.data.load("mnist", data_dir=FLAGS.data_dir, batch_size=60,
                                                  seed=FLAGS.seed, download=False)
        return cache["splits"]

    trained = {name: train(name, method, kwargs, splits_fn)
               for name, method, kwargs in model_specs()}
    if FLAGS.train_only:
        return
    raise NotImplementedError(trained)


if __name__ == "__main__":
    app.run(main)
