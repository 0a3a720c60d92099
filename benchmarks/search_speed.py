"""End-to-end search speed: plain Keras, tfmot, tf_unilth before and after the fast path.

Part 1, the speed comparison (on by default; `--nospeed` skips it). The same
workload for every variant: `--epochs` E (default 4) of training on the MNIST
training split (55,000 train / 5,000 validation held out by
`tf_unilth.data.load`, seed 0), batch B, with validation at the end of every
epoch; models `tf_unilth.models.build(M, (28, 28, 1), 10, seed=0)`, Adam at the
command line's default rate (6e-4), `SparseCategoricalCrossentropy(
from_logits=True)`, accuracy metric. Variants (`--variants`):

  dense             (a)  plain `compile` / `fit(validation_data=...)`, Keras'
                         defaults (one step per call, no XLA);
  dense_fast        (a') the same with the settings tf_unilth's `auto` picks
                         for that model on one device
                         (`steps_per_execution=min(100, steps per epoch)`,
                         `jit_compile=True`, but False for a model with
                         convolutions when no GPU is visible), for the
                         overhead ratio;
  tfmot             (b)  `tfmot.sparsity.keras.prune_low_magnitude(model,
                         ConstantSparsity(0.9, begin_step=0))` (tfmot's default
                         frequency, 100) + tfmot's `UpdatePruningStep()`, plain
                         `compile` / `fit`: what a user would write;
  tf_unilth_before  (c)  the real command line, `examples/find_ticket.py
                         --method=random --target_sparsity=0.9 --epochs=E
                         --batch_size=B --model=M --output_dir=<tmp>
                         --steps_per_execution=1 --jit_compile=false` (the
                         library before the fast path: a random 90% ticket
                         trained with its mask fixed for E epochs, through the
                         whole search machinery with its per-epoch snapshots);
  tf_unilth         (d)  the same command with the new defaults
                         (`--steps_per_execution=auto --jit_compile=auto`).

Every measurement is one child process (`sys.executable`, the checkout on
PYTHONPATH; (a)-(b) run this file with `--child`). Order: for each repeat, for
each (model, batch size), every variant once; the variant order is rotated by
one each repeat. What each child reports:

* `steady`: the median wall time of one epoch among epochs 2..E, each
  measured from the end of the previous epoch to the end of this one
  (training + validation + whatever runs between epochs, i.e. the search's
  per-epoch snapshot for (c)/(d)); steps/s = steps per epoch / that median.
  (a)/(b): `time.perf_counter()` in a callback placed last; (c)/(d): the wall
  times of the per-epoch `epoch/loss` scalars the search writes to
  TensorBoard (`<output_dir>/logs`). It leaves out the first epoch,
  which holds the tracing (and XLA compilation), and, being a median, a
  one-time cost at one epoch boundary: it is the throughput of a long search,
  and the measure the targets use (with E = 1 there is none, and the targets
  fall back to `all_epochs`). Why E = 4 by default (the issue's sketch said 2):
  in the smoke runs, a search's first epoch boundary (inside Keras'
  `enumerate_epochs`, where the epoch-ordered training iterator is replaced)
  cost 1-2 s once per `fit` in most runs, against 2 ms for plain Keras; with
  E = 2 that one-time cost would be the only steady sample. All epoch
  intervals are kept in the JSON, so it stays visible.
* `all_epochs`: the sum over all epochs of epoch begin -> end (training +
  validation, first epoch's tracing included; between-epoch work excluded).
  (a)/(b): the same callback; (c)/(d): `total.wall_seconds` of the run's
  results.json, which sums exactly these.
* `child_wall`: the child's whole wall time, start-up (imports, data,
  building) and, for (c)/(d), the test evaluation and saving the ticket
  included, measured by this process.
* steps/s = training steps / seconds; the child's CPU seconds (`os.wait4`),
  the load average before and after, and the foreign CPU load (cores used by
  other processes while the child ran: /proc/stat busy time minus ours and the
  child's) are kept with every measurement.

Per variant, model and batch size: median, min and max of steps/s over the
repeats; ratios as ratios of medians, with the median of the per-repeat
(paired) ratios next to them. Targets (computed from the measurements, with
pass/fail, in the JSON): (d)/(c) >= 2.5x in steps/s on LeNet-300-100 at batch
60 and >= 1.5x on Conv-2 at batch 60; (d) >= 2x the steps/s of (b) in every
measured cell; (d)'s time over (a') at most 1.15x in every measured cell.

Part 2, `--lth_protocol` (off by default; about 10 minutes on a quiet 2-core
CPU): LTH under Frankle et al. 2020's LeNet protocol, timed end to end with the
new defaults: `examples/find_ticket.py --method=lth --model=lenet300_100
--learning_rate=1.2e-3 --batch_size=60 --prune_rate=0.2 --target_sparsity=0.965
--rewind_step=0 --validation_size=0 --epochs=24 --rounds=15`. Rounds of 24,000
iterations: `--epochs` counts epochs per round (a command line whose LTH has
`--epochs_per_round`, where `--epochs` is the whole budget, gets
`--epochs_per_round=24` instead: read from its --helpfull), and with the paper's training
set (all 60,000 MNIST training images, `--validation_size=0`) an epoch is
exactly 1,000 iterations, so 24 epochs are exactly 24K (with the 5,000
validation hold-out an epoch is 917 iterations and 24K is 26.2 epochs). Levels:
run until --target_sparsity=0.965, the method stops at the first round at or
past it, which is the 17th level (round 16, 2.87% density; round 15 is 3.58%,
sparsity 0.9642 < 0.965, with the output layer pruned at half rate);
the issue's "to 3.5% density: 16 levels" are rounds 0-15, so `--rounds=15`
(`--lth_rounds`) fixes 16 levels. Per level the JSON holds the density, test
accuracy, steps and wall seconds (from results.json's rounds), the
end-to-end time per level (from the TensorBoard epoch events), and the
comparison with OpenLTH's ~100 s per 24K-step level (~4.2 ms a step with its
per-epoch test evaluation) on one H200 GPU, the issue's reference.

Outputs: `<output_dir>/search_speed.json` (written after every measurement,
atomically) and `search_speed.png` (steps/s per variant, model and batch size,
whiskers min-max, ratios marked). A run that does only one part keeps the other
part's section of an existing JSON (each section has its own date, commit and
command).

    python benchmarks/search_speed.py --data_dir=$TFDS_DATA_DIR          # part 1
    python benchmarks/search_speed.py --data_dir=$TFDS_DATA_DIR --nospeed --lth_protocol

Part 1 takes about 2 hours on a quiet 2-core CPU (an estimate from smoke runs:
about 20 s per LeNet-300-100 child, 2-4 minutes per Conv-2 child, 60 children).
Smoke runs: `--repeats=1 --models=lenet300_100 --batch_sizes=60 --epochs=2
--train_limit=6000 --test_limit=1000 --output_dir=/tmp/x`, and for part 2
`--nospeed --lth_protocol --lth_train_limit=3000 --lth_round_iterations=100
--test_limit=1000 --output_dir=/tmp/x`; the JSON marks them `smoke`.
"""

