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
  with `sparse=True` (EXPERIMENTAL_SPARSITY), each float and dynamic int8; the
  unstructured tickets also float with `prefer="size"` ("float_size": block
  encodings re-encoded as CSR where smaller, see `export.smallest_encoding`).
  Each export is checked against the Keras model on the first 1,000 test images
  (`to_tflite`'s check; its result is recorded as "passed", not fatal).
* Accuracy: the .tflite file itself, run in the LiteRT interpreter on all
  10,000 MNIST test images (not the Keras model), with the op resolver the
  export reported (XNNPACK unless it failed or its outputs were wrong).
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

import numpy as np
from absl import app, flags, logging

import tf_unilth
from tf_unilth import export
from tf_unilth.export import timing  # latency measurement, benchmark-only

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data dir holding mnist (default: $TFDS_DATA_DIR).")
flags.DEFINE_string("work_dir", "/tmp/tf_unilth_tflite_export",
                    "Cache of trained tickets and exported files (reused on rerun).")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "results", "tflite_export.json"),
                    "Result JSON; the plot is written next to it (.png).")
flags.DEFINE_boolean("train_only", False, "Only train (and cache) the models, then exit.")
flags.DEFINE_integer("latency_rounds", 100, "Round-robin rounds of latency measurement.")
flags.DEFINE_integer("latency_runs", 1000, "Invokes per file per round.")
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


def test_arrays(splits):
    """All test images and labels, preprocessed as in training."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in splits.test])
    return np.concatenate(xs), np.concatenate(ys)


def block_check(model, rows=4):
    """Are a ticket's zeros whole blocks of `rows` consecutive input rows per column?"""
    layers = {}
    for layer in model.layers:
        if not isinstance(layer, tf_unilth.keras.layers.Dense):
            continue
        k = layer.kernel.numpy()
        zeros = (k == 0).reshape(k.shape[0] // rows, rows, k.shape[1]).sum(axis=1)
        layers[layer.name] = {"blocks": int(zeros.size), "zero_blocks": int(np.sum(zeros == rows)),
                              "partial_blocks": int(np.sum((zeros > 0) & (zeros < rows))),
                              "sparsity": float(np.mean(k == 0))}
    partial = sum(v["partial_blocks"] for v in layers.values())
    return {"block": [rows, 1], "all_or_nothing": partial == 0, "partial_blocks": partial,
            "layers": layers}


def exports_of(name):
    """(label, sparse, quantize, prefer) of the files exported for one model."""
    if name == "dense":
        return [("float", False, None, "speed"), ("int8", False, "dynamic_int8", "speed")]
    size = [("float_size", True, None, "size")] if "unstructured" in name else []
    return [("float", True, None, "speed")] + size + [("int8", True, "dynamic_int8", "speed")]


def environment():
    import ai_edge_litert  # pylint: disable=import-outside-toplevel
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "tensorflow": tf_unilth.tf.__version__,
            "ai_edge_litert": metadata.version("ai-edge-litert"),
            "litert_module": ai_edge_litert.__name__}


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
    x_test, y_test = test_arrays(splits_fn())
    check = x_test[:1000]
    files, models, resolvers = {}, {}, {}
    for name, info in trained.items():
        model = export.load_ticket(os.path.join(FLAGS.work_dir, name, "ticket.keras"))
        entry = {"train": info, "block_check": block_check(model), "exports": {}}
        for label, sparse, quantize, prefer in exports_of(name):
            path = os.path.join(FLAGS.work_dir, name, f"{label}.tflite")
            report = export.to_tflite(model, path, sparse=sparse, quantize=quantize, sample=check,
                                      prefer=prefer, check=False)  # recorded ("passed")
            logits, resolver, _ = export.predict(path, x_test, batch_size=500,
                                                 resolver=report.resolver)
            record = report.to_dict()
            record["tflite_test_accuracy"] = float(np.mean(np.argmax(logits, -1) == y_test))
            record["accuracy_resolver"] = resolver
            entry["exports"][label] = record
            files[f"{name}/{label}"] = path
            resolvers[f"{name}/{label}"] = report.resolver
            logging.info("%s/%s: %d bytes, tflite test accuracy %.4f, %s, check %s", name,
                         label, report.size_bytes, record["tflite_test_accuracy"], resolver,
                         "passed" if report.passed else "FAILED")
        models[name] = entry

    logging.info("latency: %d files, %d rounds x %d invokes", len(files), FLAGS.latency_rounds,
                 FLAGS.latency_runs)
    load_before = os.getloadavg()
    measured = timing.latency(files, x_test[:1], rounds=FLAGS.latency_rounds,
                              runs=FLAGS.latency_runs, resolvers=resolvers)
    load = {"before": load_before, "after": os.getloadavg()}
    dense_float = models["dense"]["exports"]["float"]["size_bytes"]
    dense_int8 = models["dense"]["exports"]["int8"]["size_bytes"]
    dense_acc = models["dense"]["exports"]["float"]["tflite_test_accuracy"]
    for name, entry in models.items():
        for label, record in entry["exports"].items():
            key = f"{name}/{label}"
            record["latency_us"] = measured[key]["median_us"]
            record["latency_resolver"] = measured[key]["resolver"]
            record["size_vs_dense_float"] = record["size_bytes"] / dense_float
            record["size_vs_dense_same_precision"] = record["size_bytes"] / (
                dense_int8 if label == "int8" else dense_float)
            record["speedup_vs_dense_float"] = timing.speedup(measured, "dense/float", key)
            record["speedup_vs_dense_same_precision"] = timing.speedup(
                measured, "dense/int8" if label == "int8" else "dense/float", key)
            record["accuracy_vs_dense_float_points"] = 100 * (
                record["tflite_test_accuracy"] - dense_acc)

    unstructured = models["unilth_unstructured_0.965"]["exports"]
    block = models["unilth_block_0.9"]["exports"]["float"]
    targets = {
        "unstructured_0.965_size": {
            "target": ".tflite <= 0.08x the dense float file (value: float, prefer='size')",
            "value": unstructured["float_size"]["size_vs_dense_float"],
            "met": unstructured["float_size"]["size_vs_dense_float"] <= 0.08,
            "others": {label: unstructured[label]["size_vs_dense_float"]
                       for label in ("float", "int8")}},
        "block_0.9_speedup": {
            "target": ">= 2x faster per example than the dense float .tflite",
            "value": block["speedup_vs_dense_float"],
            "met": block["speedup_vs_dense_float"] >= 2.0},
        "block_0.9_accuracy": {
            "target": "tflite test accuracy within 0.5 points of the dense .tflite",
            "value": block["accuracy_vs_dense_float_points"],
            "met": block["accuracy_vs_dense_float_points"] >= -0.5},
    }
    out = {"protocol": __doc__, "environment": environment(),
           "flags": {k: FLAGS[k].value for k in ("work_dir", "latency_rounds", "latency_runs",
                                                 "seed")},
           "load_average_1_5_15min": load, "latency": measured, "models": models,
           "targets": targets}
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, default=float)
    plot(models, os.path.splitext(FLAGS.output)[0] + ".png")
    for name, entry in models.items():
        for label, r in entry["exports"].items():
            print(f"{name:26s} {label:10s} {r['size_bytes']:>9,d} B  x{r['size_vs_dense_float']:.3f}"
                  f"  {r['latency_us']:7.2f} us  speed-up {r['speedup_vs_dense_float']:.2f}x"
                  f" (same precision {r['speedup_vs_dense_same_precision']:.2f}x)"
                  f"  acc {100 * r['tflite_test_accuracy']:.2f}%  {r['latency_resolver']}"
                  f"  check {'passed' if r['passed'] else 'FAILED'}")
    for key, t in targets.items():
        print(f"target {key}: {t['target']}: {t['value']:.3f} -> {'met' if t['met'] else 'MISSED'}")


