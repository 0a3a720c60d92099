"""The rewinding sweep of seed 001 on MNIST / LeNet-300-100, plus UniLTH / UniDLTH.

    python examples/stability.py --output_dir=runs/stability --data_dir=$TFDS_DATA_DIR
    python -m tf_unilth.cli.stability --output_dir=runs/stability

Seed 001 (Frankle et al. 2020) explains why rewinding to an early iteration k
finds tickets where k = 0 fails: the subnetwork (mask m, weights theta_k)
becomes stable to SGD noise. For each rewind point k (a fraction of the
training length T) this script

1. finds an LTH ticket at --sparsity with rewinding to k (the library's IMP,
   keeping theta_k, the dense weights after k iterations of its first round);
2. trains two copies of (m, theta_k) for T - k iterations with different data
   orders and measures their instability (error barrier on the linear path,
   on the test set) and the L2 distance between them.

It does the same for UniLTH and UniDLTH tickets at the same sparsity: their
"rewind point" is the state the method rewinds to when its plateau trigger
fires (dense weights at the end of epoch `rewound_to_epoch`); the two copies
start from those weights with the method's final mask and train T iterations.
As a control they also start from the initialization with the same mask.
The dense network's own stability from initialization is the reference.

Cheaper than seed 001 (T = --epochs epochs instead of 50K iterations, LTH
reaching --sparsity in --lth_rounds rounds at the per-round rate that lands
on it instead of 20%/round); the protocol is written into stability.json.

Writes to --output_dir: pieces/<piece>/*.json (one finished piece each; a
rerun skips them, so a killed run resumes), stability.json (every number and
the protocol) and stability.png (accuracy, instability and distance against k).
"""

import json
import os
import time

from absl import app, flags, logging
import numpy as np

import tf_unilth
from tf_unilth import analysis, callbacks, masks, results
from tf_unilth._compat import keras
from tf_unilth.cli import errors
from tf_unilth.engine import trainer as trainer_lib

FLAGS = flags.FLAGS
# The program's flags (recorded in flags.json and stability.json), defined by
# `define_flags` when the program runs: importing this module defines none, so
# it can share a process with the other tf_unilth.cli programs.
RUN_FLAGS = []


def _define(kind, name, *args, **kwargs):
    getattr(flags, f"DEFINE_{kind}")(name, *args, **kwargs)
    RUN_FLAGS.append(name)


def define_flags():
    """Defines the program's flags (once)."""
    if RUN_FLAGS:
        return
    _define("string", "output_dir", None,
            "Directory for pieces/, stability.json and stability.png.", required=True)
    _define("string", "data_dir", None,
            "TFDS data dir (default: $TFDS_DATA_DIR, else TFDS's).")
    _define("string", "dataset", "mnist", "TFDS dataset.")
    _define("string", "model", "lenet300_100", "Network (tf_unilth.models).")
    _define("integer", "seed", 0, "Seed of the initialization, the validation split, the "
            "data order of the ticket searches and UniDLTH's random ticket.")
    _define("float", "sparsity", 0.965, "Target sparsity of every ticket (seed 001's LeNet: "
            "3.5% density).")
    _define("integer", "batch_size", 60, "Batch size (LTH papers: 60).")
    _define("float", "learning_rate", 6e-4, "Adam learning rate (the library's default).")
    _define("enum", "optimizer", "adam", list(trainer_lib.OPTIMIZERS), "Optimizer.")
    _define("integer", "validation_size", 5000, "Training examples held out for validation.")
    _define("integer", "train_limit", None, "Keep only the first N training examples (quick "
            "checks only; the sweep uses all).")
    _define("integer", "epochs", 5, "T in epochs: each LTH round trains this long, and so "
            "does each stability copy (minus k).")
    _define("integer", "lth_rounds", 5, "LTH pruning rounds to reach --sparsity.")
    _define("float", "prune_rate", None, "LTH per-round rate (output layer at half). "
            "Default: the smallest rate reaching --sparsity in --lth_rounds rounds.")
    _define("list", "rewind_points", ["0", "0.001", "0.01", "0.02", "0.07"],
            "Rewind points k as fractions of T (seed 001: 0, 0.1%, 1%, 2%, 7%).")
    _define("list", "stability_seeds", ["1", "2"], "Shuffle seeds of the two copies.")
    _define("integer", "points", 11, "Points on the linear path (ALGORITHMS.md: >= 11).")
    _define("float", "matching_tolerance", 0.002, "A ticket is matching when its test "
            "accuracy is at least the dense network's minus this (our choice; one seed gives "
            "no standard deviation).")
    _define("list", "uni_methods", ["unilth", "unidlth"], "Unified methods to measure too.")
    _define("integer", "uni_epochs", 30, "UniLTH/UniDLTH epoch budget.")
    _define("integer", "uni_rounds", 5, "UniLTH/UniDLTH pruning rounds R.")
    _define("integer", "patience", 3, "UniLTH/UniDLTH plateau patience P (rewind r = P).")
    _define("boolean", "uni_from_init", True,
            "Also test the Uni* masks from the initialization.")
    _define("boolean", "dense_reference", True,
            "Also test the dense network from initialization.")
    _define("integer", "verbose", 0, "Keras verbosity; 3: an error shows its traceback.")