import datetime
import fcntl
import glob
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provenance  # noqa: E402  (benchmarks/provenance.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "examples", "find_ticket.py")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the program's flags (only when run as a program, so the tests can
    import this file next to other benchmarks that define flags of the same names)."""
    if "lth_protocol" in FLAGS:
        return
    flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"),
                        "TFDS data directory holding mnist (default: $TFDS_DATA_DIR).")
    flags.DEFINE_boolean("speed", True, "Run the speed comparison (part 1).")
    flags.DEFINE_integer("repeats", 3, "Measurements per variant, model and batch size.")
    flags.DEFINE_integer("epochs", 4, "Training epochs of every measurement (>= 2 for the "
                         "steady measure, the median of epochs 2..E; see the module doc).")
    flags.DEFINE_list("models", ["lenet300_100", "conv2"], "Models (tf_unilth.models names).")
    flags.DEFINE_list("batch_sizes", ["60", "128"], "Batch sizes.")
    flags.DEFINE_list("variants", ["dense", "dense_fast", "tfmot", "tf_unilth_before",
                                   "tf_unilth"], "Variants (see the module doc).")
    flags.DEFINE_integer("train_limit", None, "Smoke runs only: train on the first N training "
                         "examples (recorded in the JSON).")
    flags.DEFINE_integer("test_limit", None, "Smoke runs only: --test_limit of the command "
                         "line's runs (its final test evaluation, outside the timed epochs).")
    flags.DEFINE_boolean("lth_protocol", False, "Run the LTH paper-protocol workload (part 2).")
    flags.DEFINE_integer("lth_round_iterations", 24000, "Training iterations per LTH round "
                         "(rounded to whole epochs; the JSON says by how much).")
    flags.DEFINE_integer("lth_validation_size", 0, "--validation_size of the LTH run (0: all "
                         "60,000 training images, 1,000 iterations an epoch at batch 60).")
    flags.DEFINE_integer("lth_rounds", 15, "--rounds of the LTH run: pruning rounds after the "
                         "dense round 0 (15: 16 levels, to 3.58% density); -1: until "
                         "--target_sparsity=0.965 (17 levels).")
    flags.DEFINE_integer("lth_train_limit", None,
                         "Smoke runs only: --train_limit of the LTH run.")
    flags.DEFINE_string("output_dir", os.path.join(ROOT, "benchmarks", "results"),
                        "Where search_speed.json and search_speed.png go.")
    flags.DEFINE_string("name", "search_speed", "Base name of the output files.")
    flags.DEFINE_string("work_dir", None, "Children's run directories and logs (default: a new "
                        "temporary directory, removed at the end unless --keep_runs).")
    flags.DEFINE_boolean("keep_runs", False, "Keep the children's run directories.")
    flags.DEFINE_string("lock", None, "A file to flock while each child runs, so that other "
                        "benchmarks taking the same lock wait (their CPU is still measured as "
                        "foreign_cores).")
    flags.DEFINE_string("child", None, "Internal: run one Keras measurement (a JSON spec).")
    flags.DEFINE_string("child_output", None, "Internal: where the child writes its JSON.")


DATASET = "mnist"
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
MNIST_TRAIN = 60000
VALIDATION_SIZE = 5000  # the command line's default, used by every speed variant
LEARNING_RATE = 6e-4    # the command line's default
SEED = 0
TARGET_SPARSITY = 0.9

VARIANTS = {
    "dense": {"label": "(a) dense, plain fit", "kind": "keras",
              "description": "tf_keras model, compile(Adam) + fit(validation_data=...), "
                             "Keras defaults (steps_per_execution=1, no XLA)"},
    "dense_fast": {"label": "(a') dense, fast settings", "kind": "keras",
                   "description": "as (a) with tf_unilth's auto settings for the model: "
                                  "compile(steps_per_execution=min(100, steps per epoch), "
                                  "jit_compile=True, or False for a model with convolutions "
                                  "when no GPU is visible)"},
    "tfmot": {"label": "(b) tfmot prune_low_magnitude", "kind": "keras",
              "description": "tfmot.sparsity.keras.prune_low_magnitude(ConstantSparsity(0.9, "
                             "begin_step=0)) + tfmot UpdatePruningStep(), plain compile/fit"},
    "tf_unilth_before": {"label": "(c) tf_unilth before", "kind": "cli",
                         "cli_flags": ["--steps_per_execution=1", "--jit_compile=false"],
                         "description": "examples/find_ticket.py --method=random "
                                        "--target_sparsity=0.9 --steps_per_execution=1 "
                                        "--jit_compile=false"},
    "tf_unilth": {"label": "(d) tf_unilth defaults", "kind": "cli", "cli_flags": [],
                  "description": "examples/find_ticket.py --method=random "
                                 "--target_sparsity=0.9 (steps_per_execution=auto, "
                                 "jit_compile=auto)"},
}

# Ratio "X/Y" is steps/s of X over steps/s of Y (for dense_fast/tf_unilth that is
# (d)'s time over (a')'s: the overhead of the search machinery).
RATIOS = (("tf_unilth", "tf_unilth_before"), ("tf_unilth", "tfmot"),
          ("dense_fast", "tf_unilth"), ("tf_unilth_before", "tfmot"), ("tfmot", "dense"),
          ("tf_unilth", "dense"), ("dense_fast", "dense"))

TARGETS = (
    {"name": "fast_path_lenet", "ratio": "tf_unilth/tf_unilth_before", "min": 2.5,
     "models": ["lenet300_100"], "batch_sizes": [60],
     "text": "(d) over (c) >= 2.5x in steps/s on LeNet-300-100 at batch 60"},
    {"name": "fast_path_conv2", "ratio": "tf_unilth/tf_unilth_before", "min": 1.5,
     "models": ["conv2"], "batch_sizes": [60],
     "text": "(d) over (c) >= 1.5x in steps/s on Conv-2 at batch 60"},
    {"name": "faster_than_tfmot", "ratio": "tf_unilth/tfmot", "min": 2.0,
     "models": None, "batch_sizes": None,
     "text": "(d) >= 2x the steps/s of (b), in every measured model and batch size"},
    {"name": "overhead_vs_dense_fast", "ratio": "dense_fast/tf_unilth", "max": 1.15,
     "models": None, "batch_sizes": None,
     "text": "(d)'s time at most 1.15x that of (a') (dense, with the settings auto picks "
             "for the model), in every measured model and batch size"},
)

OPENLTH = {"seconds_per_level": 100.0, "steps_per_level": 24000, "ms_per_step": 4.2,
           "hardware": "one NVIDIA H200 GPU", "framework": "OpenLTH (PyTorch)",
           "includes": "its per-epoch test evaluation",
           "source": "the issue \"Fast path\" (not measured here)"}

LENET_PRUNABLE = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}


# --------------------------------------------------------------------------
# Pure parts (tested in tests/test_search_speed.py)

def steps_per_epoch(train_examples, batch_size):
    """Batches per epoch (the last one partial), as tf_unilth.data makes them."""
    return -(-train_examples // batch_size)


def lth_round_epochs(iterations, train_examples, batch_size):
    """Whole epochs per LTH round nearest to `iterations`, and what they give."""
    spe = steps_per_epoch(train_examples, batch_size)
    epochs = max(1, round(iterations / spe))
    return {"requested_iterations": iterations, "train_examples": train_examples,
            "steps_per_epoch": spe, "epochs": epochs, "iterations": epochs * spe,
            "exact": epochs * spe == iterations,
            "relative_difference": epochs * spe / iterations - 1.0}


def lth_levels(layer_sizes, prune_rate, target_sparsity, output_layer="output",
               output_rate_scale=0.5, max_rounds=60):
    """Overall densities of the levels LTH trains until `target_sparsity` (level 0
    is the dense network): each round keeps (1 - rate) of every layer's
    surviving weights, the output layer at `output_rate_scale` of the rate;
    the method stops at the first level at or past the target. Predicted (per
    layer counts are rounded in the library); the run's rounds are the record."""
    total = sum(layer_sizes.values())
    alive = dict(layer_sizes)
    densities = [1.0]
    for _ in range(max_rounds):
        if 1.0 - densities[-1] >= target_sparsity - 1e-9:
            break
        for name in alive:
            rate = prune_rate * (output_rate_scale if name == output_layer else 1.0)
            alive[name] = alive[name] * (1.0 - rate)
        densities.append(sum(alive.values()) / total)
    return densities


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values), "n": len(values), "values": values}


