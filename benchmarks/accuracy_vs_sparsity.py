"""Accuracy against sparsity, and the cost of each ticket, for every method.

Runs the grid (method x target sparsity x seed) of MNIST / LeNet-300-100
tickets, one `examples/find_ticket.py` run (its own directory under
--work_dir, resumable) per cell, then aggregates every finished run into
benchmarks/results/accuracy_vs_sparsity.{json,csv,md,png},
accuracy_vs_steps.png and pareto_3.5_2.png. Finished runs are never run
again; a killed grid started again continues (inside a run too:
find_ticket.py resumes).

    python benchmarks/accuracy_vs_sparsity.py --data_dir=$TFDS_DATA_DIR
    python benchmarks/accuracy_vs_sparsity.py --aggregate_only

`--reuse_dir` links in a finished run another benchmark made with the same
command (`find_reusable`) instead of training it again; `--lock` makes every
run hold a shared flock while it trains.

One protocol for all methods (PROTOCOL below, written into the JSON): Adam,
learning rate 6e-4, batch 60, 5,000 validation examples held out; LTH trains
`lth_epochs_per_round` per round (its controls 1 and 2), the dense baseline
and the random control `dense_epochs` / `random_epochs`, UniLTH/UniDLTH (and
unilth_retrain_k) within one `uni_epochs` budget, DLTH regularizes then
fine-tunes within `dlth_epochs` (its library defaults). `random_equal` is the
random control trained for as many epochs as the UniDLTH run of its density
and seed took (its results.json `total.epochs`): the same training steps,
with that run's allocation (MASK_FLAGS).
"""

import csv
import functools
import json
import os
import re
import subprocess
import sys
import time
from concurrent import futures

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provenance  # noqa: E402  (benchmarks/provenance.py)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"),
                    "TFDS data dir holding --dataset.")
flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist"],
                  "The grid's dataset; another than mnist names its outputs (grid_id).")
flags.DEFINE_enum("model", "lenet300_100", ["lenet300_100", "conv2"],
                  "The grid's model; another than lenet300_100 names its outputs (grid_id).")
flags.DEFINE_float("learning_rate", None, "Adam's learning rate for every run (default: "
                   "PROTOCOL's 6e-4, or the one --step=tune chose for this grid).")
flags.DEFINE_enum("step", "grid", ["grid", "tune"],
                  "grid: run and aggregate the grid; tune: train the dense network at each "
                  "--tune_lrs (seed 0) and choose the learning rate on validation accuracy "
                  "only (written to <output_dir>/accuracy_vs_sparsity<grid_id>_tune.json, "
                  "which the grid then reads).")
flags.DEFINE_list("tune_lrs", ["3e-4", "6e-4", "1.2e-3"], "Learning rates --step=tune tries.")
flags.DEFINE_string("work_dir", None, "One directory per run (checkpoints, ticket, "
                    "results.json); default benchmarks/runs (MNIST / LeNet) or "
                    "benchmarks/runs/grid<grid_id>.")
flags.DEFINE_string("output_dir", os.path.join(ROOT, "benchmarks", "results"),
                    "Where the aggregated JSON, CSV and plots go.")
flags.DEFINE_list("methods", ["dense", "random", "lth", "lth_rewind", "lth_e1", "lth_e2",
                              "lth_rewind_e1", "lth_rewind_e2", "dlth", "unilth",
                              "unilth_retrain_k", "unidlth", "random_equal"],
                  "Methods of the grid (random_equal needs unidlth's runs).")