_UNCOMPARED = ("verbose",)  # flags that may change between a run and its resumption


# ---------------------------------------------------------------------------
# Files

def _path(*parts):
    return os.path.join(FLAGS.output_dir, *parts)


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)  # complete or absent


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _save_arrays(path, arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{k.replace("/", ":"): v for k, v in arrays.items()})
    os.replace(tmp, path)


def _load_arrays(path):
    with np.load(path) as f:
        return {k.replace(":", "/"): f[k] for k in f.files}


def _check_flags(values):
    path = _path("flags.json")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    if os.path.exists(path):
        saved = _read_json(path)
        differ = sorted(k for k in set(saved) | set(values) if k not in _UNCOMPARED
                        and saved.get(k) != values.get(k))
        if differ:
            raise errors.UsageError(f"{FLAGS.output_dir} holds a run with other flags "
                                 f"({', '.join(differ)}); use another --output_dir.")
    else:
        _write_json(path, values)


# ---------------------------------------------------------------------------
# Protocol

def _layer_sizes(model):
    pruned = tf_unilth.prune(model)
    return {r.layer_name: int(np.prod(r.weight.shape)) for r in masks.pruned_weights(pruned)}


def _lth_sparsity(sizes, rate, rounds, output_layer):
    """Sparsity after `rounds` LTH rounds (masks.select_layerwise's rounding)."""
    alive = dict(sizes)
    for _ in range(rounds):
        for name in alive:
            r = rate / 2 if name == output_layer else rate
            alive[name] -= int(round(alive[name] * r))
    return 1.0 - sum(alive.values()) / sum(sizes.values())


def lth_rate(sizes, target, rounds, output_layer):
    """Smallest per-round rate (output layer at half) reaching `target` in `rounds`."""
    lo, hi = 0.0, 0.999
    if _lth_sparsity(sizes, hi, rounds, output_layer) < target:
        raise errors.UsageError(f"--lth_rounds={rounds} cannot reach sparsity {target}.")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _lth_sparsity(sizes, mid, rounds, output_layer) < target else (lo, mid)
    return hi


class Capture(keras.callbacks.Callback):
    """Keeps the parameters at iteration `step` of the first fit (theta_k), at
    initialization, and at the end of every epoch of the first fit it sees
    (the state a UniLTH rewind goes back to). Read-only."""

    def __init__(self, step=None):
        super().__init__()
        self.step, self.at_step, self.initial, self.epochs = step, None, None, {}
        self._fits = 0

    def on_train_begin(self, logs=None):
        self._fits += 1
        if self.initial is None:
            self.initial = analysis.get_parameters(self.model)
        if self.step == 0 and self.at_step is None:
            self.at_step = self.initial

    def on_train_batch_end(self, batch, logs=None):
        if self.at_step is None and self.step and \
                callbacks.current_step(self.model) >= self.step:
            self.at_step = analysis.get_parameters(self.model)

    # Keras skips batch hooks of callbacks that say they need none: no
    # per-batch cost once theta_k is kept (and none at all for Uni*).
    def _implements_train_batch_hooks(self):
        return bool(self.step) and self.at_step is None

    def on_epoch_end(self, epoch, logs=None):
        # Only the first time an epoch index is seen: at the trigger's epoch the
        # rewind has already run, but the rewound-to epoch was stored before.
        if self._fits == 1 and epoch not in self.epochs:
            self.epochs[epoch] = analysis.get_parameters(self.model)