def _rate(steps, seconds):
    return steps / seconds if steps and seconds and seconds > 0 else None


def keras_measurement(child):
    """The measures of a Keras child's report (its epoch timestamps)."""
    epochs = child["epochs"]
    spe = child["steps_per_epoch"]
    begin_to_end = [e["end"] - e["begin"] for e in epochs]
    steady = [epochs[i]["end"] - epochs[i - 1]["end"] for i in range(1, len(epochs))]
    return {
        "train_steps": spe * len(epochs),
        "steps_per_epoch": spe,
        "all_epochs_seconds": sum(begin_to_end),
        "steady_seconds": statistics.median(steady) if steady else None,
        "steady_steps": spe if steady else None,
        "epoch_seconds": begin_to_end,
        "steady_epoch_seconds": steady,
        "between_epoch_seconds": [steady[i - 1] - begin_to_end[i]
                                  for i in range(1, len(epochs))],
        "fit_seconds": child["fit_seconds"],
        "startup_seconds": child.get("startup_seconds"),
    }


def cli_measurement(results, epoch_end_times):
    """The measures of a command-line run: its results.json and the wall times
    (seconds) of its epochs' ends, in order (TensorBoard events)."""
    total = results["total"]
    epochs, steps = int(total["epochs"]), int(total["train_steps"])
    spe = steps // epochs if epochs else 0
    ends = sorted(epoch_end_times or [])
    steady = [b - a for a, b in zip(ends, ends[1:])] if len(ends) == epochs else []
    return {
        "train_steps": steps,
        "steps_per_epoch": spe,
        "all_epochs_seconds": float(total["wall_seconds"]),
        "steady_seconds": statistics.median(steady) if steady else None,
        "steady_steps": spe if steady else None,
        "steady_epoch_seconds": steady,
        "final_sparsity": results.get("final", {}).get("sparsity"),
        "epoch_events_found": len(ends),
    }


def add_rates(m):
    """steps/s of every measure of one measurement (in place; returns it)."""
    m["steps_per_second"] = _rate(m.get("steady_steps"), m.get("steady_seconds"))
    m["all_epochs_steps_per_second"] = _rate(m.get("train_steps"), m.get("all_epochs_seconds"))
    m["child_wall_steps_per_second"] = _rate(m.get("train_steps"),
                                             m.get("child_wall_seconds"))
    return m


MEASURES = {"steady": "steps_per_second", "all_epochs": "all_epochs_steps_per_second",
            "child_wall": "child_wall_steps_per_second"}


def summarize(measurements):
    """{model: {batch: {variant: {measure: stats of steps/s, ...}}}} over the
    successful measurements (each has model, batch_size, variant, repeat)."""
    out = {}
    for m in measurements:
        if m.get("error"):
            continue
        cell = out.setdefault(m["model"], {}).setdefault(str(m["batch_size"]), {})
        cell.setdefault(m["variant"], []).append(m)
    summary = {}
    for model, batches in out.items():
        for batch, variants in batches.items():
            for variant, ms in variants.items():
                ms = sorted(ms, key=lambda m: m["repeat"])
                row = {measure: stats([m.get(key) for m in ms])
                       for measure, key in MEASURES.items()}
                row["repeats"] = [m["repeat"] for m in ms]
                row["steady_seconds"] = stats([m.get("steady_seconds") for m in ms])
                row["all_epochs_seconds"] = stats([m.get("all_epochs_seconds") for m in ms])
                row["child_wall_seconds"] = stats([m.get("child_wall_seconds") for m in ms])
                row["foreign_cores"] = stats([m.get("foreign_cores") for m in ms])
                summary.setdefault(model, {}).setdefault(batch, {})[variant] = row
    return summary


