"""Training-step overhead of the pruning machinery: dense vs tfmot vs tf_unilth.

Measures the median training-step time of LeNet-300-100 on MNIST (Adam) in one
process, for three variants built fresh per batch size:

  dense  plain tf_keras model, compile, fit;
  tfmot  `prune_low_magnitude(ConstantSparsity(0.9, begin_step=0,
         frequency=100))` + tfmot's `UpdatePruningStep`;
  ours   `tf_unilth.wrapper.prune` with a `TriggeredSchedule.rounds([0.5, 0.25,
         0.1], steps_per_round=100)` per layer (started), growing regularizers
         attached with a layer-wise 50% magnitude selection, and the callbacks
         `tf_unilth.callbacks.UpdatePruningStep` + `RegularizerGrowth(
         PowerGrowth(1.0, steps=1000), active=True)` (lambda changes every step,
         computed inside the step by `regularizers.LambdaGrowth`).

Protocol (see also `PROTOCOL` below, written into the JSON):

* Data: every full batch of one (shuffled) epoch of the training split, stacked
  in memory and served by `from_tensor_slices(...).repeat().prefetch()`, so the
  input pipeline only slices tensors that are already batched.
* Each variant is warmed up with a short fit (tracing), then its schedule is
  started (ours: `start(0)`), then one 300-step fit runs every variant through
  pruning events (tfmot and ours both reach 90% sparsity there).
* A measurement is one whole `model.fit(ds.take(steps), epochs=1, verbose=0)`
  call timed with `time.perf_counter()` (no per-batch timing hooks, which would
  add Python work to every variant), with Python's GC collected before and
  disabled during the call. Variants are interleaved round robin
  (dense, tfmot, ours, dense, tfmot, ours, ...) so machine noise hits all alike.
* `fit` has a fixed per-call cost (iterator, callbacks, epoch-end weight
  masking). Right before each timed call the same variant runs `n_empty`
  one-step fits; their median T1 estimates that cost plus one step, so
  `(T_steps - T1) / (steps - 1)` is the per-step time without the per-call
  cost. Both this (primary) and the raw `T_steps / steps` are reported.
* The machine is shared: each timed call records how many CPU cores other
  processes used meanwhile (/proc/stat minus our own CPU time); a call above
  `--max_foreign_load` is retried after a pause (`--retries`), all attempts
  are kept in the JSON.
* Process CPU time per step (all threads, per-call cost removed likewise) is
  reported next to wall time: it does not see wake-up latency or time spent
  descheduled, which dominate wall time on small, shared VMs.
* Pruning events are matched: tfmot prunes every 100 steps (3 events in any
  300 consecutive steps); before each timed call ours' schedules are re-armed
  at the current step (`start(step)`, outside the timed region), so a 300-step
  call contains its 3 round ends too. `RegularizerGrowth` is restarted at the
  same point so lambda changes on every timed step (the curve length is
  max(1000, steps)).

Usage:

    python benchmarks/step_overhead.py --data_dir=/path/to/tfds
"""

import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

from tf_unilth import callbacks as cb_lib
from tf_unilth import data as data_lib
from tf_unilth import masks as masks_lib
from tf_unilth import models as models_lib
from tf_unilth import regularizers as reg_lib
from tf_unilth import schedules as sched_lib
from tf_unilth import wrapper as wrapper_lib
from tf_unilth._compat import keras, tf, tfmot

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"),
                    "TFDS data directory holding mnist (default: $TFDS_DATA_DIR).")
flags.DEFINE_list("batch_sizes", ["60", "128"], "Batch sizes to measure.")
flags.DEFINE_integer("steps", 300, "Timed training steps per measurement (one fit call).")
flags.DEFINE_integer("repeats", 5, "Measurements per variant and batch size (round robin).")
flags.DEFINE_integer("warmup_steps", 50, "Steps of the first (tracing) fit of each variant.")
flags.DEFINE_integer("prune_steps", 300,
                     "Steps of the second warm-up fit, after the schedules are started "
                     "(runs the pruning events of ours' round plan).")