# ---------------------------------------------------------------------------
# Pieces

class Run:
    def __init__(self):
        self.splits = tf_unilth.data.load(
            FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size,
            validation_size=FLAGS.validation_size, seed=FLAGS.seed,
            train_limit=FLAGS.train_limit)
        self.info = self.splits.info
        self.steps_per_epoch = self.splits.steps_per_epoch()
        self.total_steps = FLAGS.epochs * self.steps_per_epoch  # T
        sizes = _layer_sizes(self.build())
        self.output_layer = list(sizes)[-1]
        self.prune_rate = FLAGS.prune_rate or lth_rate(sizes, FLAGS.sparsity, FLAGS.lth_rounds,
                                                       self.output_layer)
        self.planned_sparsity = _lth_sparsity(sizes, self.prune_rate, FLAGS.lth_rounds,
                                              self.output_layer)
        self.fractions = [float(f) for f in FLAGS.rewind_points]
        self.rewind_steps = [int(round(f * self.total_steps)) for f in self.fractions]
        self.seeds = [int(s) for s in FLAGS.stability_seeds]
        self.started = time.perf_counter()

    def build(self):
        return tf_unilth.models.build(FLAGS.model, self.info.input_shape, self.info.num_classes,
                                      seed=FLAGS.seed)

    def model_with(self, parameters):
        return analysis.set_parameters(self.build(), parameters)

    def log(self, piece, text):
        print(f"[{time.perf_counter() - self.started:7.0f} s] {piece}: {text}", flush=True)

    def stability(self, piece, name, start, mask, rewind_point, **budget):
        path = _path("pieces", piece, name + ".json")
        if os.path.exists(path):
            self.log(piece, f"{name} found, skipped")
            return _read_json(path)
        result = analysis.stability_test(
            start, mask, rewind_point, self.splits.train, self.splits.test, seeds=self.seeds,
            batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
            learning_rate=FLAGS.learning_rate, points=FLAGS.points, verbose=FLAGS.verbose,
            **budget)
        out = result.to_dict()
        _write_json(path, out)
        acc = " / ".join(f"{100 * a:.2f}%" for a in result.test_accuracy)
        self.log(piece, f"{name}: copies {acc} test acc, instability "
                 f"{100 * result.instability.barrier:.2f} pp ({'stable' if result.stable else 'UNSTABLE'}), "
                 f"L2 {result.distance.l2:.2f} (relative {result.distance.relative:.3f}), "
                 f"{result.train_steps} steps each, {result.seconds:.0f} s")
        return out

    def search(self, piece, method, capture, **kwargs):
        """find_ticket once; the ticket's record, mask and captured states are kept."""
        record_path = _path("pieces", piece, "ticket.json")
        if os.path.exists(record_path):
            self.log(piece, "ticket found, skipped")
            return (_read_json(record_path), _load_arrays(_path("pieces", piece, "mask.npz")),
                    {name[:-4]: _load_arrays(_path("pieces", piece, name))
                     for name in os.listdir(_path("pieces", piece))
                     if name.startswith("theta") and name.endswith(".npz")})
        began = time.perf_counter()
        result = tf_unilth.find_ticket(
            self.build(), method, self.splits.train, self.splits.validation,
            target_sparsity=FLAGS.sparsity, test_data=self.splits.test,
            optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
            verbose=FLAGS.verbose, printer=lambda line: self.log(piece, line),
            callbacks=[capture], **kwargs)
        mask = masks.get_masks(result.pruned_model)
        record = {"method": method, "hparams": kwargs, "final": result.final,
                  "rounds": result.rounds, "total": result.total,
                  "method_info": result.method_info, "sparsity": result.sparsity,
                  "seconds": time.perf_counter() - began}
        states = {"theta_init": capture.initial}
        if capture.at_step is not None:
            states["theta_k"] = capture.at_step
        info = result.method_info or {}
        if info.get("rewound_to_epoch"):
            states["theta_rewind"] = capture.epochs[info["rewound_to_epoch"] - 1]
        os.makedirs(_path("pieces", piece), exist_ok=True)
        _save_arrays(_path("pieces", piece, "mask.npz"), mask)
        for name, params in states.items():
            _save_arrays(_path("pieces", piece, name + ".npz"), params)
        _write_json(record_path, record)  # last: marks the search as done
        self.log(piece, f"ticket sparsity {100 * result.sparsity:.2f}%, test acc "
                 f"{100 * result.final['test_accuracy']:.2f}%, {result.total['epochs']} epochs, "
                 f"{record['seconds']:.0f} s")
        return record, mask, states

    # -- the pieces ---------------------------------------------------------
    def dense(self):
        piece = "dense"
        return {"stability_from_init": self.stability(
            piece, "stability", self.build(), None, 0, total_steps=self.total_steps)}

    def lth(self, fraction, k):
        piece = f"lth_k{k}"
        record, mask, states = self.search(
            piece, "lth", Capture(step=k), epochs_per_round=FLAGS.epochs, rewind_step=k,
            prune_rate=self.prune_rate, rounds=FLAGS.lth_rounds)
        stability = self.stability(piece, "stability", self.model_with(states["theta_k"]), mask,
                                   k, total_steps=self.total_steps)
        return {"rewind_fraction": fraction, "rewind_step": k, "ticket": _ticket(record),
                "dense_round0_test_accuracy": record["rounds"][0]["test_accuracy"],
                "stability": stability}

    def uni(self, method):
        piece = method
        record, mask, states = self.search(
            piece, method, Capture(), epochs=FLAGS.uni_epochs, rounds=FLAGS.uni_rounds,
            patience=FLAGS.patience, seed=FLAGS.seed)
        info = record["method_info"] or {}
        epoch = info.get("rewound_to_epoch")
        if "theta_rewind" not in states:
            raise RuntimeError(f"{method} did not rewind (method_info {info}); nothing to test.")
        k = epoch * self.steps_per_epoch
        out = {"ticket": _ticket(record), "rewound_to_epoch": epoch, "rewind_step": k,
               "trigger_epoch": info.get("trigger_epoch"),
               "trigger_forced": info.get("trigger_forced"),
               "stability_from_rewind": self.stability(
                   piece, "stability_rewind", self.model_with(states["theta_rewind"]), mask, k,
                   train_steps=self.total_steps)}
        if FLAGS.uni_from_init:
            out["stability_from_init"] = self.stability(
                piece, "stability_init", self.model_with(states["theta_init"]), mask, 0,
                train_steps=self.total_steps)
        return out