def _by_repeat(measurements, model, batch, variant, key):
    return {m["repeat"]: m.get(key) for m in measurements
            if not m.get("error") and m["model"] == model and str(m["batch_size"]) == batch
            and m["variant"] == variant and m.get(key) is not None}


def ratios(summary, measurements, measure="steady"):
    """Per model and batch: for each pair of RATIOS measured, the ratio of the
    medians of steps/s, and the median of the per-repeat (paired) ratios."""
    key = MEASURES[measure]
    out = {}
    for model, batches in summary.items():
        for batch, variants in batches.items():
            cell = {}
            for num, den in RATIOS:
                a, b = variants.get(num, {}).get(measure), variants.get(den, {}).get(measure)
                if not a or not b:
                    continue
                x = _by_repeat(measurements, model, batch, num, key)
                y = _by_repeat(measurements, model, batch, den, key)
                paired = [x[r] / y[r] for r in sorted(set(x) & set(y))]
                cell[f"{num}/{den}"] = {
                    "ratio_of_medians": a["median"] / b["median"],
                    "median_of_paired_ratios": statistics.median(paired) if paired else None,
                    "pairs": len(paired)}
            if cell:
                out.setdefault(model, {})[batch] = cell
    return out


def targets(ratio_table, measure):
    """Every target with its cells (value, pass/fail) and whether it is met
    (all its cells pass); None when none of its cells was measured."""
    out = []
    for t in TARGETS:
        cells = []
        for model, batches in sorted(ratio_table.items()):
            if t["models"] is not None and model not in t["models"]:
                continue
            for batch, cell in sorted(batches.items(), key=lambda kv: int(kv[0])):
                if t["batch_sizes"] is not None and int(batch) not in t["batch_sizes"]:
                    continue
                if t["ratio"] not in cell:
                    continue
                value = cell[t["ratio"]]["ratio_of_medians"]
                passed = value >= t["min"] if "min" in t else value <= t["max"]
                cells.append({"model": model, "batch_size": int(batch), "value": value,
                              "paired": cell[t["ratio"]]["median_of_paired_ratios"],
                              "passed": passed})
        out.append({"name": t["name"], "text": t["text"], "ratio": t["ratio"],
                    "threshold": t.get("min", t.get("max")),
                    "comparison": ">=" if "min" in t else "<=", "measure": measure,
                    "cells": cells,
                    "passed": all(c["passed"] for c in cells) if cells else None})
    return out


def speed_report(measurements, epochs):
    """The analysed part of the speed section from its measurements."""
    summary = summarize(measurements)
    primary = "steady" if epochs >= 2 else "all_epochs"
    table = {m: ratios(summary, measurements, m) for m in MEASURES}
    main = targets(table[primary], primary)
    met = [t["passed"] for t in main if t["passed"] is not None]
    return {
        "summary": summary,
        "ratios": table,
        "targets_measure": primary,
        "targets": main,
        "targets_all_epochs": targets(table["all_epochs"], "all_epochs")
        if primary != "all_epochs" else None,
        # False when a target fails, True when every target is met, else None
        # (some target had none of its cells measured).
        "all_targets_met": False if not all(met) else (True if len(met) == len(main)
                                                       else None),
    }


def lth_report(results, epoch_end_times=None, child_start_time=None, epochs_per_round=None):
    """Per level: density, accuracies, this level's steps and training seconds
    (results.json's rounds hold totals since the random init), and, from the
    epochs' end times, its end-to-end seconds (the time from the previous
    level's last epoch end, or from the child's start, to its last epoch end);
    and the comparison with OpenLTH's reference."""
    rounds = sorted(results["rounds"], key=lambda r: r["round"])
    ends = sorted(epoch_end_times or [])
    level_ends = None
    if epochs_per_round and len(ends) == epochs_per_round * len(rounds):
        level_ends = [ends[(i + 1) * epochs_per_round - 1] for i in range(len(rounds))]
    levels, prev_steps, prev_seconds = [], 0, 0.0
    for i, r in enumerate(rounds):
        steps = int(r["train_steps"]) - prev_steps
        seconds = float(r["wall_seconds"]) - prev_seconds
        e2e = None
        if level_ends is not None:
            start = level_ends[i - 1] if i else child_start_time
            e2e = level_ends[i] - start if start is not None else None
        levels.append({"level": int(r["round"]), "density": 1.0 - float(r["sparsity"]),
                       "sparsity": float(r["sparsity"]),
                       "test_accuracy": r.get("test_accuracy"),
                       "val_accuracy": r.get("val_accuracy"),
                       "train_steps": steps, "train_seconds": seconds,
                       "ms_per_step": 1e3 * seconds / steps if steps else None,
                       "end_to_end_seconds": e2e,
                       "cumulative_train_steps": int(r["train_steps"]),
                       "cumulative_train_seconds": float(r["wall_seconds"])})
        prev_steps, prev_seconds = int(r["train_steps"]), float(r["wall_seconds"])
    train_seconds = [lv["train_seconds"] for lv in levels]
    e2e = [lv["end_to_end_seconds"] for lv in levels[1:] if lv["end_to_end_seconds"]]
    total_steps = sum(lv["train_steps"] for lv in levels)
    per_level = {
        "median_train_seconds": statistics.median(train_seconds) if train_seconds else None,
        "mean_train_seconds": statistics.mean(train_seconds) if train_seconds else None,
        "median_end_to_end_seconds_levels_1_on": statistics.median(e2e) if e2e else None,
        "ms_per_step_training": 1e3 * sum(train_seconds) / total_steps if total_steps else None,
    }
    ref = per_level["median_end_to_end_seconds_levels_1_on"] or per_level["median_train_seconds"]
    steps_level = statistics.median([lv["train_steps"] for lv in levels]) if levels else None
    comparison = None
    if ref:
        scaled = ref * OPENLTH["steps_per_level"] / steps_level
        comparison = {
            "ours_seconds_per_level": ref,
            "ours_measure": "median end-to-end seconds of levels 1.." if
            per_level["median_end_to_end_seconds_levels_1_on"] else
            "median training seconds per level",
            "ours_seconds_per_24k_steps": scaled,
            "openlth_seconds_per_level": OPENLTH["seconds_per_level"],
            "openlth_over_ours": OPENLTH["seconds_per_level"] / scaled,
        }
    return {"levels": levels, "n_levels": len(levels),
            "final_density": levels[-1]["density"] if levels else None,
            "total_train_steps": total_steps, "total_train_seconds": sum(train_seconds),
            "per_level": per_level, "openlth_reference": OPENLTH, "comparison": comparison}