flags.DEFINE_list("sparsities", ["0.8", "0.9", "0.965", "0.98"],
                  "Target sparsities (LTH instead runs its whole trajectory).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_integer("parallel", 2, "Runs at a time (each is one process).")
flags.DEFINE_boolean("aggregate_only", False, "Only aggregate the finished runs.")
flags.DEFINE_string("readme", os.path.join(ROOT, "benchmarks", "README.md"),
                    "Markdown file whose results section (between the markers) the "
                    "aggregation rewrites; empty: none.")
flags.DEFINE_list("reuse_dir", [], "Directories of finished runs (e.g. stage2_confirm's "
                  "benchmarks/runs/tuning_stage2): a grid run launched there with the same "
                  "flags is linked into --work_dir instead of run again (JSON: reused).")
flags.DEFINE_list("restore_from", [], "Aggregated JSONs of this grid (its --output_dir's "
                  "accuracy_vs_sparsity<grid_id>.json): each finished run they record whose "
                  "directory is gone is written back as a results.json of what the JSON "
                  "holds (final, total, rounds, flags; marked restored_from), so the grid "
                  "runs only what is missing (JSON: reused).")
flags.DEFINE_string("lock", None, "A file every run holds with flock(1) while it trains, "
                    "shared with other benchmarks (one training process at a time).")
flags.DEFINE_string("protocol_note", "", "Where and how the runs ran, when not through "
                    "find_ticket.py here (e.g. grid_keras3.py on Keras 3 / JAX on a GPU): "
                    "recorded as the protocol's runner.")
flags.DEFINE_float("lth_final_sparsity", 0.985, "Where LTH's trajectory stops (1.5% density).")
flags.DEFINE_multi_string("method_flag", [],
                          "METHOD:--flag=value, repeatable: an extra find_ticket.py flag for "
                          "every run of one grid method (e.g. unilth:--round_plan=imp; "
                          "all:--train_limit=2000 for every run, e.g. a smoke test in a "
                          "separate --work_dir). Given last, it wins over the grid's own "
                          "flags. The flags each run had are in the JSON's run_flags.")

# LTH's rows: (epochs per round, rewind step k). lth / lth_rewind are the
# full-length LTH; the _e1 / _e2 rows are the short-round controls (IMP at a
# few epochs a round), which give IMP's accuracy at UniLTH's cost.
LTH_ROWS = {"lth": (10, 0), "lth_rewind": (10, 500), "lth_e1": (1, 0), "lth_e2": (2, 0),
            "lth_rewind_e1": (1, 500), "lth_rewind_e2": (2, 500)}

PROTOCOL = {
    "dataset": "mnist (55,000 train / 5,000 validation held out / 10,000 test)",
    "model": "lenet300_100",
    "optimizer": "adam", "learning_rate": 6e-4, "batch_size": 60,
    "dense_epochs": 30, "random_epochs": 20,
    "lth_epochs_per_round": 10, "lth_short_epochs_per_round": [1, 2], "lth_prune_rate": 0.2,
    "lth_rewind_step": 500, "lth_final_density": 0.015,
    "uni_epochs": 60, "dlth_epochs": 30,
    "method_defaults": (
        "every hyperparameter not named here is the library's default: UniLTH/UniDLTH "
        "--epochs=60 is the whole budget (5 geometric rounds of 2 epochs, patience 3, "
        "min_finetune_epochs 5); unilth_retrain_k adds its retrain_epochs (20) from the "
        "stage-1 rewind point, counted in its steps; DLTH --epochs=30 is the whole budget "
        "(10 regularization epochs, lambda growing linearly to 1 over the first half of them "
        "(--growth=relative, --growth_fraction=0.5), then finetune_epochs=20); LTH "
        "--epochs_per_round=E; the fast path (--steps_per_execution=auto --jit_compile=auto)"),
    "random_equal": "the random control trained for the UniDLTH run's total.epochs at the "
                    "same density and seed (the same number of training steps), its mask "
                    "drawn with that run's mask flags (allocation, block_size, "
                    "output_rate_scale)",
    "model_selection": "validation only (dense: its best val_accuracy epoch; random, LTH and "
                       "DLTH: the last epoch of training; UniLTH/UniDLTH: the best val_loss "
                       "epoch of fine-tuning; unilth_retrain_k: the last retraining epoch); "
                       "test never used for choices",
    "changes_from_previous_grid": [
        "LTH: --epochs_per_round=10 (the previous grid's --epochs=10 meant the same, per "
        "round); new controls at 1 and 2 epochs a round (k = 0 and k = 500)",
        "DLTH: library defaults at --epochs=30, lambda growth relative to the 10 "
        "regularization epochs (reaches 1 after 4,585 steps); the previous grid used the "
        "absolute growth +1e-3 every 5 steps (reaching 1 after 5,000 steps), also 10 "
        "regularization + 20 fine-tuning epochs",
        "new rows: random_equal (random control at UniDLTH's steps) and unilth_retrain_k",
        "the fast path (chunks of 100 steps, XLA) and the data order as a function of "
        "(seed, epoch): numbers differ slightly from the previous grid at the same settings",
        "the previous grid's protocol said the random control keeps its best val_accuracy "
        "epoch; it keeps its last epoch (it did then too)"],
}


def _flag(name):
    """A flag's value, or its default where absl has not parsed the command
    line (the tests import this module)."""
    return FLAGS[name].value if FLAGS.is_parsed() else FLAGS[name].default


def grid_id(dataset=None, model=None):
    """'' for the MNIST / LeNet-300-100 grid, else "_<dataset>" and "_<model>"
    for what differs: the suffix of the grid's run directory, outputs and
    README section, so grids on other data never mix with the MNIST one."""
    dataset, model = dataset or _flag("dataset"), model or _flag("model")
    return ("" if dataset == "mnist" else f"_{dataset}") + (
        "" if model == "lenet300_100" else f"_{model}")


def work_dir():
    """--work_dir, or the grid's own directory under benchmarks/runs."""
    if _flag("work_dir"):
        return _flag("work_dir")
    gid = grid_id()
    return os.path.join(ROOT, "benchmarks", "runs", *([f"grid{gid}"] if gid else []))


DATASETS = {"mnist": "mnist (55,000 train / 5,000 validation held out / 10,000 test)",
            "fashion_mnist": "fashion_mnist (55,000 train / 5,000 validation held out / "
                             "10,000 test)"}


def tune_path():
    return os.path.join(_flag("output_dir"), f"accuracy_vs_sparsity{grid_id()}_tune.json")


def learning_rate():
    """--learning_rate, else the one --step=tune chose for this grid (on
    validation), else PROTOCOL's; and where it came from."""
    if _flag("learning_rate"):
        return _flag("learning_rate"), "--learning_rate"
    if grid_id() and os.path.exists(tune_path()):
        with open(tune_path()) as f:
            return float(json.load(f)["chosen"]["learning_rate"]), os.path.relpath(
                tune_path(), ROOT)
    return PROTOCOL["learning_rate"], "PROTOCOL (the MNIST grid's)"


def protocol():
    """PROTOCOL for this grid: its dataset, model and learning rate."""
    lr, source = learning_rate()
    out = dict(PROTOCOL, dataset=DATASETS[_flag("dataset")], model=_flag("model"),
               learning_rate=lr)
    if _flag("protocol_note"):
        out["runner"] = _flag("protocol_note")
    if grid_id():
        out["learning_rate_source"] = source
        out["changes_from_previous_grid"] = [
            "the MNIST grid's protocol on another dataset/model; the learning rate chosen on "
            "dense validation accuracy only (learning_rate_source)"]
    return out


def method_flags():
    """{grid method (or "all"): [extra flags]} from --method_flag."""
    extra = {}
    for item in FLAGS.method_flag:
        method, sep, flag = item.partition(":")
        if not sep or not flag.startswith("--"):
            raise app.UsageError(f"--method_flag={item}: expected METHOD:--flag=value.")
        extra.setdefault(method, []).append(flag)
    return extra


# A flag whose value is read, when the run starts, from another run's results.json.
EPOCHS_OF = re.compile(r"^--epochs=\{epochs_of:(?P<run>[^}]+)\}$")


def run_specs(methods=None, sparsities=None, seeds=None, extra=None, data_dir=None,
              lth_final_sparsity=None):
    """(name, flags) of every run of the grid (by default the flags' selection).

    random_equal's `--epochs={epochs_of:<unidlth run>}` is filled in when it
    starts (`resolve`); those runs come last, after every UniDLTH run.
    """
    methods = FLAGS.methods if methods is None else methods
    sparsities = FLAGS.sparsities if sparsities is None else sparsities
    seeds = FLAGS.seeds if seeds is None else seeds
    extra = method_flags() if extra is None else extra
    data_dir = FLAGS.data_dir if data_dir is None else data_dir
    final = FLAGS.lth_final_sparsity if lth_final_sparsity is None else lth_final_sparsity
    p = protocol()
    common = [f"--data_dir={data_dir}", f"--learning_rate={p['learning_rate']}",
              f"--batch_size={p['batch_size']}", f"--optimizer={p['optimizer']}",
              "--verbose=0"]
    # Named only off the MNIST / LeNet grid, whose commands (and their reuse) stay as they were.
    common += [f"--dataset={_flag('dataset')}"] * (_flag("dataset") != "mnist")
    common += [f"--model={_flag('model')}"] * (_flag("model") != "lenet300_100")
    specs, last = [], []
    # Per seed, LTH's long trajectories first, so they overlap the short runs.
    order = sorted(methods, key=lambda m: (m not in ("lth", "lth_rewind"),
                                           not m.startswith("lth")))
    for seed in seeds:
        s = [f"--seed={seed}"]
        for method in order:
            more = extra.get(method, []) + extra.get("all", [])
            if method == "dense":
                specs.append((f"dense_seed{seed}", ["--method=dense",
                                                    f"--epochs={p['dense_epochs']}"] + s + more))
            elif method in LTH_ROWS:
                per_round, k = LTH_ROWS[method]
                specs.append((f"{method}_seed{seed}", [
                    "--method=lth", f"--target_sparsity={final}",
                    f"--epochs_per_round={per_round}", f"--prune_rate={p['lth_prune_rate']}",
                    f"--rewind_step={k}"] + s + more))
            else:
                for sparsity in sparsities:
                    name = f"{method}_s{sparsity}_seed{seed}"
                    if method == "random_equal":
                        last.append((name, [
                            "--method=random", f"--target_sparsity={sparsity}",
                            f"--epochs={{epochs_of:unidlth_s{sparsity}_seed{seed}}}"] + s + more))
                        continue
                    budget = {"random": p["random_epochs"], "dlth": p["dlth_epochs"],
                              "unilth": p["uni_epochs"], "unilth_retrain_k": p["uni_epochs"],
                              "unidlth": p["uni_epochs"]}[method]
                    specs.append((name, [f"--method={method}", f"--target_sparsity={sparsity}",
                                         f"--epochs={budget}"] + s + more))
    return [(name, common + f) for name, f in specs + last]


def depends_on(run_flags):
    """The run whose results.json a spec's flags read, or None."""
    for flag in run_flags:
        m = EPOCHS_OF.match(flag)
        if m:
            return m.group("run")
    return None


# The flags that shape a random mask: random_equal takes the UniDLTH run's, so
# the control draws its mask the way that run did (e.g. --allocation=erk).
MASK_FLAGS = ("allocation", "block_size", "output_rate_scale")


@functools.lru_cache(maxsize=None)
def random_mask_defaults():
    """{mask flag: the random method's default} in this checkout's library
    (read once: every random_equal run asks)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # the library the runs use (PYTHONPATH=ROOT below)
    from tf_unilth import methods  # pylint: disable=import-outside-toplevel
    fields = {f.name: f.default for f in methods.get("random").hyperparameters()}
    return {name: fields.get(name) for name in MASK_FLAGS}


def resolve(run_flags, work_dir, mask_defaults=None):
    """The flags with `--epochs={epochs_of:run}` replaced by that run's total
    epochs, followed by the mask flags whose value in that run differs from the
    random method's default (MASK_FLAGS; flags given after it still win); None
    when that run has no results.json.

    The values are the run's `hyperparameters` (every one as it ran, defaults
    included), so a UniDLTH run on its default ERK allocation gives an ERK
    control; a run recorded before those existed gives its set `flags`."""
    out = []
    for flag in run_flags:
        m = EPOCHS_OF.match(flag)
        if m:
            path = os.path.join(work_dir, m.group("run"), "results.json")
            if not os.path.exists(path):
                return None
            with open(path) as f:
                done = json.load(f)
            out.append(f"--epochs={done['total']['epochs']}")
            ran = done.get("hyperparameters") or done.get("flags", {})
            defaults = random_mask_defaults() if mask_defaults is None else mask_defaults
            for name in MASK_FLAGS:
                value = ran.get(name)
                if value is not None and value != defaults.get(name):
                    value = ",".join(map(str, value)) if isinstance(value, list) else value
                    out.append(f"--{name}={value}")
            continue
        out.append(flag)
    return out


# Defaults that changed: (the commit that made them the defaults, the flags
# that name them). A run whose library has that commit ran them unless it set
# those hyperparameters; an older run ran them only if its flags name them.
# tests/test_benchmark_aggregate.py checks these are the library's defaults.
CHANGED_DEFAULTS = {"unidlth": ("2ce7f15", ("--allocation=erk", "--remove_at_end"))}
_NOT_COMPARED = ("--data_dir=", "--output_dir=")


def _flag_name(flag):
    name = flag[2:].split("=", 1)[0]
    return name[2:] if "=" not in flag and name.startswith("no") else name


@functools.lru_cache(maxsize=None)
def has_commit(commit, ancestor):
    """Whether library `commit` contains `ancestor` (False when unknown); asked
    once per (commit, ancestor), not for every grid run against every candidate."""
    if not commit:
        return False
    return subprocess.call(["git", "-C", ROOT, "merge-base", "--is-ancestor", ancestor, commit],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def command_key(run_flags, library_commit=None):
    """What a run ran, as a comparable set: its flags without the paths, plus
    the changed defaults (CHANGED_DEFAULTS) it ran without naming them, when
    its library (`library_commit`, None: this checkout) had them."""
    key = {f for f in run_flags if not f.startswith(_NOT_COMPARED)}
    method = next((f.split("=", 1)[1] for f in run_flags if f.startswith("--method=")), None)
    if method in CHANGED_DEFAULTS:
        since, defaults = CHANGED_DEFAULTS[method]
        if library_commit is None or has_commit(library_commit, since):
            named = {_flag_name(f) for f in key}
            key |= {f for f in defaults if _flag_name(f) not in named}
    return frozenset(key)


def find_reusable(run_flags, reuse_dirs):
    """A finished run under one of `reuse_dirs` that ran what `run_flags` run
    today (`command_key`), or None. Another benchmark (stage2_confirm) ran many of
    this grid's cells with exactly these flags; the pinned runs are unchanged
    since its library (be78c67/889eb17), so running them again would spend
    compute for the same numbers."""
    key = command_key(run_flags)
    for base in reuse_dirs:
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            run = os.path.join(base, name)
            launch = os.path.join(run, "launch.json")
            if os.path.exists(os.path.join(run, "results.json")) and os.path.exists(launch):
                with open(launch) as f:
                    done = json.load(f)
                if command_key(done["flags"], launch_commit(done) or "") == key:
                    return run
    return None


def launch_commit(launch):
    """The library commit a launch.json records (stage2_confirm's or this grid's)."""
    return launch.get("library_commit") or launch.get("git", {}).get("commit")


def run_one(name, run_flags, wait_for=None):
    out = os.path.join(work_dir(), name)
    if os.path.exists(os.path.join(out, "results.json")):
        return name, "done before", 0.0
    if wait_for is not None:
        wait_for.result()  # submitted earlier, so already running: no deadlock
    resolved = resolve(run_flags, work_dir())
    if resolved is None:
        return name, f"skipped ({depends_on(run_flags)} has no results.json)", 0.0
    same = find_reusable(resolved, FLAGS.reuse_dir)
    if same is not None:  # the same command, finished elsewhere: linked, not re-run
        os.symlink(os.path.abspath(same), out)
        return name, f"reused {same}", 0.0
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "launch.json"), "w") as f:
        json.dump({"flags": resolved, "git": provenance.git_info(), "started_utc": time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime())}, f, indent=1)
    start = time.time()
    with open(os.path.join(out, "stdout.log"), "a") as log:
        lock = ["flock", FLAGS.lock] if FLAGS.lock else []  # one training process at a time
        code = subprocess.call(
            lock + [sys.executable, os.path.join(ROOT, "examples", "find_ticket.py"),
                    f"--output_dir={out}"] + resolved, stdout=log, stderr=subprocess.STDOUT,
            # This checkout's library, whatever `pip install -e` points at now.
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                     PYTHONPATH=os.pathsep.join([ROOT] + [os.environ.get("PYTHONPATH", "")])))
    return name, "ok" if code == 0 else f"failed ({code}; see {out}/stdout.log)", \
        time.time() - start


# --------------------------------------------------------------------------
# Aggregation

RUN_NAME = re.compile(r"^(?P<method>.+?)(?:_s(?P<sparsity>[0-9.]+))?_seed(?P<seed>\d+)$")


def parse_name(name):
    """(method, target sparsity or None, seed) of a run directory's name."""
    m = RUN_NAME.match(name)
    if m is None:
        raise ValueError(f"not a grid run name: {name}")
    return (m.group("method"), None if m.group("sparsity") is None else
            float(m.group("sparsity")), int(m.group("seed")))