flags.DEFINE_integer("n_empty", 3, "One-step fits per measurement estimating the per-call cost.")
flags.DEFINE_float("max_foreign_load", 0.3,
                   "A timed call during which other processes used more CPU cores than "
                   "this (from /proc/stat) counts as contended and is retried.")
flags.DEFINE_integer("retries", 3, "Retries of a contended measurement (all attempts kept).")
flags.DEFINE_integer("threads", 0,
                     "TensorFlow intra- and inter-op threads (0: TensorFlow's default). 1 "
                     "makes step times less sensitive to CPU contention on small machines.")
flags.DEFINE_string("output_dir", "benchmarks/results", "Where the JSON and PNG go.")
flags.DEFINE_string("name", "step_overhead", "Base name of the output files.")

MODEL = "lenet300_100"
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
LEARNING_RATE = 1e-3
TFMOT_FREQUENCY = 100
ROUND_DENSITIES = (0.5, 0.25, 0.1)
STEPS_PER_ROUND = 100
GROWTH_STEPS = 1000
SELECTION_RATE = 0.5


# --------------------------------------------------------------------------
# Variants

class Variant:
    """A model, its fit callbacks, and hooks run outside the timed region."""

    def __init__(self, name, model, callbacks=(), description=""):
        self.name = name
        self.model = model
        self.callbacks = list(callbacks)
        self.description = description

    def fit(self, ds, steps):
        self.model.fit(ds.take(steps), epochs=1, verbose=0, callbacks=self.callbacks)

    def after_warmup(self):
        """Called once after the first (tracing) fit."""

    def before_timed(self):
        """Called before each timed fit (not timed)."""

    def state(self):
        """A few numbers showing the machinery is active (written to the JSON)."""
        return {}


def _compile(model):
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _base_model():
    return models_lib.build(MODEL, INPUT_SHAPE, NUM_CLASSES, seed=0)


def _sparsity_of_wrapped(model):
    zeros = total = 0
    for layer in wrapper_lib.wrappers(model):
        for _, mask, _ in layer.pruning_vars:
            m = mask.numpy()
            zeros += int((m < 0.5).sum())
            total += m.size
    return zeros / max(total, 1)


class Dense(Variant):
    def __init__(self):
        super().__init__("dense", _compile(_base_model()),
                         description="plain tf_keras LeNet-300-100, Adam")


class Tfmot(Variant):
    def __init__(self, schedule=None, name="tfmot", description=None):
        schedule = schedule or tfmot.sparsity.keras.ConstantSparsity(
            0.9, begin_step=0, frequency=TFMOT_FREQUENCY)
        model = tfmot.sparsity.keras.prune_low_magnitude(
            _base_model(), pruning_schedule=schedule)
        super().__init__(
            name, _compile(model), [tfmot.sparsity.keras.UpdatePruningStep()],
            description=description or (
                "tfmot.sparsity.keras.prune_low_magnitude(ConstantSparsity(0.9, "
                "begin_step=0, frequency=100)) + tfmot UpdatePruningStep"))

    def state(self):
        return {"sparsity": _sparsity_of_wrapped(self.model),
                "pruning_step": int(wrapper_lib.wrappers(self.model)[0].pruning_step.numpy())}


class Ours(Variant):
    def __init__(self, regularizer=True, growth=True, name="ours", description=None):
        model = wrapper_lib.prune(
            _base_model(),
            lambda layer: sched_lib.TriggeredSchedule.rounds(
                list(ROUND_DENSITIES), steps_per_round=STEPS_PER_ROUND))
        callbacks = [cb_lib.UpdatePruningStep()]
        self.growth = None
        if regularizer:
            reg_lib.attach(model)
            reg_lib.set_selection(model, masks_lib.magnitude_layerwise(model, SELECTION_RATE))
            if growth:
                self.growth = cb_lib.RegularizerGrowth(
                    reg_lib.PowerGrowth(1.0, steps=max(GROWTH_STEPS, FLAGS.steps)),
                    active=True)
                callbacks.append(self.growth)
            else:
                reg_lib.set_lambda(model, 1.0)
        super().__init__(
            name, _compile(model), callbacks,
            description=description or (
                "tf_unilth.wrapper.prune(TriggeredSchedule.rounds([0.5, 0.25, 0.1], "
                "steps_per_round=100)) + regularizers.attach + set_selection("
                "magnitude_layerwise 0.5) + callbacks.UpdatePruningStep + "
                "RegularizerGrowth(PowerGrowth(1.0, steps=1000), active=True)"))

    def _wrappers(self):
        return wrapper_lib.wrappers(self.model)

    def after_warmup(self):
        for layer in self._wrappers():
            layer.pruning_schedule.start(0)

    def before_timed(self):
        step = cb_lib.current_step(self.model)
        for layer in self._wrappers():
            layer.pruning_schedule.start(step)
        if self.growth is not None:
            self.growth.restart()

    def state(self):
        regs = reg_lib.regularizers(self.model)
        return {"sparsity": _sparsity_of_wrapped(self.model),
                "pruning_step": cb_lib.current_step(self.model),
                "lambda": reg_lib.current_lambda(self.model) if regs else None}