# --------------------------------------------------------------------------
# Machine, processes, files

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_cpu_seconds():
    """Machine busy CPU seconds (steal included) from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def _loadavg():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _utc():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info():
    info = {"cpu_count": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
            "tf_keras": _version("tf_keras"),
            "tfmot": _version("tensorflow-model-optimization")}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        pass
    return info


def child_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONPATH=os.pathsep.join(p for p in [ROOT, os.environ.get("PYTHONPATH")] if p))
    if FLAGS.data_dir:
        env["TFDS_DATA_DIR"] = FLAGS.data_dir
    return env


def run_child(cmd, log_path):
    """Runs one child process (holding --lock, if given); its wall and CPU
    seconds, exit code and the load."""
    if not FLAGS.lock:
        return _run_child(cmd, log_path)
    waited = time.perf_counter()
    with open(FLAGS.lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = _run_child(cmd, log_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    record["lock_wait_seconds"] = time.perf_counter() - waited - record["child_wall_seconds"]
    return record


def _run_child(cmd, log_path):
    load_before, busy_before = _loadavg(), _busy_cpu_seconds()
    own = os.times()
    start_wall = time.time()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy_after, own_after = _busy_cpu_seconds(), os.times()
    child_cpu = usage.ru_utime + usage.ru_stime
    foreign = None
    if busy_before is not None and busy_after is not None and wall > 0:
        mine = (own_after.user + own_after.system) - (own.user + own.system)
        foreign = max(0.0, (busy_after - busy_before - child_cpu - mine) / wall)
    return {"returncode": proc.returncode, "child_wall_seconds": wall,
            "child_cpu_seconds": child_cpu, "child_start_time": start_wall,
            "foreign_cores": foreign, "loadavg_before": load_before,
            "loadavg_after": _loadavg()}


def _log_tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def _execution_line(path):
    try:
        with open(path, errors="replace") as f:
            return next((line.strip() for line in f if line.startswith("Execution:")), None)
    except OSError:
        return None


def _tfrecords(path):
    """The records of a TFRecord file (length, crc, data, crc; crcs not checked)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            if len(data) < length:
                return
            yield data


def epoch_end_times(log_dir, tag="epoch/loss"):
    """Wall times (time.time() seconds) of the `tag` events in log_dir (the
    search's TensorBoard scalars, one per trained epoch), sorted; None when
    they cannot be read."""
    try:
        from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    times = []
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for record in _tfrecords(path):
            event = event_pb2.Event.FromString(record)
            if any(v.tag == tag for v in event.summary.value):
                times.append(event.wall_time)
    return sorted(times)


def write_json(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# One measurement

def _cli_command(variant, model, batch_size, epochs, out):
    cmd = [sys.executable, CLI, "--method=random", f"--target_sparsity={TARGET_SPARSITY}",
           f"--epochs={epochs}", f"--batch_size={batch_size}", f"--model={model}",
           f"--output_dir={out}", f"--seed={SEED}"] + VARIANTS[variant]["cli_flags"]
    if FLAGS.data_dir:
        cmd.append(f"--data_dir={FLAGS.data_dir}")
    if FLAGS.train_limit:
        cmd.append(f"--train_limit={FLAGS.train_limit}")
    if FLAGS.test_limit:
        cmd.append(f"--test_limit={FLAGS.test_limit}")
    return cmd


def describe(record):
    """One line about a measurement, for the log."""
    if record.get("error"):
        return f"ERROR {record['error']}"
    parts = []
    for key, text in (("steps_per_second", "steady {:.1f} steps/s"),
                      ("all_epochs_steps_per_second", "all epochs {:.1f} steps/s"),
                      ("child_wall_seconds", "child {:.1f} s"),
                      ("foreign_cores", "foreign load {:.2f} cores")):
        if record.get(key) is not None:
            parts.append(text.format(record[key]))
    if record.get("execution"):
        parts.append(record["execution"])
    return ", ".join(parts)


def measure(variant, model, batch_size, repeat, epochs, work_dir, log=print):
    """One child process; the measurement record (never raises for a failed child)."""
    tag = f"{variant}_{model}_b{batch_size}_r{repeat}"
    out = os.path.join(work_dir, tag)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    os.makedirs(out)
    log_path = os.path.join(out, "child.log")
    record = {"variant": variant, "model": model, "batch_size": batch_size, "repeat": repeat,
              "epochs": epochs, "started_utc": _utc()}
    if VARIANTS[variant]["kind"] == "keras":
        child_json = os.path.join(out, "child.json")
        spec = {"variant": variant, "model": model, "batch_size": batch_size, "epochs": epochs,
                "train_limit": FLAGS.train_limit, "data_dir": FLAGS.data_dir,
                "launched_at": time.time()}
        cmd = [sys.executable, os.path.abspath(__file__), f"--child={json.dumps(spec)}",
               f"--child_output={child_json}"]
    else:
        cmd = _cli_command(variant, model, batch_size, epochs, os.path.join(out, "run"))
    record["command"] = [os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
                         for c in cmd[1:]]
    proc = run_child(cmd, log_path)
    record.update(proc)
    try:
        if proc["returncode"] != 0:
            raise RuntimeError(f"exit code {proc['returncode']}")
        if VARIANTS[variant]["kind"] == "keras":
            with open(child_json) as f:
                child = json.load(f)
            record.update(keras_measurement(child))
            record["child_info"] = child.get("info")
        else:
            with open(os.path.join(out, "run", "results.json")) as f:
                results = json.load(f)
            ends = epoch_end_times(os.path.join(out, "run", "logs"))
            record.update(cli_measurement(results, ends))
            record["execution"] = _execution_line(log_path)
        add_rates(record)
    except Exception as e:  # pylint: disable=broad-except  (recorded; the run goes on)
        record["error"] = f"{type(e).__name__}: {e}"
        record["log_tail"] = _log_tail(log_path)
    if not FLAGS.keep_runs and not record.get("error"):
        shutil.rmtree(out, ignore_errors=True)
    log(f"  {tag}: {describe(record)}", flush=True)
    return record


# --------------------------------------------------------------------------
# The Keras child: (a), (a'), (b)

def keras_child(spec, output):
    started = time.perf_counter()
    import tf_unilth  # pylint: disable=import-outside-toplevel
    from tf_unilth._compat import keras, tf, tfmot  # pylint: disable=import-outside-toplevel

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append({"begin": time.perf_counter()})

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[-1]["end"] = time.perf_counter()

    splits = tf_unilth.data.load(DATASET, data_dir=spec["data_dir"], download=False,
                                 batch_size=spec["batch_size"],
                                 validation_size=VALIDATION_SIZE, seed=SEED,
                                 train_limit=spec["train_limit"])
    model = tf_unilth.models.build(spec["model"], splits.info.input_shape,
                                   splits.info.num_classes, seed=SEED)
    callbacks = []
    if spec["variant"] == "tfmot":
        model = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(
                TARGET_SPARSITY, begin_step=0))
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    spe = splits.steps_per_epoch()
    compile_kwargs = {}
    if spec["variant"] == "dense_fast":  # what the library's `auto` resolves to for it
        from tf_unilth.engine.execution import Execution  # pylint: disable=import-outside-toplevel
        compile_kwargs = Execution.resolve(steps_per_epoch=spe).for_model(model).compile_kwargs()
    model.compile(keras.optimizers.Adam(LEARNING_RATE),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], **compile_kwargs)
    timer = EpochTimer()
    fit_start, fit_start_wall = time.perf_counter(), time.time()
    history = model.fit(splits.train, epochs=spec["epochs"],
                        validation_data=splits.validation, callbacks=callbacks + [timer],
                        verbose=2)
    fit_seconds = time.perf_counter() - fit_start
    info = {"compile": {k: v for k, v in compile_kwargs.items()},
            "num_train": splits.info.num_train, "num_validation": splits.info.num_validation,
            "final_val_accuracy": history.history.get("val_accuracy", [None])[-1],
            "tensorflow": tf.__version__}
    if spec["variant"] == "tfmot":
        zeros = total = 0
        for layer in model.layers:
            for _, mask, _ in getattr(layer, "pruning_vars", []):
                m = mask.numpy()
                zeros += int((m < 0.5).sum())
                total += m.size
        info["mask_sparsity"] = zeros / max(total, 1)
    with open(output, "w") as f:
        json.dump({"epochs": timer.epochs, "steps_per_epoch": spe, "fit_seconds": fit_seconds,
                   # launch (by the parent) to the start of fit: interpreter, imports,
                   # data, model; and the part of it after this function began
                   "startup_seconds": fit_start_wall - spec["launched_at"],
                   "setup_seconds": fit_start - started, "info": info}, f, indent=1)