def plot(models, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    names = list(models)
    labels = [n.replace("unilth_", "").replace("_", "\n", 1) for n in names]
    xs = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    panels = [("size_vs_dense_float", "file size / dense float file", None),
              ("latency_us", "latency per example (us, batch 1, 1 thread, median)", None),
              ("tflite_test_accuracy", "test accuracy of the .tflite (10,000 images)", None)]
    for ax, (key, title, _) in zip(axes, panels):
        variants = (("float", "float", "tab:blue"),
                    ("float_size", "float, prefer='size'", "tab:green"),
                    ("int8", "dynamic int8", "tab:orange"))
        for i, (label, legend, color) in enumerate(variants):
            have = [j for j, n in enumerate(names) if label in models[n]["exports"]]
            values = [models[names[j]]["exports"][label][key] for j in have]
            if key == "tflite_test_accuracy":
                values = [100 * v for v in values]
            bars = ax.bar(xs[have] + (i - 1) * 0.27, values, 0.27, label=legend, color=color)
            ax.bar_label(bars, fmt="%.3f" if key == "size_vs_dense_float" else "%.1f",
                         fontsize=6, rotation=90, padding=2)
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[2].set_ylim(80, 100)
    axes[1].set_ylim(0, 26)
    axes[0].set_ylim(0, 1.15)
    axes[0].axhline(0.08, color="gray", ls="--", lw=0.8)
    axes[0].legend()
    fig.suptitle("LeNet-300-100 UniLTH tickets exported with tf_unilth.to_tflite "
                 "(EXPERIMENTAL_SPARSITY); dense = plain conversion")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    app.run(main)