VARIANTS = {"dense": Dense, "tfmot": Tfmot, "ours": Ours}


# --------------------------------------------------------------------------
# Data

def in_memory_dataset(data_dir, batch_size):
    """Every full batch of one shuffled epoch, stacked; repeated and prefetched."""
    splits = data_lib.load("mnist", data_dir=data_dir, download=False,
                           batch_size=batch_size)
    xs, ys = [], []
    for x, y in splits.train:
        if int(x.shape[0]) != batch_size:
            continue
        xs.append(x)
        ys.append(y)
    x, y = tf.stack(xs), tf.stack(ys)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().prefetch(tf.data.AUTOTUNE)
    return ds, len(xs)


# --------------------------------------------------------------------------
# Timing

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot():
    """(machine busy CPU seconds incl. steal, this process's CPU seconds), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, inside user]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    own = os.times()
    return busy / _CLK_TCK, own.user + own.system


def foreign_load(before, after, wall):
    """Cores used by other processes (and the hypervisor) during `wall` seconds."""
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)


def timed_fit(variant, ds, steps):
    """(wall seconds, process CPU seconds, foreign load in cores) of one fit call."""
    gc.collect()
    gc.disable()
    try:
        snap = _cpu_snapshot()
        cpu = time.process_time()
        start = time.perf_counter()
        variant.fit(ds, steps)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        return wall, cpu, foreign_load(snap, _cpu_snapshot(), wall)
    finally:
        gc.enable()


def measure(variants, ds, steps, repeats, n_empty, max_foreign, retries, log=print):
    """Round-robin measurements.

    Returns {name: [attempt, ...]} with attempt = {"repeat", "T", "T1", "C",
    "C1" (wall / process CPU seconds of the timed and one-step fits),
    "foreign_cores", "clean"}. A timed call during which other processes used
    more than `max_foreign` cores is retried (after a pause) up to `retries`
    times; every attempt is kept.
    """
    out = {v.name: [] for v in variants}
    for r in range(repeats):
        for v in variants:
            for attempt in range(retries + 1):
                empty = [timed_fit(v, ds, 1) for _ in range(n_empty)]
                t1 = statistics.median(e[0] for e in empty)
                c1 = statistics.median(e[1] for e in empty)
                v.before_timed()
                t, c, foreign = timed_fit(v, ds, steps)
                clean = foreign is None or foreign <= max_foreign
                out[v.name].append({"repeat": r, "T": t, "T1": t1, "C": c, "C1": c1,
                                    "foreign_cores": foreign, "clean": clean})
                log(f"  repeat {r + 1}/{repeats} {v.name:>18s}: {t / steps * 1e3:7.3f} ms/step raw, "
                    f"{(t - t1) / (steps - 1) * 1e3:7.3f} corrected, CPU "
                    f"{(c - c1) / (steps - 1) * 1e3:7.3f} ms/step, one-step fit "
                    f"{t1 * 1e3:6.1f} ms, foreign load "
                    f"{'?' if foreign is None else f'{foreign:.2f}'} cores"
                    f"{'' if clean else ' (contended' + (', retry)' if attempt < retries else ')')}",
                    flush=True)
                if clean:
                    break
                time.sleep(2.0)
    return out


def _stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(raw, steps):
    """Per variant: all attempts, and the statistics of the one kept per repeat.

    Kept per repeat: its clean attempt if any, else its last attempt.
    """
    result = {}
    for name, attempts in raw.items():
        kept = []
        for r in sorted({a["repeat"] for a in attempts}):
            mine = [a for a in attempts if a["repeat"] == r]
            clean = [a for a in mine if a["clean"]]
            kept.append(clean[0] if clean else mine[-1])
        corrected = [(a["T"] - a["T1"]) / (steps - 1) * 1e3 for a in kept]
        plain = [a["T"] / steps * 1e3 for a in kept]
        cpu = [(a["C"] - a["C1"]) / (steps - 1) * 1e3 for a in kept]
        result[name] = {
            "median_ms_per_step": statistics.median(corrected),
            "repeats_ms_per_step": corrected,
            "min_ms_per_step": min(corrected),
            "raw_median_ms_per_step": statistics.median(plain),
            "raw_repeats_ms_per_step": plain,
            "cpu_median_ms_per_step": statistics.median(cpu),
            "cpu_repeats_ms_per_step": cpu,
            "one_step_fit_ms": [a["T1"] * 1e3 for a in kept],
            "foreign_cores": [a["foreign_cores"] for a in kept],
            "clean_repeats": sum(a["clean"] for a in kept),
            "per_call_fraction_of_timed_fit": statistics.median(a["T1"] / a["T"] for a in kept),
            "all_attempts": [
                {"repeat": a["repeat"], "ms_per_step": (a["T"] - a["T1"]) / (steps - 1) * 1e3,
                 "raw_ms_per_step": a["T"] / steps * 1e3,
                 "cpu_ms_per_step": (a["C"] - a["C1"]) / (steps - 1) * 1e3,
                 "one_step_fit_ms": a["T1"] * 1e3,
                 "foreign_cores": a["foreign_cores"], "clean": a["clean"]}
                for a in attempts],
        }
    return result


def ratios(summary, key="median_ms_per_step", repeats_key="repeats_ms_per_step"):
    pairs = [(b, a) for b, a in (("tfmot", "dense"), ("ours", "dense"), ("ours", "tfmot"))
             if a in summary and b in summary]
    extra = [(n, "dense") for n in summary if n not in ("dense", "tfmot", "ours")
             and "dense" in summary]
    out = {}
    for b, a in pairs + extra:
        out[f"{b}/{a}"] = {
            "ratio_of_medians": summary[b][key] / summary[a][key],
            "median_of_paired_ratios": statistics.median(
                x / y for x, y in zip(summary[b][repeats_key], summary[a][repeats_key])),
        }
        if key == "median_ms_per_step":
            out[f"{b}/{a}"]["ratio_of_mins"] = (summary[b]["min_ms_per_step"]
                                                / summary[a]["min_ms_per_step"])
    return out


# --------------------------------------------------------------------------
# Report

def machine_info():
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tfmot": tfmot.__version__,
        "tf_keras": keras.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = os.getloadavg()
    return info


PROTOCOL = {
    "model": f"{MODEL} {INPUT_SHAPE} -> {NUM_CLASSES}, seed 0, Adam(lr={LEARNING_RATE}), "
             "SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy']",
    "data": "MNIST train split (55000 after the 5000 validation hold-out), every full batch "
            "of one shuffled epoch stacked in memory; "
            "Dataset.from_tensor_slices(batches).repeat().prefetch(AUTOTUNE)",
    "measurement": "one model.fit(ds.take(steps), epochs=1, verbose=0) call timed with "
                   "time.perf_counter(), gc collected before and disabled during the call; "
                   "no per-batch timing hooks",
    "per_step_time": "(T_steps - T1) / (steps - 1) with T1 the median of n_empty one-step fits "
                     "run right before (per-call cost + one step); raw T_steps / steps also "
                     "reported",
    "order": "variants interleaved round robin within each repeat "
             "(dense, tfmot, ours, dense, tfmot, ours, ...); batch sizes one after the other",
    "warmup": "fit(warmup_steps) per variant (tracing); ours' schedules then start(0); "
              "fit(prune_steps) per variant (tfmot and ours reach 90% sparsity)",
    "pruning_events": "tfmot: ConstantSparsity frequency 100 -> 3 mask updates per 300 "
                      "steps; ours: schedules re-armed with start(current step) before each "
                      "timed call -> mask updates at +100, +200, +300 (3 per 300-step call)",
    "regularizer": "ours: GrowingRegularizer on the 3 kernels, selection = 50% layerwise "
                   "magnitude; RegularizerGrowth restarted before each timed call so lambda "
                   "= (t / G)^2, G = max(1000, steps), changes on every timed step",
    "contention": "the machine is shared: for each timed call the CPU time used by other "
                  "processes and the hypervisor (steal) is read from /proc/stat; a call during "
                  "which they used more than max_foreign_load cores is 'contended' and retried "
                  "after 2 s, up to `retries` times; every attempt is kept in all_attempts, and "
                  "each repeat keeps its clean attempt (else its last one)",
    "cpu_time": "process CPU time (time.process_time, all threads) per step, per-call cost "
                "removed the same way; a secondary measure that does not see wake-up "
                "latency or time spent descheduled",
    "summary": "median over repeats of the kept attempts; ratios = ratio of medians (also "
               "median of the per-repeat ratios of adjacent measurements, and ratio of "
               "minima)",
}


def plot(results, batch_sizes, names, path):
    """Two panels (wall time, process CPU time): grouped bars per batch size."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    panels = [("median_ms_per_step", "repeats_ms_per_step", "wall time"),
              ("cpu_median_ms_per_step", "cpu_repeats_ms_per_step", "process CPU time")]
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 2.2 * len(names) * len(batch_sizes), 4.4))
    width = 0.8 / len(names)
    x = np.arange(len(batch_sizes))
    for ax, (key, rkey, title) in zip(axes, panels):
        top = 0.0
        for i, name in enumerate(names):
            rows = [results[str(b)]["variants"][name] for b in batch_sizes]
            meds = [r[key] for r in rows]
            lo = [min(r[rkey]) for r in rows]
            hi = [max(r[rkey]) for r in rows]
            pos = x + (i - (len(names) - 1) / 2) * width
            ax.bar(pos, meds, width, label=name,
                   yerr=[np.subtract(meds, lo), np.subtract(hi, meds)], capsize=3)
            for p, b, m, h in zip(pos, batch_sizes, meds, hi):
                dense = results[str(b)]["variants"]["dense"][key]
                label = f"{m:.2f}" if name == "dense" else f"{m:.2f}\n{m / dense:.2f}x"
                ax.annotate(label, (p, h), textcoords="offset points", xytext=(0, 3),
                            ha="center", va="bottom", fontsize=8)
                top = max(top, h)
        ax.set_ylim(0, top * 1.3)
        ax.set_xticks(x)
        ax.set_xticklabels([f"batch {b}" for b in batch_sizes])
        ax.set_ylabel(f"median {title}, ms / step")
        ax.set_title(f"{title} (ratio to dense)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("LeNet-300-100, MNIST, Adam, CPU: training-step time; whiskers: min-max "
                 "over repeats", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def batch_record(summary, variants, n_batches, **extra):
    """One batch size's entry of the results JSON (`extra`: benchmark-specific keys)."""
    return {
        **extra,
        "batches_in_memory": n_batches,
        "variants": summary,
        "ratios": ratios(summary),
        "raw_ratios": ratios(summary, "raw_median_ms_per_step", "raw_repeats_ms_per_step"),
        "cpu_ratios": ratios(summary, "cpu_median_ms_per_step", "cpu_repeats_ms_per_step"),
        "state_after": {v.name: v.state() for v in variants},
        "descriptions": {v.name: v.description for v in variants},
    }


# --------------------------------------------------------------------------

def run(variant_factories, output_name):
    wall = time.perf_counter()
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    if FLAGS.steps < 2:
        raise app.UsageError("--steps must be >= 2.")
    machine = machine_info()
    results = {}
    for bs in batch_sizes:
        print(f"batch size {bs}: loading data", flush=True)
        ds, n_batches = in_memory_dataset(FLAGS.data_dir, bs)
        variants = [make() for make in variant_factories]
        warm_up(variants, ds, bs, n_batches)
        raw = measure(variants, ds, FLAGS.steps, FLAGS.repeats, FLAGS.n_empty,
                      FLAGS.max_foreign_load, FLAGS.retries)
        summary = summarize(raw, FLAGS.steps)
        results[str(bs)] = batch_record(summary, variants, n_batches)
        del variants, ds
        gc.collect()
    machine["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    names = list(results[str(batch_sizes[0])]["variants"])
    report = {
        "benchmark": output_name,
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": machine,
        "protocol": dict(PROTOCOL, steps=FLAGS.steps, repeats=FLAGS.repeats,
                         warmup_steps=FLAGS.warmup_steps, prune_steps=FLAGS.prune_steps,
                         n_empty=FLAGS.n_empty, batch_sizes=batch_sizes,
                         max_foreign_load=FLAGS.max_foreign_load, retries=FLAGS.retries,
                         threads=FLAGS.threads or "tensorflow default"),
        "results": results,
        "target": {bs: {"ours/tfmot": results[str(bs)]["ratios"]["ours/tfmot"]["ratio_of_medians"],
                        "within_1.10": results[str(bs)]["ratios"]["ours/tfmot"]["ratio_of_medians"]
                        <= 1.10}
                   for bs in batch_sizes if "ours/tfmot" in results[str(bs)]["ratios"]},
        "wall_time_s": None,
    }
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot(results, batch_sizes, names, os.path.join(FLAGS.output_dir, output_name + ".png"))
    report["wall_time_s"] = round(time.perf_counter() - wall, 1)
    with open(os.path.join(FLAGS.output_dir, output_name + ".json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print_summary(results, batch_sizes)
    print(f"wall time {report['wall_time_s']} s; wrote "
          f"{os.path.join(FLAGS.output_dir, output_name)}.json/.png")
    return report


def warm_up(variants, ds, batch_size, n_batches):
    """Tracing fit, schedules started, then a fit through the pruning events."""
    for v in variants:
        v.fit(ds, FLAGS.warmup_steps)
        v.after_warmup()
    for v in variants:
        v.fit(ds, FLAGS.prune_steps)
    print(f"batch size {batch_size}: {n_batches} batches in memory; warm-up done; "
          f"state {[(v.name, v.state()) for v in variants]}", flush=True)


def print_summary(results, batch_sizes):
    """Per-step times and ratios per batch size, as the JSON holds them."""
    print("\nmedian wall ms/step (per-call cost removed; raw T/steps in brackets; process "
          "CPU ms/step)")
    for bs in batch_sizes:
        row = results[str(bs)]
        cells = ", ".join(f"{n} {s['median_ms_per_step']:.3f} [{s['raw_median_ms_per_step']:.3f}]"
                          f" CPU {s['cpu_median_ms_per_step']:.3f}"
                          f" ({s['clean_repeats']}/{len(s['repeats_ms_per_step'])} clean)"
                          for n, s in row["variants"].items())
        print(f"  batch {bs}: {cells}")
    print("ratios: ratio of medians [median of paired per-repeat ratios; ratio of minima]")
    for bs in batch_sizes:
        cells = ", ".join(f"{k} {v['ratio_of_medians']:.3f} [{v['median_of_paired_ratios']:.3f}; "
                          f"{v['ratio_of_mins']:.3f}]"
                          for k, v in results[str(bs)]["ratios"].items())
        print(f"  batch {bs}: {cells}")
    print("CPU time ratios (process CPU ms/step, all threads): ratio of medians [paired]")
    for bs in batch_sizes:
        cells = ", ".join(f"{k} {v['ratio_of_medians']:.3f} [{v['median_of_paired_ratios']:.3f}]"
                          for k, v in results[str(bs)]["cpu_ratios"].items())
        print(f"  batch {bs}: {cells}")


def main(argv):
    del argv
    run([VARIANTS[n] for n in ("dense", "tfmot", "ours")], FLAGS.name)


if __name__ == "__main__":
    app.run(main)