# --------------------------------------------------------------------------
# The parent

def _output_path(ext):
    return os.path.join(FLAGS.output_dir, f"{FLAGS.name}.{ext}")


def _load_existing():
    path = _output_path("json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _section_meta():
    return {"command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "git": provenance.git_info(
                ("tf_unilth", "examples", "benchmarks/search_speed.py"),
                "uncommitted_changes_in_measured_code"),
            "started_utc": _utc(), "loadavg_at_start": _loadavg(),
            "finished_utc": None, "loadavg_at_end": None, "status": "running"}


SPEED_PROTOCOL = {
    "workload": "E epochs of training on the MNIST training split (55,000 train / 5,000 "
                "validation held out by tf_unilth.data.load, seed 0), batch B, validation "
                "at every epoch's end; Adam(6e-4), SparseCategoricalCrossentropy("
                "from_logits=True), accuracy; tf_unilth.models.build(model, (28, 28, 1), "
                "10, seed=0)",
    "variants": {k: v["description"] for k, v in VARIANTS.items()},
    "process": "one child process per measurement (sys.executable, the checkout on "
               "PYTHONPATH); Keras variants run this file with --child, tf_unilth variants "
               "run examples/find_ticket.py",
    "order": "for each repeat, for each (model, batch size), every variant once; the "
             "variant order rotated by one each repeat",
    "steady": "median over epochs 2..E of one epoch's wall time, from the end of the "
              "previous epoch to the end of this one (training, validation and the work "
              "between epochs: the search's per-epoch snapshot for (c)/(d)); steps/s = "
              "steps per epoch / that median. Keras variants: perf_counter in a callback "
              "placed last; command line: wall times of its TensorBoard epoch/loss events. "
              "Leaves out the first epoch (tracing, XLA compilation) and, as a median, a "
              "one-time cost at one epoch boundary (all intervals are in "
              "steady_epoch_seconds). The targets use it (with E = 1 they use all_epochs)",
    "all_epochs": "sum over all epochs of epoch begin -> end (training + validation, "
                  "first epoch's tracing included); command line: total.wall_seconds of "
                  "results.json (the same sum)",
    "child_wall": "the child's whole wall time (start-up, data loading, building, the "
                  "command line's test evaluation and saving included)",
    "summary": "median, min, max (spread = max - min) of steps/s over repeats per variant, "
               "model and batch size; ratios = ratio of medians, with the median of "
               "per-repeat (paired) ratios; X/Y = steps/s of X over steps/s of Y, so "
               "dense_fast/tf_unilth is (d)'s time over (a')'s",
    "load": "per measurement: load average before and after, the child's CPU seconds, "
            "and the foreign CPU load (cores used by other processes while the child ran: "
            "/proc/stat busy time, steal included, minus the child's and this process's "
            "CPU time, over the wall time)",
    "verbosity": "Keras variants fit(verbose=2), the command line's default --verbose=2 "
                 "(a line per epoch; no per-batch progress bar)",
}


def run_speed(report, work_dir, write):
    models = FLAGS.models
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    variants = list(FLAGS.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"unknown --variants {unknown}; known: {list(VARIANTS)}")
    section = report["speed"] = dict(_section_meta(), protocol=dict(
        SPEED_PROTOCOL, epochs=FLAGS.epochs, repeats=FLAGS.repeats, models=models,
        batch_sizes=batch_sizes, variants_measured=variants, train_limit=FLAGS.train_limit,
        test_limit=FLAGS.test_limit,
        smoke=bool(FLAGS.train_limit or FLAGS.test_limit)),
        measurements=[])
    for repeat in range(FLAGS.repeats):
        for model in models:
            for batch_size in batch_sizes:
                k = repeat % len(variants)
                for variant in variants[k:] + variants[:k]:
                    m = measure(variant, model, batch_size, repeat, FLAGS.epochs, work_dir)
                    section["measurements"].append(m)
                    section.update(speed_report(section["measurements"], FLAGS.epochs))
                    write(plot_now=True)
    section.update(status="finished", finished_utc=_utc(), loadavg_at_end=_loadavg())
    write(plot_now=True)
    print_speed(section)