def load_runs():
    runs = {}
    for name in sorted(os.listdir(work_dir())) if os.path.isdir(work_dir()) else []:
        path = os.path.join(work_dir(), name, "results.json")
        if os.path.exists(path) and RUN_NAME.match(name):
            with open(path) as f:
                runs[name] = json.load(f)
    return runs


def is_lth(method):
    return method in LTH_ROWS or method.startswith("lth")


def points(runs):
    """One point per (method, seed, density): the ticket and what it cost."""
    out = []
    for name, r in runs.items():
        method, _, seed = parse_name(name)
        if is_lth(method):
            for rec in r["rounds"]:  # the whole trajectory, round by round
                out.append(dict(method=method, seed=seed, density=1 - rec["sparsity"],
                                test_accuracy=rec["test_accuracy"],
                                val_accuracy=rec["val_accuracy"],
                                train_steps=rec["train_steps"],
                                wall_seconds=rec["wall_seconds"], round=rec["round"]))
        else:
            out.append(dict(method=method, seed=seed, density=1 - r["final"]["sparsity"],
                            test_accuracy=r["final"]["test_accuracy"],
                            val_accuracy=r["final"]["val_accuracy"],
                            train_steps=r["total"]["train_steps"],
                            wall_seconds=r["total"]["wall_seconds"], round=None,
                            epochs=r["total"].get("epochs")))
    return out


def summarize(pts):
    """Mean and std over seeds per (method, density rounded to 0.01%)."""
    groups = {}
    for p in pts:
        key = (p["method"], round(p["density"], 4))
        groups.setdefault(key, []).append(p)
    rows = []
    for (method, density), ps in sorted(groups.items()):
        acc = np.array([p["test_accuracy"] for p in ps])
        val = np.array([p["val_accuracy"] for p in ps])
        steps = np.array([p["train_steps"] for p in ps])
        secs = np.array([p["wall_seconds"] for p in ps])
        # density: the group's key (rounded to 0.01%); density_exact: the mean of
        # the runs' densities (interpolations use it).
        rows.append(dict(method=method, density=density, seeds=len(ps),
                         test_accuracy_mean=float(acc.mean()), test_accuracy_std=float(acc.std()),
                         train_steps_mean=float(steps.mean()), wall_seconds_mean=float(secs.mean()),
                         val_accuracy_mean=float(val.mean()), val_accuracy_std=float(val.std()),
                         density_exact=float(np.mean([p["density"] for p in ps]))))
    return rows


def matching(rows):
    """Sparsest density at which each method's mean accuracy >= mean dense accuracy."""
    dense = [r for r in rows if r["method"] == "dense"]
    if not dense:
        return {}, None
    bar = dense[0]["test_accuracy_mean"]
    best = {}
    for r in rows:
        if r["method"] != "dense" and r["test_accuracy_mean"] >= bar:
            if r["method"] not in best or r["density"] < best[r["method"]]["density"]:
                best[r["method"]] = r
    return {m: {"density": r["density"], "test_accuracy_mean": r["test_accuracy_mean"],
                "train_steps_mean": r["train_steps_mean"]} for m, r in best.items()}, bar


# --------------------------------------------------------------------------
# Values at a density: LTH interpolated between its rounds, the others as run

def interpolate_log_density(trajectory, density, keys):
    """{key: value} at `density` along `trajectory` ([(density, {key: value})]),
    linear in log(density) between the two rounds around it; None outside."""
    traj = sorted(trajectory, key=lambda t: -t[0])
    for (d0, v0), (d1, v1) in zip(traj, traj[1:]):
        if d1 <= density <= d0:
            if d0 == d1:
                return {k: v1[k] for k in keys}
            w = (np.log(d0) - np.log(density)) / (np.log(d0) - np.log(d1))
            return {k: float(v0[k] + w * (v1[k] - v0[k])) for k in keys}
    if len(traj) == 1 and abs(traj[0][0] - density) < 5e-5:
        return {k: traj[0][1][k] for k in keys}
    return None