def _ticket(record):
    return {"sparsity": record["sparsity"], "test_accuracy": record["final"]["test_accuracy"],
            "val_accuracy": record["final"]["val_accuracy"], "epochs": record["total"]["epochs"],
            "train_steps": record["total"]["train_steps"], "search_seconds": record["seconds"],
            "rounds": record["rounds"], "method_info": record["method_info"]}


# ---------------------------------------------------------------------------
# Summary and plot

def summarize(run, dense, lth, uni):
    # The dense network after T is every LTH search's round 0: same init and
    # data order, but CPU training is not bit-exact, so it varies a little.
    round0 = [r["dense_round0_test_accuracy"] for r in lth]
    dense_acc = float(np.mean(round0)) if lth else None
    tol = FLAGS.matching_tolerance

    def verdict(entry, stability):
        acc = entry["ticket"]["test_accuracy"]
        entry["matching"] = None if dense_acc is None else bool(acc >= dense_acc - tol)
        entry["stable"] = bool(stability["stable"])
        entry["copies_mean_test_accuracy"] = float(np.mean(stability["test_accuracy"]))
        return entry

    for entry in lth:
        verdict(entry, entry["stability"])
    for entry in uni.values():
        verdict(entry, entry["stability_from_rewind"])
    return {
        "description": "Seed 001's rewinding sweep (instability and distance of LTH tickets "
                       "against the rewind point k) plus UniLTH/UniDLTH tickets, on "
                       f"{FLAGS.dataset}/{FLAGS.model}.",
        "protocol": {
            "dataset": FLAGS.dataset, "model": FLAGS.model, "seed": FLAGS.seed,
            "sparsity_target": FLAGS.sparsity, "optimizer": FLAGS.optimizer,
            "learning_rate": FLAGS.learning_rate, "batch_size": FLAGS.batch_size,
            "steps_per_epoch": run.steps_per_epoch,
            "T_epochs": FLAGS.epochs, "T_steps": run.total_steps,
            "lth": {"rounds": FLAGS.lth_rounds, "prune_rate": run.prune_rate,
                    "output_layer_rate": run.prune_rate / 2,
                    "planned_sparsity": run.planned_sparsity,
                    "epochs_per_round": FLAGS.epochs,
                    "rewind": "weights, Adam state and step restored to iteration k "
                              "(library LTH)"},
            "rewind_points": [{"fraction": f, "step": k}
                              for f, k in zip(run.fractions, run.rewind_steps)],
            "stability": {
                "copies": "two copies of (mask, theta_k * mask), fresh optimizer, "
                          "trained T - k iterations (Uni*: T iterations from their rewind "
                          "state) on the training split reshuffled by each seed",
                "seeds": run.seeds, "points": FLAGS.points,
                "error": "test error (1 - accuracy) on the test split",
                "instability": "max error on the path - mean of the endpoint errors; "
                               f"stable below {analysis.STABLE_THRESHOLD}",
                "distance": "L2 over surviving kernel weights between the two copies; "
                            "relative = L2 / mean of their norms"},
            "uni": {"methods": FLAGS.uni_methods, "epochs": FLAGS.uni_epochs,
                    "rounds": FLAGS.uni_rounds, "patience": FLAGS.patience,
                    "rewind_state": "dense weights at the end of epoch rewound_to_epoch "
                                    "(the state the plateau trigger rewinds to), with the "
                                    "method's final mask; control: the initialization with "
                                    "the same mask"},
            "matching": f"ticket test accuracy >= dense test accuracy after T - {tol}",
            "published": "LeNet-300-100 in the LTH papers (ALGORITHMS.md): 50K iterations, "
                         "Adam 1.2e-3, batch 60, 20%/round (output 10%); here T, the rate "
                         "and the number of runs (one seed) are cut to fit ~1 h of a shared "
                         "2-core CPU",
        },
        "dense": {"test_accuracy_after_T": dense_acc, "round0_test_accuracies": round0,
                  "round0_std": float(np.std(round0)) if lth else None, **dense},
        "lth": lth,
        **uni,
        "flags": {name: FLAGS[name].value for name in _flag_names()},
        # Seconds spent in the pieces, whichever attempt ran them (a resumed run's
        # own wall time only covers what it did itself).
        "piece_seconds": float(
            sum(e["ticket"]["search_seconds"] + e["stability"]["seconds"] for e in lth)
            + sum(v["seconds"] for v in dense.values())
            + sum(e["ticket"]["search_seconds"] + sum(
                e[k]["seconds"] for k in ("stability_from_rewind", "stability_from_init")
                if k in e) for e in uni.values())),
        "wall_seconds_this_attempt": time.perf_counter() - run.started,
    }