def lth_round_flag():
    """The command line's flag for the epochs of one LTH round: `--epochs` (the
    library of the issue "Fast path") or `--epochs_per_round`, when its LTH has
    it (there `--epochs` is the whole search's budget). Read from --helpfull."""
    try:
        text = subprocess.run([sys.executable, CLI, "--helpfull"], capture_output=True,
                              text=True, env=child_env(), cwd=ROOT, timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    return "epochs_per_round" if "--epochs_per_round" in text else "epochs"


def run_lth(report, work_dir, write):
    train = FLAGS.lth_train_limit or (MNIST_TRAIN - FLAGS.lth_validation_size)
    plan = lth_round_epochs(FLAGS.lth_round_iterations, train, 60)
    rounds = FLAGS.lth_rounds
    out = os.path.join(work_dir, "lth_protocol")
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    os.makedirs(out)
    round_flag = lth_round_flag()
    cmd = [sys.executable, CLI, "--method=lth", "--model=lenet300_100", "--optimizer=adam",
           "--learning_rate=1.2e-3", "--batch_size=60", "--prune_rate=0.2",
           "--target_sparsity=0.965", "--rewind_step=0", f"--seed={SEED}",
           f"--validation_size={FLAGS.lth_validation_size}",
           f"--{round_flag}={plan['epochs']}",
           f"--output_dir={os.path.join(out, 'run')}"]
    if rounds >= 0:
        cmd.append(f"--rounds={rounds}")
    if FLAGS.data_dir:
        cmd.append(f"--data_dir={FLAGS.data_dir}")
    if FLAGS.lth_train_limit:
        cmd.append(f"--train_limit={FLAGS.lth_train_limit}")
    if FLAGS.test_limit:
        cmd.append(f"--test_limit={FLAGS.test_limit}")
    predicted = lth_levels(LENET_PRUNABLE, 0.2, 0.965)
    section = report["lth_protocol"] = dict(_section_meta(), protocol={
        "paper": "Frankle et al. 2020, LeNet-300-100 on MNIST: Adam 1.2e-3, batch 60, 24K "
                 "iterations a round, 20% of the surviving weights a round (output layer "
                 "10%: the library's half rate), rewinding to iteration 0",
        "round_length": plan,
        "round_flag": f"--{round_flag} (the command line's epochs of one LTH round)",
        "round_length_choice": (
            f"--{round_flag} counts epochs per round; with --validation_size="
            f"{FLAGS.lth_validation_size} the run trains on {train:,} images, "
            f"{plan['steps_per_epoch']} iterations an epoch at batch 60, so "
            f"--{round_flag}={plan['epochs']} gives {plan['iterations']:,} iterations a round "
            + ("(exactly the requested " if plan["exact"] else "(nearest whole epochs to ")
            + f"{plan['requested_iterations']:,}; {100 * plan['relative_difference']:+.2f}%). "
            "With the default 5,000 validation images held out an epoch is 917 iterations "
            "and 24K is 26.2 epochs (26 epochs: 23,842); validation_size=0 trains on the "
            "paper's 60,000 images and has no per-epoch validation (test accuracy is "
            "evaluated once per level)"),
        "levels_choice": (
            "until --target_sparsity=0.965 the method stops at the first level at or past "
            f"it: {len(predicted)} levels (round 0 dense + {len(predicted) - 1} prunings, "
            f"last at {100 * predicted[-1]:.2f}% density; the level before is at "
            f"{100 * predicted[-2]:.2f}%, sparsity {1 - predicted[-2]:.4f} < 0.965). The "
            "issue's 16 levels to 3.5% are rounds 0-15: "
            + (f"--rounds={rounds} runs {rounds + 1} levels" if rounds >= 0 else
               "--lth_rounds=-1: run until the target")),
        "predicted_densities_until_0.965": predicted,
        "execution": "the new defaults (--steps_per_execution=auto --jit_compile=auto)",
        "command": [os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:]],
        "timing": "train_seconds per level from results.json's rounds (sums of epoch "
                  "begin -> end); end_to_end_seconds per level from the TensorBoard "
                  "epoch/loss events (previous level's last epoch end, or the child's "
                  "start for level 0, to this level's last epoch end: pruning, rewinding, "
                  "snapshots and the test evaluation included); child_wall_seconds the "
                  "whole process",
        "smoke": bool(FLAGS.lth_train_limit or FLAGS.test_limit or
                      FLAGS.lth_round_iterations != 24000),
    })
    write(plot_now=False)
    print(f"LTH protocol: {' '.join(section['protocol']['command'])}", flush=True)
    log_path = os.path.join(out, "child.log")
    proc = run_child(cmd, log_path)
    section["process"] = proc
    try:
        if proc["returncode"] != 0:
            raise RuntimeError(f"exit code {proc['returncode']}")
        with open(os.path.join(out, "run", "results.json")) as f:
            results = json.load(f)
        ends = epoch_end_times(os.path.join(out, "run", "logs"))
        section.update(lth_report(results, ends, proc["child_start_time"], plan["epochs"]))
        section["final"] = results.get("final")
        section["execution"] = _execution_line(log_path)
        section["child_wall_seconds"] = proc["child_wall_seconds"]
        section["status"] = "finished"
    except Exception as e:  # pylint: disable=broad-except  (recorded in the JSON)
        section["error"] = f"{type(e).__name__}: {e}"
        section["log_tail"] = _log_tail(log_path)
        section["status"] = "failed"
    section.update(finished_utc=_utc(), loadavg_at_end=_loadavg())
    write(plot_now=False)
    print_lth(section)
    if not FLAGS.keep_runs and section["status"] == "finished":
        shutil.rmtree(out, ignore_errors=True)