ROW_KEYS = ("test_accuracy_mean", "train_steps_mean", "val_accuracy_mean")


def _exact(row):
    return row.get("density_exact", row["density"])


def row_at(rows, method, density):
    """Mean test/val accuracy and steps of `method` at `density`: LTH's rows
    interpolated in log density between their rounds, the others' row at that
    density (within 0.05% of it). None when there is none."""
    if is_lth(method):
        traj = [(_exact(r), r) for r in rows if r["method"] == method]
        v = interpolate_log_density(traj, density, [k for k in ROW_KEYS
                                                    if all(k in r for _, r in traj)])
        if v is None:
            return None
        seeds = min(r["seeds"] for _, r in traj)
        return dict(v, method=method, density=density, seeds=seeds, interpolated=True)
    r = next((r for r in rows if r["method"] == method and abs(r["density"] - density) < 5e-4),
             None)
    return None if r is None else dict(r, interpolated=False)


def seeds_at(pts, method, density):
    """Per-seed {seed, test_accuracy, val_accuracy, train_steps} of `method` at
    `density` (LTH: interpolated in log density along each seed's rounds)."""
    keys = ("test_accuracy", "val_accuracy", "train_steps")
    out = []
    for seed in sorted({p["seed"] for p in pts if p["method"] == method}):
        ps = [p for p in pts if p["method"] == method and p["seed"] == seed]
        if is_lth(method):
            v = interpolate_log_density([(p["density"], p) for p in ps], density, keys)
        else:
            v = next(({k: p[k] for k in keys} for p in ps
                      if abs(p["density"] - density) < 5e-4), None)
        if v is not None:
            out.append(dict(v, seed=seed))
    return out


def lth_steps_to(rows, density, method="lth"):
    """Training steps LTH spends to reach `density` (mean over seeds).

    LTH's rounds land on its own densities (0.8^i, output layer at half rate),
    not on the grid's, so the cumulative steps are interpolated linearly in
    log(density) between the two rounds around `density`. None outside the
    trajectory.
    """
    traj = [(_exact(r), r) for r in rows if r["method"] == method]
    v = interpolate_log_density(traj, density, ["train_steps_mean"])
    return None if v is None else v["train_steps_mean"]


# IMP at a given number of steps: the k = 0 LTH rows (1, 2 and 10 epochs a round).
IMP_FAMILY = ("lth_e1", "lth_e2", "lth")
IMP_REWIND_FAMILY = ("lth_rewind_e1", "lth_rewind_e2", "lth_rewind")


def imp_at_steps(rows, density, steps, family=IMP_FAMILY):
    """IMP's mean test accuracy at `density` for a budget of `steps` training steps.

    Each row of `family` (IMP at E epochs a round) reaches `density` after
    S_E steps with mean test accuracy A_E (both interpolated linearly in log
    density between its rounds). Along the points (S_E, A_E), sorted by
    steps, A is interpolated linearly in log(steps) at `steps`. Below the
    cheapest row's S_E (above the dearest's) the accuracy is that row's and
    `clamped` says so (below: a cheaper IMP would be no better, so this
    favours IMP). None unless both short-round rows (the first two of the
    family) reach `density`."""
    found = {m: row_at(rows, m, density) for m in family}
    if any(found[m] is None for m in family[:2]) or not steps:
        return None
    pts = sorted((v["train_steps_mean"], v["test_accuracy_mean"], m)
                 for m, v in found.items() if v is not None)
    out = {"steps": steps, "points": [{"method": m, "train_steps_mean": s,
                                       "test_accuracy_mean": a} for s, a, m in pts]}
    if steps <= pts[0][0]:
        return dict(out, test_accuracy=pts[0][1], between=[pts[0][2]], clamped="below")
    if steps >= pts[-1][0]:
        return dict(out, test_accuracy=pts[-1][1], between=[pts[-1][2]], clamped="above")
    for (s0, a0, m0), (s1, a1, m1) in zip(pts, pts[1:]):
        if s0 <= steps <= s1:
            w = (np.log(steps) - np.log(s0)) / (np.log(s1) - np.log(s0))
            return dict(out, test_accuracy=float(a0 + w * (a1 - a0)), between=[m0, m1],
                        clamped=None)
    return None  # unreachable