def plot(summary, path):
    lth = summary["lth"]
    labels = [f"{100 * e['rewind_fraction']:g}%\n(k={e['rewind_step']})" for e in lth]
    uni_names = [m for m in FLAGS.uni_methods if m in summary]
    xs_lth = list(range(len(lth)))
    xs_uni = [len(lth) + 0.6 + i for i in range(len(uni_names))]
    uni_labels = [f"{'UniLTH' if m == 'unilth' else 'UniDLTH'}\n(ep {summary[m]['rewound_to_epoch']})"
                  for m in uni_names]
    fig = results.figure((15, 4.4))
    axes = fig.subplots(1, 3)

    def copies(entries, key):
        acc = [100 * np.array(e[key]["test_accuracy"]) for e in entries]
        return [a.mean() for a in acc], [[a.mean() - a.min() for a in acc],
                                         [a.max() - a.mean() for a in acc]]

    ax = axes[0]
    if lth:
        ax.plot(xs_lth, [100 * e["ticket"]["test_accuracy"] for e in lth], "o-",
                label="LTH ticket (its last round)")
        mean, err = copies(lth, "stability")
        ax.errorbar(xs_lth, mean, yerr=err, fmt="s--", capsize=3, label="LTH copies (2 orders)")
    if uni_names:
        ax.plot(xs_uni, [100 * summary[m]["ticket"]["test_accuracy"] for m in uni_names], "D",
                color="C2", label="Uni* ticket (method's own)")
        mean, err = copies([summary[m] for m in uni_names], "stability_from_rewind")
        ax.errorbar(xs_uni, mean, yerr=err, fmt="s", color="C3", capsize=3,
                    label="Uni* copies from rewind state")
    dense_acc = summary["dense"].get("test_accuracy_after_T")
    if dense_acc is not None:
        ax.axhline(100 * dense_acc, color="k", lw=1, label="dense after T")
        ax.axhspan(100 * (dense_acc - FLAGS.matching_tolerance), 100 * dense_acc, color="k",
                   alpha=0.08)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy at {100 * FLAGS.sparsity:.1f}% sparsity")

    ax = axes[1]
    if lth:
        ax.plot(xs_lth, [100 * e["stability"]["instability"]["barrier"] for e in lth], "o-",
                label="LTH")
    for key, marker, name in (("stability_from_rewind", "s", "from rewind state"),
                              ("stability_from_init", "x", "from init (control)")):
        pts = [(x, 100 * summary[m][key]["instability"]["barrier"])
               for x, m in zip(xs_uni, uni_names) if key in summary[m]]
        if pts:
            ax.plot(*zip(*pts), marker, ms=8, linestyle="none", label=f"Uni* {name}")
    if "stability_from_init" in summary["dense"]:
        ax.axhline(100 * summary["dense"]["stability_from_init"]["instability"]["barrier"],
                   color="gray", ls=":", label="dense from init")
    ax.axhline(100 * analysis.STABLE_THRESHOLD, color="r", lw=1, ls="--", label="2% (stable below)")
    ax.set_ylabel("instability (error barrier, pp)")
    ax.set_title("Instability of the two copies")

    ax = axes[2]
    if lth:
        ax.plot(xs_lth, [e["stability"]["distance"]["relative"] for e in lth], "o-", label="LTH")
    for key, marker, name in (("stability_from_rewind", "s", "from rewind state"),
                              ("stability_from_init", "x", "from init (control)")):
        pts = [(x, summary[m][key]["distance"]["relative"])
               for x, m in zip(xs_uni, uni_names) if key in summary[m]]
        if pts:
            ax.plot(*zip(*pts), marker, ms=8, linestyle="none", label=f"Uni* {name}")
    if "stability_from_init" in summary["dense"]:
        ax.axhline(summary["dense"]["stability_from_init"]["distance"]["relative"],
                   color="gray", ls=":", label="dense from init")
    ax.set_ylabel("relative L2 distance between copies")
    ax.set_title("Distance between the two copies")

    for ax in axes:
        ax.set_xticks(xs_lth + xs_uni)
        ax.set_xticklabels(labels + uni_labels, fontsize=8)
        ax.set_xlabel("rewind point k (% of T)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{FLAGS.dataset}/{FLAGS.model}, seed {FLAGS.seed}: T = {FLAGS.epochs} epochs "
                 f"({summary['protocol']['T_steps']} iterations)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _flag_names():
    return sorted(RUN_FLAGS)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    _check_flags({name: FLAGS[name].value for name in _flag_names()})
    unknown = set(FLAGS.uni_methods) - {"unilth", "unidlth"}
    if unknown:
        raise errors.UsageError(f"--uni_methods takes unilth and/or unidlth, not {sorted(unknown)}.")
    run = Run()
    print(f"Stability sweep on {FLAGS.dataset}/{FLAGS.model}: T = {FLAGS.epochs} epochs = "
          f"{run.total_steps} iterations; LTH {FLAGS.lth_rounds} rounds at "
          f"{100 * run.prune_rate:.2f}%/round (planned sparsity "
          f"{100 * run.planned_sparsity:.2f}%); rewind points "
          f"{dict(zip(FLAGS.rewind_points, run.rewind_steps))}; output {FLAGS.output_dir}",
          flush=True)
    dense = run.dense() if FLAGS.dense_reference else {}
    lth = [run.lth(f, k) for f, k in zip(run.fractions, run.rewind_steps)]
    uni = {method: run.uni(method) for method in FLAGS.uni_methods}
    summary = summarize(run, dense, lth, uni)
    _write_json(_path("stability.json"), summary)
    plot(summary, _path("stability.png"))
    print(f"Wrote {_path('stability.json')} and {_path('stability.png')} "
          f"({summary['piece_seconds']:.0f} s in the pieces, "
          f"{summary['wall_seconds_this_attempt']:.0f} s this attempt).")
    return 0


def run(argv=None):
    """The program: defines the flags and runs `main` (absl parses `argv`,
    default sys.argv)."""
    with errors.one_line(lambda: FLAGS["verbose"].value >= 3 if "verbose" in FLAGS else False):
        define_flags()
        app.run(main, argv=argv)


if __name__ == "__main__":
    run()