def print_speed(section):
    print("\nsteps/s (steady: median epoch of 2..E; median [min, max] over repeats):")
    for model, batches in section.get("summary", {}).items():
        for batch, variants in batches.items():
            cells = ", ".join(
                f"{v} {r['steady']['median']:.1f} [{r['steady']['min']:.1f}, "
                f"{r['steady']['max']:.1f}]" if r.get("steady") else
                f"{v} (all epochs) {r['all_epochs']['median']:.1f}"
                for v, r in variants.items())
            print(f"  {model} batch {batch}: {cells}")
    print(f"targets ({section.get('targets_measure')}):")
    for t in section.get("targets", []):
        cells = "; ".join(f"{c['model']} b{c['batch_size']} {c['value']:.2f}"
                          f"{'' if c['passed'] else ' (fails)'}" for c in t["cells"])
        state = {True: "met", False: "NOT met", None: "not measured"}[t["passed"]]
        print(f"  {t['text']}: {state} ({cells or '-'})")


def print_lth(section):
    if section.get("error"):
        print(f"LTH protocol failed: {section['error']}")
        print("\n".join(section.get("log_tail", [])))
        return
    print(f"\nLTH protocol: {section['n_levels']} levels, child wall "
          f"{section['child_wall_seconds']:.0f} s, training "
          f"{section['total_train_seconds']:.0f} s for {section['total_train_steps']:,} steps")
    for lv in section["levels"]:
        e2e = lv["end_to_end_seconds"]
        print(f"  level {lv['level']:2d}: density {100 * lv['density']:6.2f}%, test "
              f"{100 * (lv['test_accuracy'] or 0):.2f}%, {lv['train_steps']} steps, "
              f"{lv['train_seconds']:.1f} s train"
              + (f", {e2e:.1f} s end to end" if e2e is not None else ""))
    if section.get("comparison"):
        c = section["comparison"]
        print(f"  per level: {c['ours_seconds_per_level']:.1f} s ({c['ours_measure']}); "
              f"OpenLTH (H200) {c['openlth_seconds_per_level']:.0f} s")


# --------------------------------------------------------------------------
# Plot

def plot(section, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    summary = section.get("summary") or {}
    if not summary:
        return
    measure = section.get("targets_measure", "steady")
    table = section.get("ratios", {}).get(measure, {})
    verdicts = {}  # (ratio, model, batch) -> "target >= 2.5 met" / "... NOT met"
    for t in section.get("targets", []):
        for c in t["cells"]:
            verdicts[(t["ratio"], c["model"], c["batch_size"])] = (
                f"target {t['comparison']} {t['threshold']:g}: "
                f"{'met' if c['passed'] else 'NOT met'}")
    models = list(summary)
    variants = [v for v in VARIANTS if any(v in cell for b in summary.values()
                                           for cell in b.values())]
    fig, axes = plt.subplots(1, len(models), figsize=(max(8.0, 7.0 * len(models)), 5.5),
                             squeeze=False)
    width = 0.8 / max(len(variants), 1)
    for ax, model in zip(axes[0], models):
        batches = sorted(summary[model], key=int)
        x = np.arange(len(batches))
        top = 0.0
        for i, v in enumerate(variants):
            rows = [summary[model][b].get(v, {}).get(measure) for b in batches]
            med = [r["median"] if r else 0.0 for r in rows]
            lo = [r["median"] - r["min"] if r else 0.0 for r in rows]
            hi = [r["max"] - r["median"] if r else 0.0 for r in rows]
            pos = x + (i - (len(variants) - 1) / 2) * width
            ax.bar(pos, med, width, yerr=[lo, hi], capsize=3, label=VARIANTS[v]["label"])
            for p, m, h in zip(pos, med, hi):
                if m:
                    ax.annotate(f"{m:.0f}", (p, m + h), textcoords="offset points",
                                xytext=(0, 2), ha="center", va="bottom", fontsize=7)
                top = max(top, m + h)
        for j, b in enumerate(batches):
            cell = table.get(model, {}).get(b, {})
            lines = []
            for key, label in (("tf_unilth/tf_unilth_before", "d/c"),
                               ("tf_unilth/tfmot", "d/b"),
                               ("dense_fast/tf_unilth", "time d/a'")):
                if key in cell:
                    mark = verdicts.get((key, model, int(b)))
                    lines.append(f"{label} {cell[key]['ratio_of_medians']:.2f}x" + (
                        "" if mark is None else f" ({mark})"))
            if lines:
                ax.text(j, top * 1.12, "\n".join(lines), ha="center", va="bottom", fontsize=8,
                        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
        ax.set_ylim(0, top * 1.55 if top else 1)
        ax.set_xticks(x)
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.set_ylabel("training steps / s (median; whiskers min-max)")
        ax.set_title(f"{model}, MNIST", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    proto = section.get("protocol", {})
    fig.suptitle(f"End-to-end training speed on CPU "
                 f"({'steady: median epoch of 2..E' if measure == 'steady' else 'all epochs'})\n"
                 f"{proto.get('epochs')} epochs per measurement, {proto.get('repeats')} "
                 "repeat(s), one process each"
                 + ("\nSMOKE RUN, tiny budget: not a result" if proto.get("smoke") else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------

def main(argv):
    del argv
    if FLAGS.child:
        keras_child(json.loads(FLAGS.child), FLAGS.child_output)
        return 0
    if not FLAGS.speed and not FLAGS.lth_protocol:
        raise app.UsageError("nothing to do: --nospeed without --lth_protocol")
    if FLAGS.epochs < 1 or FLAGS.repeats < 1:
        raise app.UsageError("--epochs and --repeats must be >= 1")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    existing = _load_existing()
    report = {"benchmark": FLAGS.name, "machine": machine_info(),
              "note": "each section (speed, lth_protocol) has its own command, commit, "
                      "dates and load; a run that does one part keeps the other's section"}
    for part, running in (("speed", FLAGS.speed), ("lth_protocol", FLAGS.lth_protocol)):
        if not running and part in existing:
            report[part] = existing[part]
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="search_speed_")
    os.makedirs(work_dir, exist_ok=True)

    def write(plot_now):
        write_json(_output_path("json"), report)
        if plot_now and report.get("speed"):
            plot(report["speed"], _output_path("png"))

    print(f"children's runs in {work_dir}", flush=True)
    if FLAGS.speed:
        run_speed(report, work_dir, write)
    if FLAGS.lth_protocol:
        run_lth(report, work_dir, write)
    write(plot_now=bool(report.get("speed")))
    if not FLAGS.keep_runs and not FLAGS.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"wrote {_output_path('json')}" +
          (f" and {_output_path('png')}" if report.get("speed") else ""))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