def plot(rows, path_acc, path_cost):
    methods = sorted({r["method"] for r in rows} - {"dense"})
    dense = [r for r in rows if r["method"] == "dense"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if dense:
        m, s = 100 * dense[0]["test_accuracy_mean"], 100 * dense[0]["test_accuracy_std"]
        ax.axhspan(m - s, m + s, color="gray", alpha=0.3, label=f"dense {m:.2f}% (±std)")
    for method in methods:
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: -r["density"])
        x = [100 * r["density"] for r in rs]
        y = np.array([100 * r["test_accuracy_mean"] for r in rs])
        e = np.array([100 * r["test_accuracy_std"] for r in rs])
        ax.plot(x, y, "o" + _line(method), label=method, markersize=4, color=colour(method))
        ax.fill_between(x, y - e, y + e, alpha=0.15, color=colour(method))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of prunable weights kept, log scale)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(f"{_flag('dataset')} / {_flag('model')} tickets", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    lo = min([100 * r["test_accuracy_mean"] for r in rows] + [97.0])
    ax.set_ylim(max(lo - 0.5, 90), 99)
    fig.tight_layout()
    fig.savefig(path_acc, dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for method in methods:
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: -r["density"])
        ax.plot([r["train_steps_mean"] for r in rs], [100 * r["test_accuracy_mean"] for r in rs],
                "o" + _line(method), label=method, markersize=3 if is_lth(method) else 4,
                color=colour(method))
        # LTH has ~20 rounds: label every third so the labels stay readable.
        for r in (rs[::3] + rs[-1:] if is_lth(method) else rs):
            ax.annotate(f"{100 * r['density']:.1f}%", (r["train_steps_mean"],
                                                      100 * r["test_accuracy_mean"]),
                        fontsize=5, xytext=(2, 2), textcoords="offset points")
    if dense:
        ax.plot([dense[0]["train_steps_mean"]], [100 * dense[0]["test_accuracy_mean"]], "k*",
                markersize=9, label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("training steps from the random init to the ticket (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Cost of each ticket (labels: density; dashed: controls)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    lo = min([100 * r["test_accuracy_mean"] for r in rows] + [97.0])
    ax.set_ylim(max(lo - 0.5, 90), 99)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path_cost, dpi=130)
    plt.close(fig)


CONTROLS = ("random", "random_equal", "lth_e1", "lth_e2", "lth_rewind_e1", "lth_rewind_e2")


def _line(method):
    return "--" if method in CONTROLS else "-"


# One colour per method, the same in every plot (the grid has more methods
# than matplotlib's 10-colour cycle, which gave two methods one colour): the
# new methods strong, each baseline family in one hue, the controls muted.
COLOURS = {"unilth": "tab:blue", "unilth_retrain_k": "navy", "unidlth": "tab:red",
           "dlth": "tab:purple", "lth": "tab:orange", "lth_rewind": "saddlebrown",
           "lth_e1": "yellowgreen", "lth_e2": "tab:green", "lth_rewind_e1": "tan",
           "lth_rewind_e2": "peru", "random": "tab:gray", "random_equal": "tab:olive"}


def colour(method):
    """The method's colour (COLOURS; a method outside them: tab20 by its name)."""
    if method in COLOURS:
        return COLOURS[method]
    return plt.get_cmap("tab20")(sum(map(ord, method)) % 20)


PARETO_DENSITIES = (0.035, 0.02)


def plot_pareto(pts, rows, path, densities=PARETO_DENSITIES):
    """Test accuracy against training steps at each density, one panel each:
    every method and control at its mean ± std over seeds; LTH's rows
    interpolated in log density between their rounds (per seed), IMP's
    (k = 0 and k = 500) joined from 1 to 2 to 10 epochs a round."""
    fig, axes = plt.subplots(1, len(densities), figsize=(6 * len(densities), 4.8))
    axes = np.atleast_1d(axes)
    methods = sorted({p["method"] for p in pts} - {"dense"})
    dense = nearest(rows, "dense", 1.0)
    for ax, d in zip(axes, densities):
        if dense:
            ax.axhline(100 * dense["test_accuracy_mean"], color="gray", lw=1, ls=":",
                       label=f"dense {100 * dense['test_accuracy_mean']:.2f}%")
        for family, color in ((IMP_FAMILY, colour("lth")),
                              (IMP_REWIND_FAMILY, colour("lth_rewind"))):
            line = [row_at(rows, m, d) for m in family]
            line = sorted((v["train_steps_mean"], 100 * v["test_accuracy_mean"])
                          for v in line if v is not None)
            if len(line) > 1:
                ax.plot(*zip(*line), "-", color=color, alpha=0.4, lw=1,
                        label=f"IMP k = {LTH_ROWS[family[-1]][1]}: 1, 2, 10 epochs/round")
        for method in methods:
            vs = seeds_at(pts, method, d)
            if not vs:
                continue
            x = np.mean([v["train_steps"] for v in vs])
            y = np.array([100 * v["test_accuracy"] for v in vs])
            marker = "s" if is_lth(method) else ("^" if method in CONTROLS else "o")
            ax.errorbar([x], [y.mean()], yerr=[y.std()], fmt=marker, color=colour(method),
                        capsize=3, markersize=6, label=f"{method} ({len(vs)})")
        ax.set_xscale("log")
        ax.set_xlabel("training steps from the random init (log scale)")
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.set_title(f"{100 * d:g}% density (LTH rows: interpolated in log density "
                     "between rounds)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------
# Cost ratios, targets and the README table

# Published anchors (Frankle et al. 2020, LeNet-300-100 on MNIST).
ANCHORS = {"dense_test_accuracy": 0.983, "imp_matching_density": 0.035}
GRID_METHODS = ("random", "random_equal", "dlth", "unilth", "unilth_retrain_k", "unidlth")
TABLE_METHODS = ("random", "random_equal", "lth", "lth_rewind", "lth_e1", "lth_e2",
                 "lth_rewind_e1", "lth_rewind_e2", "dlth", "unilth", "unilth_retrain_k",
                 "unidlth")


def nearest(rows, method, density):
    """The row of `method` whose density is nearest `density` in log scale."""
    rs = [r for r in rows if r["method"] == method]
    return min(rs, key=lambda r: abs(np.log(r["density"] / density))) if rs else None


def cost_ratios(rows):
    """Steps of each grid method over LTH's (k = 0) steps to the same density."""
    out = []
    for r in rows:
        if r["method"] in GRID_METHODS:
            lth = lth_steps_to(rows, r["density"])
            if lth:
                out.append(dict(method=r["method"], density=r["density"],
                                train_steps_mean=r["train_steps_mean"], lth_steps=lth,
                                ratio=r["train_steps_mean"] / lth))
    return out


# The issue "UniLTH and UniDLTH must earn their place".
ISSUE = {"densities": (0.035, 0.02), "within_lth_points": 0.0010, "above_imp_points": 0.0020,
         "max_steps_ratio": 0.30, "above_random_equal_points": 0.0030}


def unilth_target(rows, method="unilth"):
    """Target 1 for `method` (unilth; unilth_retrain_k for information): at 3.5%
    within 0.10 points of LTH (k = 0, 10-epoch rounds, interpolated in log
    density), >= 0.20 points above IMP at the same steps (`imp_at_steps`) at
    3.5% and 2%, and <= 0.30x LTH's steps at both. `met` None until every
    number is there."""
    by = {}
    for d in ISSUE["densities"]:
        u, lth = row_at(rows, method, d), row_at(rows, "lth", d)
        imp = imp_at_steps(rows, d, u and u["train_steps_mean"])
        imp_k = imp_at_steps(rows, d, u and u["train_steps_mean"], IMP_REWIND_FAMILY)
        by[d] = {
            method: u and u["test_accuracy_mean"], "steps": u and u["train_steps_mean"],
            "seeds": u and u["seeds"], "lth": lth and lth["test_accuracy_mean"],
            "lth_steps": lth and lth["train_steps_mean"],
            "steps_ratio": u["train_steps_mean"] / lth["train_steps_mean"] if u and lth else None,
            "minus_lth": u["test_accuracy_mean"] - lth["test_accuracy_mean"] if u and lth
            else None,
            "imp_at_steps": imp, "minus_imp": u["test_accuracy_mean"] - imp["test_accuracy"]
            if imp else None,
            "imp_rewind_at_steps": imp_k, "minus_imp_rewind":
            u["test_accuracy_mean"] - imp_k["test_accuracy"] if imp_k else None}
    first = by[ISSUE["densities"][0]]

    def decide(values, test):
        return None if any(v is None for v in values) else all(test(v) for v in values)

    parts = {
        "within_0.10_of_lth_at_3.5pct": decide(
            [first["minus_lth"]], lambda v: v >= -ISSUE["within_lth_points"] - 1e-12),
        "0.20_above_imp_at_same_steps": decide(
            [b["minus_imp"] for b in by.values()],
            lambda v: v >= ISSUE["above_imp_points"] - 1e-12),
        "steps_within_0.30x_lth": decide(
            [b["steps_ratio"] for b in by.values()],
            lambda v: v <= ISSUE["max_steps_ratio"] + 1e-12)}
    met = None if any(v is None for v in parts.values()) else all(parts.values())
    return {"met": met, "parts": parts, "by_density": by}


def unidlth_target(rows):
    """Target 2: UniDLTH at or above DLTH at every density it ran at, and >=
    0.30 points above random_equal (the random control at UniDLTH's steps) at
    3.5% and 2%."""
    densities = sorted({r["density"] for r in rows if r["method"] == "unidlth"}, reverse=True)
    vs_dlth = []
    for d in densities:
        u, dl = row_at(rows, "unidlth", d), row_at(rows, "dlth", d)
        vs_dlth.append(dict(density=d, unidlth=u["test_accuracy_mean"],
                            dlth=dl and dl["test_accuracy_mean"],
                            minus_dlth=dl and u["test_accuracy_mean"] - dl["test_accuracy_mean"]))
    vs_random = {}
    for d in ISSUE["densities"]:
        u, rnd = row_at(rows, "unidlth", d), row_at(rows, "random_equal", d)
        vs_random[d] = dict(unidlth=u and u["test_accuracy_mean"],
                            random_equal=rnd and rnd["test_accuracy_mean"],
                            unidlth_steps=u and u["train_steps_mean"],
                            random_equal_steps=rnd and rnd["train_steps_mean"],
                            minus_random_equal=u["test_accuracy_mean"] - rnd["test_accuracy_mean"]
                            if u and rnd else None)
    parts = {
        "at_or_above_dlth_everywhere": None if not vs_dlth or any(
            c["dlth"] is None for c in vs_dlth) else all(c["minus_dlth"] >= 0 for c in vs_dlth),
        "0.30_above_random_equal": None if any(
            c["minus_random_equal"] is None for c in vs_random.values()) else all(
            c["minus_random_equal"] >= ISSUE["above_random_equal_points"] - 1e-12
            for c in vs_random.values())}
    met = None if any(v is None for v in parts.values()) else all(parts.values())
    return {"met": met, "parts": parts, "vs_dlth": vs_dlth, "vs_random_equal": vs_random}


def targets(rows, match, dense_acc, ratios):
    """The issues' targets, each with the numbers that decide it (None: no data yet).

    The issue "UniLTH and UniDLTH must earn their place": `unilth_earns_its_place`
    (and the same test of unilth_retrain_k, for information) and
    `unidlth_earns_its_place`. The earlier issue's targets are kept as they were.
    """
    def row(method, density):
        return next((r for r in rows if r["method"] == method
                     and abs(r["density"] - density) < 5e-4), None)

    out = {"unilth_earns_its_place": unilth_target(rows),
           "unilth_retrain_k_same_test": unilth_target(rows, "unilth_retrain_k"),
           "unidlth_earns_its_place": unidlth_target(rows)}
    uni = [r for r in rows if r["method"] == "unilth" and r["density"] <= 0.0205
           and dense_acc is not None and r["test_accuracy_mean"] >= dense_acc]
    ratio = {(c["method"], c["density"]): c["ratio"] for c in ratios}
    have = dense_acc is not None and row("unilth", 0.02) is not None
    out["unilth_matching_at_2pct_within_quarter_lth_steps"] = {
        "met": any(ratio.get(("unilth", r["density"]), 9) <= 0.25 for r in uni) if have
        else None,
        "unilth_sparsest_matching_density": match.get("unilth", {}).get("density"),
        "cost_ratio_at_2pct": next((c["ratio"] for c in ratios if c["method"] == "unilth"
                                    and abs(c["density"] - 0.02) < 5e-4), None)}
    densities = sorted({r["density"] for r in rows if r["method"] == "unidlth"})
    cmp = []
    for d in densities:
        u, dl, rnd = row("unidlth", d), row("dlth", d), row("random", d)
        cmp.append(dict(density=d, unidlth=u["test_accuracy_mean"],
                        dlth=dl and dl["test_accuracy_mean"],
                        random=rnd and rnd["test_accuracy_mean"]))
    out["unidlth_at_or_above_dlth_everywhere"] = {
        "met": all(c["unidlth"] >= c["dlth"] for c in cmp)
        if cmp and all(c["dlth"] is not None for c in cmp) else None, "by_density": cmp}
    sparse = [c for c in cmp if c["density"] <= 0.0355]
    out["unidlth_1pt_above_random_at_3_5pct_and_sparser"] = {
        "met": all(c["unidlth"] - c["random"] >= 0.01 for c in sparse)
        if sparse and all(c["random"] is not None for c in sparse) else None,
        "margins": {c["density"]: None if c["random"] is None else c["unidlth"] - c["random"]
                    for c in sparse}}
    near = nearest(rows, "lth", ANCHORS["imp_matching_density"])
    dense_row = nearest(rows, "dense", 1.0)
    out["lth_reproduces_anchor"] = {
        "dense_ours": dense_acc, "dense_published": ANCHORS["dense_test_accuracy"],
        "dense_std": dense_row and dense_row["test_accuracy_std"],
        "lth_near_anchor": near and {k: near[k] for k in (
            "density", "test_accuracy_mean", "test_accuracy_std", "seeds")},
        "lth_sparsest_matching_density": match.get("lth", {}).get("density"),
        "published_imp_matching_density": ANCHORS["imp_matching_density"]}
    return out


def pct(x, std=None, n=None):
    if x is None:
        return "–"
    s = f"{100 * x:.2f}"
    if std is not None and n != 1:
        s += f" ± {100 * std:.2f}"
    return s + (f" ({n} seed{'s' if n > 1 else ''})" if n is not None and n != 3 else "")


def points_diff(x):
    return "–" if x is None else f"{100 * x:+.2f}"


def _steps(x):
    return "–" if x is None else f"{x:,.0f}"


VERDICT = {True: "**met**", False: "**not met**", None: "not decided yet (runs missing)"}


def at_densities_table(pts, densities=PARETO_DENSITIES):
    """Every method at the targets' densities (the numbers of pareto_3.5_2.png)."""
    lines = ["| method | " + " | ".join(f"{100 * d:g}%: test acc | steps" for d in densities)
             + " |", "|---|" + "---:|---:|" * len(densities)]
    for method in ("dense",) + TABLE_METHODS:
        if method == "dense":
            continue
        cells = []
        for d in densities:
            vs = seeds_at(pts, method, d)
            if not vs:
                cells += ["–", "–"]
                continue
            acc = np.array([v["test_accuracy"] for v in vs])
            cells += [pct(float(acc.mean()), float(acc.std()), len(vs)),
                      _steps(float(np.mean([v["train_steps"] for v in vs])))]
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def issue_lines(tg):
    """The issue's targets as README bullets, every number from `tg`."""
    lines = []
    for key, label in (("unilth_earns_its_place", "unilth"),
                       ("unilth_retrain_k_same_test", "unilth_retrain_k")):
        t = tg[key]
        by = t["by_density"]
        head = ("- (1) UniLTH" if label == "unilth" else
                "- The same test for unilth_retrain_k (information, not a target)")
        parts = []
        for d, b in by.items():
            imp, imp_k = b["imp_at_steps"], b["imp_rewind_at_steps"]
            if imp is None:
                how = "–"
            elif imp["clamped"] is None:
                how = f"between {' and '.join(imp['between'])}"
            else:
                end = imp["points"][0 if imp["clamped"] == "below" else -1]
                how = (f"{imp['between'][0]}'s value: {label}'s steps are {imp['clamped']} its "
                       f"{_steps(end['train_steps_mean'])}")
            ratio = "–" if b["steps_ratio"] is None else f"{b['steps_ratio']:.2f}x"
            parts.append(
                f"{100 * d:g}%: {pct(b[label])} at {_steps(b['steps'])} steps ({ratio} LTH's "
                f"{_steps(b['lth_steps'])}); LTH {pct(b['lth'])} ({points_diff(b['minus_lth'])} "
                f"points); IMP at the same steps {pct(imp and imp['test_accuracy'])} ({how}; "
                f"{points_diff(b['minus_imp'])} points; with k = 500: "
                f"{pct(imp_k and imp_k['test_accuracy'])}, {points_diff(b['minus_imp_rewind'])})")
        p = t["parts"]
        lines.append(
            f"{head}: {VERDICT[t['met']]}. Within 0.10 points of LTH at 3.5%: "
            f"{VERDICT[p['within_0.10_of_lth_at_3.5pct']]}; >= 0.20 points above IMP at the "
            f"same steps at 3.5% and 2%: {VERDICT[p['0.20_above_imp_at_same_steps']]}; <= "
            f"0.30x LTH's steps at both: {VERDICT[p['steps_within_0.30x_lth']]}. "
            + "; ".join(parts) + ".")
    u = tg["unidlth_earns_its_place"]
    p = u["parts"]
    lines.append(
        f"- (2) UniDLTH: {VERDICT[u['met']]}. At or above DLTH at every density: "
        f"{VERDICT[p['at_or_above_dlth_everywhere']]} ("
        + "; ".join(f"{100 * c['density']:g}%: {pct(c['unidlth'])} vs {pct(c['dlth'])}, "
                    f"{points_diff(c['minus_dlth'])}" for c in u["vs_dlth"])
        + f"); >= 0.30 points above the random control at the same steps (random_equal) at "
          f"3.5% and 2%: {VERDICT[p['0.30_above_random_equal']]} ("
        + "; ".join(f"{100 * d:g}%: {pct(c['unidlth'])} vs {pct(c['random_equal'])}, "
                    f"{points_diff(c['minus_random_equal'])}"
                    for d, c in u["vs_random_equal"].items()) + ").")
    return lines


def markdown(rows, match, dense_acc, ratios, tg, runs, missing=(), pts=None):
    """The README section: every number below comes from the aggregated rows."""
    grid = [0.2, 0.1, 0.035, 0.02]
    dense = nearest(rows, "dense", 1.0)
    lines = [f"Runs finished: {len(runs)} of {len(runs) + len(missing)}"
             + (f" (still to run: {', '.join(missing)})" if missing else "")
             + ". Test accuracy (%), mean ± std over 3 seeds "
             "unless the parentheses say fewer. LTH: the round nearest the density (its "
             "density in brackets). Dense network (100% density): "
             + (pct(dense["test_accuracy_mean"], dense["test_accuracy_std"], dense["seeds"])
                if dense else "–") + ".", "",
             "| method | " + " | ".join(f"{100 * d:g}% density" for d in grid) + " |",
             "|---|" + "---:|" * len(grid)]
    present = {r["method"] for r in rows}
    for method in TABLE_METHODS:
        if method not in present and method not in ("random", "lth", "lth_rewind", "dlth",
                                                    "unilth", "unidlth"):
            continue  # the new controls only once they have runs
        cells = []
        for d in grid:
            r = nearest(rows, method, d)
            if r is None or abs(np.log(r["density"] / d)) > 0.15:
                cells.append("–")
            else:
                c = pct(r["test_accuracy_mean"], r["test_accuracy_std"], r["seeds"])
                if is_lth(method):
                    c += f" [{100 * r['density']:.2f}%]"
                cells.append(c)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    traj = sorted({r["density"] for r in rows if r["method"] in ("lth", "lth_rewind")},
                  reverse=True)
    if traj:
        lines += ["", "LTH's whole trajectory (test accuracy %; training steps since the "
                  "random init):", "", "| density | lth (k = 0) | lth_rewind (k = 500) | steps |",
                  "|---:|---:|---:|---:|"]
        for d in traj:
            k0, k500 = (next((r for r in rows if r["method"] == m and r["density"] == d), None)
                        for m in ("lth", "lth_rewind"))
            cell = [pct(r["test_accuracy_mean"], r["test_accuracy_std"], r["seeds"])
                    if r else "–" for r in (k0, k500)]
            steps = (k0 or k500)["train_steps_mean"]
            lines.append(f"| {100 * d:.2f}% | {cell[0]} | {cell[1]} | {steps:,.0f} |")
    short = [m for m in ("lth_e1", "lth_e2", "lth_rewind_e1", "lth_rewind_e2") if m in present]
    if short:
        traj = sorted({r["density"] for r in rows if r["method"] in short}, reverse=True)
        lines += ["", "IMP's short-round controls (test accuracy %; the steps of the 1- and "
                  "2-epoch rounds):", "",
                  "| density | " + " | ".join(short) + " | steps (1 epoch a round) | "
                  "steps (2 epochs) |", "|---:|" + "---:|" * (len(short) + 2)]
        for d in traj:
            rs = {m: next((r for r in rows if r["method"] == m and r["density"] == d), None)
                  for m in short}
            cells = [pct(r["test_accuracy_mean"], r["test_accuracy_std"], r["seeds"])
                     if r else "–" for r in rs.values()]
            steps = [next((r["train_steps_mean"] for r in rows if r["density"] == d
                           and r["method"] in ms), None)
                     for ms in (("lth_e1", "lth_rewind_e1"), ("lth_e2", "lth_rewind_e2"))]
            lines.append(f"| {100 * d:.2f}% | " + " | ".join(cells) + " | "
                         + " | ".join(_steps(s) for s in steps) + " |")
    if pts is not None:
        lines += ["", "At the targets' densities (`pareto_3.5_2.png`): LTH's rows interpolated "
                  "linearly in log density between their two rounds around the density, per "
                  "seed; the others as run. Test accuracy (%) and mean training steps:", ""]
        lines += at_densities_table(pts)
    lines += ["", "Sparsest density whose mean test accuracy matches the mean dense "
              f"accuracy ({pct(dense_acc)}%):", "",
              "| method | density | test accuracy | training steps |", "|---|---:|---:|---:|"]
    for m in TABLE_METHODS:
        if m not in present and m not in ("random", "lth", "lth_rewind", "dlth", "unilth",
                                          "unidlth"):
            continue
        r = match.get(m)
        none = "none in the grid" if dense_acc is not None else "no dense runs yet"
        lines.append(f"| {m} | " + (f"{none} | – | –" if r is None else
                                    f"{100 * r['density']:.2f}% | {pct(r['test_accuracy_mean'])}"
                                    f" | {r['train_steps_mean']:,.0f}") + " |")
    lines += ["", "Cost: training steps from the random init to the ticket, against the "
              "steps LTH (k = 0) spends to reach the same density (interpolated in "
              "log density between its rounds; the LTH controls' steps likewise). Wall "
              "times are in the JSON and CSV (`wall_seconds_mean`), but the runs shared the "
              "2 cores with one to three others, so steps are the measure of cost here:", "",
              "| method | " + " | ".join(f"{100 * d:g}%" for d in grid) + " |",
              "|---|" + "---:|" * len(grid)]
    by = {(c["method"], c["density"]): c for c in ratios}
    lth_steps = [lth_steps_to(rows, d) for d in grid]
    lines.append("| LTH steps | " + " | ".join(_steps(s) for s in lth_steps) + " |")
    for m in ("lth_rewind", "lth_e1", "lth_e2", "lth_rewind_e1", "lth_rewind_e2"):
        if m in present and m != "lth_rewind":
            cells = []
            for d, ref in zip(grid, lth_steps):
                s = lth_steps_to(rows, d, m)
                cells.append("–" if s is None or not ref else f"{s:,.0f} ({s / ref:.2f}x)")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for m in GRID_METHODS:
        if m not in present and m not in ("random", "dlth", "unilth", "unidlth"):
            continue
        cells = [(f"{by[(m, d)]['train_steps_mean']:,.0f} ({by[(m, d)]['ratio']:.2f}x)"
                  if (m, d) in by else "–") for d in grid]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    t = tg["unilth_matching_at_2pct_within_quarter_lth_steps"]
    u = tg["unidlth_at_or_above_dlth_everywhere"]
    v = tg["unidlth_1pt_above_random_at_3_5pct_and_sparser"]
    a = tg["lth_reproduces_anchor"]
    sparsest = t["unilth_sparsest_matching_density"]
    ratio2 = "–" if t["cost_ratio_at_2pct"] is None else f"{t['cost_ratio_at_2pct']:.2f}"
    lines += ["", "Targets of the issue \"UniLTH and UniDLTH must earn their place\" "
              "(computed from the rows above). LTH: k = 0 with 10-epoch rounds, its mean test "
              "accuracy and steps interpolated linearly in log density between its two "
              "rounds around the density. IMP at the same steps: each k = 0 row (1, 2 and 10 "
              "epochs a round) gives one point (steps, mean test accuracy) at the density, "
              "both interpolated in log density; the accuracy at UniLTH's mean steps is "
              "interpolated linearly in log(steps) between the two points around them (below "
              "the cheapest point: its accuracy, which favours IMP). k = 500 likewise, for "
              "information. Thresholds in points of test accuracy, on the means over seeds:",
              ""]
    lines += issue_lines(tg)
    lines += ["", "Earlier targets (computed from the rows above):", "",
              f"- UniLTH matching at 2% density or sparser within 1/4 of LTH's steps: "
              f"{VERDICT[t['met']]} (sparsest matching density: "
              f"{'none' if sparsest is None else f'{100 * sparsest:.1f}%'}; steps ratio at 2%: "
              f"{ratio2}).",
              f"- UniDLTH at or above DLTH at every density: {VERDICT[u['met']]} ("
              + "; ".join(f"{100 * c['density']:g}%: {pct(c['unidlth'])} vs {pct(c['dlth'])}"
                          for c in u["by_density"]) + ").",
              f"- UniDLTH at least 1 point above the random control at 3.5% density and "
              f"sparser: {VERDICT[v['met']]} (margins: "
              + "; ".join(f"{100 * d:g}%: {'–' if m is None else f'{100 * m:+.2f}'} points"
                          for d, m in v["margins"].items()) + ").",
              f"- LTH against Frankle et al. (2020): dense {pct(a['dense_ours'])}% here vs "
              f"{pct(a['dense_published'])}% published; IMP matches dense down to "
              + ("no grid density" if a["lth_sparsest_matching_density"] is None else
                 f"{100 * a['lth_sparsest_matching_density']:.1f}% density")
              + f" here vs {100 * a['published_imp_matching_density']:.1f}% published"
              + ("." if a["lth_near_anchor"] is None or a["dense_std"] is None else
                 f"; at {100 * a['lth_near_anchor']['density']:.2f}% density LTH has "
                 + pct(a["lth_near_anchor"]["test_accuracy_mean"],
                       a["lth_near_anchor"]["test_accuracy_std"])
                 + f"% ({a['lth_near_anchor']['seeds']} seeds) against dense "
                 + f"{pct(dense_acc, a['dense_std'])}%.")]
    if grid_id():  # the earlier targets and the published anchor are the MNIST grid's
        lines[lines.index("Earlier targets (computed from the rows above):")] = (
            "The MNIST grid's earlier targets, computed on this grid for information:")
        lines[-1] = (f"- The published anchor (Frankle et al. 2020: dense 98.3%, IMP matching "
                     f"dense down to 3.5% density) is for MNIST / LeNet-300-100, not this "
                     f"grid's {_flag('dataset')} / {_flag('model')}.")
    return "\n".join(lines) + "\n"


def readme_markers(gid=None):
    """The begin / end markers of this grid's README section."""
    gid = grid_id() if gid is None else gid
    return (f"<!-- accuracy_vs_sparsity{gid} results: begin (written by --aggregate_only) -->",
            f"<!-- accuracy_vs_sparsity{gid} results: end -->")


README_BEGIN, README_END = readme_markers("")


def write_into_readme(path, text):
    """Replace the text between this grid's markers in `path`; no markers:
    leave it alone."""
    if not os.path.exists(path):
        return False
    with open(path) as f:
        doc = f.read()
    README_BEGIN, README_END = readme_markers()  # pylint: disable=redefined-outer-name
    if README_BEGIN not in doc or README_END not in doc:
        return False
    head, rest = doc.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    with open(path, "w") as f:
        f.write(head + README_BEGIN + "\n" + text + README_END + tail)
    return True


_PLUMBING = {"output_dir", "data_dir", "verbose"}


def run_flags(runs):
    """{run: the flags it set (not None), where things are left out}."""
    return {name: {k: v for k, v in sorted(r.get("flags", {}).items())
                   if v is not None and k not in _PLUMBING}
            for name, r in sorted(runs.items())}


def reused_runs():
    """{run: {"from": where it ran, "library_commit": the library it ran}} for
    the runs of --work_dir that are links to another benchmark's run or were
    restored from an earlier aggregate (--restore_from); paths relative to
    the checkout, so the JSON names no machine's directories."""
    out = {}
    for name in sorted(os.listdir(work_dir())) if os.path.isdir(work_dir()) else []:
        path = os.path.join(work_dir(), name)
        if os.path.islink(path):
            with open(os.path.join(path, "launch.json")) as f:
                launch = json.load(f)
            target, own = os.path.realpath(path), os.path.realpath(work_dir())
            # A link to a run of the same work dir (the tune's dense run) is
            # named within it, wherever the work dir lives.
            where = (os.path.join("work_dir", os.path.relpath(target, own))
                     if os.path.dirname(target) == own else os.path.relpath(target, ROOT))
            out[name] = {"from": where, "library_commit": launch_commit(launch)}
        elif os.path.exists(os.path.join(path, "results.json")):
            with open(os.path.join(path, "results.json")) as f:
                restored = json.load(f).get("restored_from")
            if restored:
                out[name] = restored
    return out


def restore_runs(paths, library_commit):
    """Writes back, from earlier aggregates of this grid, the results.json of
    every finished run whose directory is gone (a new checkout keeps the
    committed JSON, not benchmarks/runs): what aggregate() and resolve() read,
    nothing more. The mask flags random_equal copies are the run's own flags
    over its method's defaults in this checkout's library, which
    library_commit must be (the commit the runs were launched from)."""
    from tf_unilth import methods  # pylint: disable=import-outside-toplevel
    restored = 0
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        by_name = {}
        for pt in report["points"]:
            if pt["round"] is None:
                by_name[f"{pt['method']}_s{_sparsity_name(pt)}_seed{pt['seed']}"
                        if pt["method"] != "dense" else f"dense_seed{pt['seed']}"] = pt
        for name in report["runs_finished"]:
            out = os.path.join(work_dir(), name)
            if os.path.exists(os.path.join(out, "results.json")):
                continue
            method, _, _ = parse_name(name)
            flags_ran = report["run_flags"][name]
            r = {"flags": flags_ran, "rounds": report["round_records"][name],
                 "restored_from": {"from": os.path.relpath(os.path.abspath(path), ROOT),
                                   "library_commit": library_commit}}
            if not is_lth(method):
                pt = by_name[name]
                defaults = {f.name: f.default for f in
                            methods.get(flags_ran["method"]).hyperparameters()}
                r["hyperparameters"] = dict(defaults, **flags_ran)
                r["final"] = {"sparsity": 1 - pt["density"], "test_accuracy": pt["test_accuracy"],
                              "val_accuracy": pt["val_accuracy"]}
                r["total"] = {"train_steps": pt["train_steps"], "epochs": pt["epochs"],
                              "wall_seconds": pt["wall_seconds"]}
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "results.json"), "w") as f:
                json.dump(r, f, indent=1)
            restored += 1
    print(f"{restored} runs restored from {', '.join(paths)}", flush=True)


def _sparsity_name(pt):
    """The grid's spelling of a run's target sparsity (its name's _s<...>)."""
    target = 1 - pt["density"]
    return min(FLAGS.sparsities, key=lambda s: abs(float(s) - target))


def aggregate():
    runs = load_runs()
    pts = points(runs)
    rows = summarize(pts)
    match, dense_acc = matching(rows)
    ratios = cost_ratios(rows)
    tg = targets(rows, match, dense_acc, ratios)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    base = os.path.join(FLAGS.output_dir, f"accuracy_vs_sparsity{grid_id()}")
    report = {"benchmark": "accuracy_vs_sparsity", "protocol": protocol(),
              "method_flags_given": FLAGS.method_flag,
              "runs_finished": sorted(runs), "dense_test_accuracy_mean": dense_acc,
              "matching_dense": match, "cost_ratios": ratios, "targets": tg,
              "issue_thresholds": ISSUE, "anchors": ANCHORS, "rows": rows, "points": pts,
              "at_target_densities": {str(d): {m: seeds_at(pts, m, d) for m in TABLE_METHODS}
                                      for d in PARETO_DENSITIES},
              "run_flags": run_flags(runs),
              # Runs linked from another benchmark's directory (--reuse_dir).
              "reused": reused_runs(),
              # Every run's per-round records (results.json "rounds"), for the diagnostics.
              "round_records": {name: r["rounds"] for name, r in sorted(runs.items())}}
    # Missing against the whole default grid, whatever subset this invocation ran.
    full = run_specs(*(FLAGS[f].default for f in ("methods", "sparsities", "seeds")), extra={})
    missing = sorted({name for name, _ in full} - set(runs))
    report["runs_missing"] = missing
    text = markdown(rows, match, dense_acc, ratios, tg, runs, missing, pts)
    with open(base + ".md", "w") as f:
        f.write(text)
    if FLAGS.readme:
        write_into_readme(FLAGS.readme, text)
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        gid = grid_id()
        plot(rows, base + ".png", os.path.join(FLAGS.output_dir, f"accuracy_vs_steps{gid}.png"))
        plot_pareto(pts, rows, os.path.join(FLAGS.output_dir, f"pareto_3.5_2{gid}.png"))
    print(f"{len(runs)} runs aggregated into {base}.json/.csv/.md/.png")
    return report


def tune():
    """The dense network at each --tune_lrs (seed 0, the dense budget); the
    learning rate of the best validation accuracy (its best epoch, which the
    dense method keeps) is the grid's. Test accuracy is recorded, never read."""
    curves = {}
    # --method_flag's dense and all flags (an --optimizer, say) reach the
    # tuning runs, so the rate is chosen for the optimizer the grid trains with.
    extra = {k: v for k, v in method_flags().items() if k in ("dense", "all")}
    (_, dense_flags), = run_specs(["dense"], [], ["0"], extra=extra)
    dense_flags = [f for f in dense_flags if not f.startswith("--learning_rate=")]
    for lr in FLAGS.tune_lrs:
        name = f"tune_lr{lr}"
        flags_lr = dense_flags + [f"--learning_rate={float(lr)}"]
        print(name, *run_one(name, flags_lr)[1:], flush=True)
        with open(os.path.join(work_dir(), name, "results.json")) as f:
            curves[lr] = json.load(f)["final"]["val_accuracy"]
    chosen = max(sorted(curves, key=float), key=lambda k: curves[k])  # ties: the smaller
    out = {"rule": "dense, seed 0, the dense budget; the best validation accuracy (its best "
                   "epoch) wins, ties to the smaller rate; test never read",
           "method_flags": extra, "val_accuracy": curves,
           "chosen": {"learning_rate": float(chosen),
                                              "val_accuracy": curves[chosen]},
           "git": provenance.git_info()}
    os.makedirs(os.path.dirname(tune_path()), exist_ok=True)
    with open(tune_path(), "w") as f:
        json.dump(out, f, indent=1)
    print(f"learning rate {chosen} (validation accuracy {curves[chosen]:.4f}) -> {tune_path()}")


def main(argv):
    del argv
    if FLAGS.step == "tune":
        if grid_id() and os.path.exists(tune_path()):
            print(f"{tune_path()} exists: the grid's learning rate is chosen")
        else:
            tune()
        return
    if not FLAGS.aggregate_only:
        if not FLAGS.data_dir:
            raise app.UsageError("Give --data_dir (or set TFDS_DATA_DIR) holding --dataset.")
        if FLAGS.restore_from:
            restore_runs(FLAGS.restore_from, provenance.git_info().get("commit"))
        specs = run_specs()
        print(f"{len(specs)} runs in the grid; work dir {work_dir()}", flush=True)
        with futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
            jobs = {}
            for name, f in specs:  # in order: a run waits only for one submitted before it
                jobs[name] = pool.submit(run_one, name, f, jobs.get(depends_on(f)))
            for i, job in enumerate(futures.as_completed(list(jobs.values())), 1):
                name, status, seconds = job.result()
                print(f"[{i}/{len(specs)}] {name}: {status} ({seconds / 60:.1f} min)", flush=True)
                if i % 4 == 0:
                    aggregate()
    aggregate()


if __name__ == "__main__":
    app.run(main)
