"""A second model family and data scale (issue #16): Conv-2 on 10,000 MNIST
images and a residual MLP on 5,000, every method, 3 seeds, 2 target sparsities.

Each run is one `python -m tf_unilth find-ticket` process under the shared lock
(`flock /tmp/tf_unilth_bench.lock`, one run per lock), its own directory under
--work_dir/<family>/ (resumable: a finished run is never run again). Three
steps, each its own command:

    python benchmarks/second_family.py --family=resmlp --step=tune
    python benchmarks/second_family.py --family=resmlp --step=grid   # LR and epochs from tune
    python benchmarks/second_family.py --step=aggregate              # JSON, plots, tables

`tune` trains the dense network at each --tune_lrs for --tune_epochs (seed 0)
and `choose()` picks, on validation accuracy only, the learning rate with the
best epoch and the dense budget E = the first epoch within --epoch_tolerance of
that best (a cheaper budget when more epochs give no more than noise). The
grid then uses the LeNet grid's ratios to the dense budget (dense 30, random
20, LTH 10 a round, DLTH 30 = 10 + 20 fine-tuning, UniLTH/UniDLTH 60):
`budgets(E)`. LTH's trajectory goes to 98% sparsity and is read at each
target by the LeNet grid's interpolation (linear in log density between the
two rounds around it, per seed: accuracy_vs_sparsity.seeds_at).

The queue runs in --order (a priority order: the runs that matter most first),
starts no run after --deadline_utc and none once --budget_seconds of this
invocation's lock-held run time are spent; what did not run is listed by
`aggregate` as missing.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = "/tmp/tf_unilth_bench.lock"


sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import provenance  # noqa: E402
import accuracy_vs_sparsity as avs  # noqa: E402  (the grid's functions, one module per process)

FAMILIES = {
    "conv2": {"model": "conv2", "train_limit": 10000, "validation_size": 5000,
              "data": "MNIST, 10,000 training images (--train_limit=10000), 5,000 validation "
                      "held out of the 60,000 training images, the 10,000 test images"},
    "resmlp": {"model": "resmlp", "train_limit": 5000, "validation_size": 1000,
               "data": "MNIST, 5,000 training images (--train_limit=5000), 1,000 validation "
                       "held out of the 60,000 training images (--validation_size=1000), "
                       "the 10,000 test images"},
}
METHODS = ("dense", "random", "lth", "dlth", "unilth", "unidlth")
SPARSITIES = ("0.9", "0.98")
SEEDS = (0, 1, 2)
COMMON = ["--optimizer=adam", "--batch_size=60", "--dataset=mnist", "--verbose=2"]


# --------------------------------------------------------------------------
# Choosing the learning rate and the dense budget (validation only)

EPOCH_LINE = re.compile(r"val_accuracy: (?P<acc>[0-9.]+)")


def epoch_val_accuracies(log_text):
    """Validation accuracy of every epoch, in order, from a run's Keras
    verbose=2 output (one `... val_accuracy: 0.9678 ...` line an epoch)."""
    out = []
    for line in log_text.splitlines():
        if " - loss: " in line or line.lstrip().startswith(tuple("0123456789")):
            m = EPOCH_LINE.search(line)
            if m:
                out.append(float(m.group("acc")))
    return out


def choose(curves, tolerance):
    """{lr: [val accuracy per epoch]} -> (lr, epochs, best): the learning rate
    whose best epoch is highest (ties: the smaller rate), and the first epoch
    whose accuracy is within `tolerance` of that rate's best."""
    if not curves or any(not c for c in curves.values()):
        raise ValueError("every learning rate needs at least one epoch")
    lr = max(sorted(curves, key=float), key=lambda k: max(curves[k]))  # max keeps the first of ties
    curve = curves[lr]
    best = max(curve)
    epochs = next(i + 1 for i, a in enumerate(curve) if a >= best - tolerance)
    return lr, epochs, best


def budgets(dense_epochs):
    """The LeNet grid's budgets relative to its dense 30 epochs, for a dense
    budget E: random 2E/3, LTH E/3 a round, DLTH E (2E/3 of it fine-tuning),
    UniLTH/UniDLTH 2E (the whole budget); each at least 1 epoch."""
    e = int(dense_epochs)
    r = lambda x: max(1, int(round(x)))  # noqa: E731
    return {"dense": e, "random": r(2 * e / 3), "lth_epochs_per_round": r(e / 3),
            "dlth": max(2, e), "dlth_finetune": min(max(2, e) - 1, r(2 * e / 3)),
            "uni": 2 * e}


def uni_flags(total):
    """UniLTH/UniDLTH flags for a whole budget `total`: the library's defaults
    (5 rounds of 2 epochs, min_finetune_epochs 5: 16 epochs at least) when they
    fit, otherwise 1-epoch rounds and the fine-tune share cut to what is left
    (at least 1 epoch for stage 1)."""
    if total >= 1 + 5 * 2 + 5:
        return []
    if total < 1 + 5 + 1:
        raise ValueError(f"a UniLTH budget of {total} epochs cannot hold 5 one-epoch rounds")
    return ["--round_epochs=1", f"--min_finetune_epochs={min(5, total - 1 - 5)}"]


def grid_specs(family, lr, dense_epochs, methods=METHODS, sparsities=SPARSITIES, seeds=SEEDS):
    """(name, flags) of every grid run of `family`, named as the LeNet grid's
    (`dense_seed0`, `lth_seed0`, `unilth_s0.9_seed0`), so its aggregation reads
    them."""
    fam = FAMILIES[family]
    b = budgets(dense_epochs)
    common = COMMON + [f"--model={fam['model']}", f"--train_limit={fam['train_limit']}",
                       f"--validation_size={fam['validation_size']}", f"--learning_rate={lr}"]
    specs = []
    for seed in seeds:
        s = [f"--seed={seed}"]
        for method in methods:
            if method == "dense":
                specs.append((f"dense_seed{seed}", ["--method=dense", f"--epochs={b['dense']}"]
                              + s))
            elif method == "lth":
                specs.append((f"lth_seed{seed}", [
                    "--method=lth", f"--target_sparsity={max(sparsities, key=float)}",
                    f"--epochs_per_round={b['lth_epochs_per_round']}", "--prune_rate=0.2",
                    "--rewind_step=0"] + s))
            else:
                for sp in sparsities:
                    extra = {"random": [f"--epochs={b['random']}"],
                             "dlth": [f"--epochs={b['dlth']}",
                                      f"--finetune_epochs={b['dlth_finetune']}"],
                             "unilth": [f"--epochs={b['uni']}"] + uni_flags(b["uni"]),
                             "unidlth": [f"--epochs={b['uni']}"] + uni_flags(b["uni"])}[method]
                    specs.append((f"{method}_s{sp}_seed{seed}",
                                  [f"--method={method}", f"--target_sparsity={sp}"] + extra + s))
    return [(name, common + f) for name, f in specs]


def ordered(specs, priority):
    """`specs` sorted by `priority`: a list of (method, seed) groups, e.g.
    [("dense", 0), ("unilth", 0), ...]; runs not named come last, in order."""
    rank = {key: i for i, key in enumerate(priority)}

    def key(item):
        name, _ = item
        method, _, seed = avs.parse_name(name)
        return rank.get((method, seed), len(rank))
    return sorted(specs, key=key)


# --------------------------------------------------------------------------
# Running

def run_one(out, flags, env):
    """One run under the lock; returns (status, seconds holding the lock)."""
    if os.path.exists(os.path.join(out, "results.json")):
        return "done before", 0.0
    os.makedirs(out, exist_ok=True)
    stamp = os.path.join(out, "lock_acquired")
    cmd = ["flock", LOCK, "sh", "-c", f'date +%s.%N > "{stamp}"; exec "$@"', "sh",
           sys.executable, "-m", "tf_unilth", "find-ticket", f"--output_dir={out}"] + flags
    with open(os.path.join(out, "launch.json"), "w") as f:
        json.dump({"flags": flags, "git": provenance.git_info(), "started_utc": _utc()}, f, indent=1)
    with open(os.path.join(out, "stdout.log"), "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    end = time.time()
    try:
        with open(stamp) as f:
            held = end - float(f.read().strip())
    except (OSError, ValueError):
        held = float("nan")
    return ("ok" if code == 0 else f"failed ({code}; see {out}/stdout.log)"), held


def _utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _past(deadline_utc):
    now = datetime.datetime.now(datetime.timezone.utc)
    h, m = map(int, deadline_utc.split(":"))
    return (now.hour, now.minute) >= (h, m)


def run_queue(specs, work_dir, deadline_utc, budget_seconds):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    spent = 0.0
    for name, flags in specs:
        out = os.path.join(work_dir, name)
        if os.path.exists(os.path.join(out, "results.json")):
            print(f"{_utc()} {name}: done before", flush=True)
            continue
        if _past(deadline_utc):
            print(f"{_utc()} {name}: not started (past {deadline_utc} UTC)", flush=True)
            continue
        if spent >= budget_seconds:
            print(f"{_utc()} {name}: not started (budget {budget_seconds:.0f} s spent)",
                  flush=True)
            continue
        print(f"{_utc()} {name}: start {' '.join(flags)}", flush=True)
        status, held = run_one(out, flags, env)
        spent += held if np.isfinite(held) else 0.0
        print(f"{_utc()} {name}: {status}, {held:.0f} s under the lock "
              f"({spent:.0f} s this invocation)", flush=True)
    return spent


def tune_specs(family, lrs, epochs):
    fam = FAMILIES[family]
    return [(f"lr{lr}", COMMON + [
        f"--model={fam['model']}", f"--train_limit={fam['train_limit']}",
        f"--validation_size={fam['validation_size']}", f"--learning_rate={lr}",
        "--method=dense", f"--epochs={epochs}", "--seed=0"]) for lr in lrs]


def tuning_curves(tune_dir):
    curves = {}
    for name in sorted(os.listdir(tune_dir)) if os.path.isdir(tune_dir) else []:
        log = os.path.join(tune_dir, name, "stdout.log")
        if name.startswith("lr") and os.path.exists(os.path.join(tune_dir, name, "results.json")):
            with open(log) as f:
                curves[name[2:]] = epoch_val_accuracies(f.read())
    return curves


# --------------------------------------------------------------------------
# Aggregation (pure functions on results.json records; tests use synthetic ones)

def cell(pts, method, density):
    """Mean val/test accuracy of `method` at `density` over its seeds, the
    test std and the per-seed spread (max - min); LTH interpolated per seed in
    log density between its rounds (accuracy_vs_sparsity.seeds_at). None when
    no seed has it."""
    per_seed = avs.seeds_at(pts, method, density)
    if not per_seed:
        return None
    test = np.array([s["test_accuracy"] for s in per_seed])
    val = np.array([s["val_accuracy"] for s in per_seed])
    steps = np.array([s["train_steps"] for s in per_seed])
    return {"method": method, "density": density, "seeds": [s["seed"] for s in per_seed],
            "val_mean": float(val.mean()), "val_spread": float(val.max() - val.min()),
            "test_mean": float(test.mean()), "test_std": float(test.std()),
            "test_spread": float(test.max() - test.min()),
            "test_per_seed": [float(x) for x in test],
            "train_steps_mean": float(steps.mean())}


def dense_cell(pts):
    ps = [p for p in pts if p["method"] == "dense"]
    if not ps:
        return None
    test = np.array([p["test_accuracy"] for p in ps])
    val = np.array([p["val_accuracy"] for p in ps])
    return {"method": "dense", "density": 1.0, "seeds": sorted(p["seed"] for p in ps),
            "val_mean": float(val.mean()), "val_spread": float(val.max() - val.min()),
            "test_mean": float(test.mean()), "test_std": float(test.std()),
            "test_spread": float(test.max() - test.min()),
            "test_per_seed": [float(x) for x in test],
            "train_steps_mean": float(np.mean([p["train_steps"] for p in ps]))}


def warnings_of(runs):
    """{run name: [warning flags]} of the runs that printed any."""
    out = {}
    for name, r in sorted(runs.items()):
        flags_ = [w.get("flag") or w.get("message", "")[:60] for w in r.get("warnings") or []]
        if flags_:
            out[name] = flags_
    return out


def missing_runs(specs, runs):
    return [name for name, _ in specs if name not in runs]


def table_markdown(cells, densities):
    """One markdown table: a row per method, per density its mean validation
    accuracy and `test mean ± std (per-seed spread max - min, seeds)`, in %;
    dense (100% density) is the reference row, its numbers under each density."""
    head = "| method | " + " | ".join(
        f"{100 * d:g}%: val | {100 * d:g}%: test ± std (spread, seeds)" for d in densities) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(densities))]
    for method in METHODS:
        row = ["dense (100%)" if method == "dense" else method]
        for d in densities:
            c = cells.get((method, "dense" if method == "dense" else d))
            if c is None:
                row.append("not run | not run")
            else:
                row.append(f"{100 * c['val_mean']:.2f} | {100 * c['test_mean']:.2f} ± "
                           f"{100 * c['test_std']:.2f} ({100 * c['test_spread']:.2f}, "
                           f"{len(c['seeds'])})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cells_of(pts, densities):
    cells = {}
    d = dense_cell(pts)
    if d is not None:
        cells[("dense", "dense")] = d
    for method in METHODS:
        if method == "dense":
            continue
        for dens in densities:
            c = cell(pts, method, dens)
            if c is not None:
                cells[(method, dens)] = c
    return cells


def plot_family(pts, cells, family, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"random": "tab:gray", "lth": "tab:blue", "dlth": "tab:orange",
              "unilth": "tab:green", "unidlth": "tab:red"}
    d = cells.get(("dense", "dense"))
    if d is not None:
        ax.axhline(100 * d["test_mean"], color="k", lw=1, label="dense (mean)")
        ax.axhspan(100 * (d["test_mean"] - d["test_std"]), 100 * (d["test_mean"] + d["test_std"]),
                   color="k", alpha=0.08)
    # LTH's whole trajectory (mean over seeds of each round), thin line.
    lth = sorted((p for p in pts if p["method"] == "lth"), key=lambda p: -p["density"])
    if lth:
        by_round = {}
        for p in lth:
            by_round.setdefault(p["round"], []).append(p)
        xs = [100 * np.mean([p["density"] for p in ps]) for _, ps in sorted(by_round.items())]
        ys = [100 * np.mean([p["test_accuracy"] for p in ps]) for _, ps in sorted(by_round.items())]
        ax.plot(xs, ys, color=colors["lth"], lw=0.8, alpha=0.5,
                label="lth, every round (mean over seeds)")
    for i, method in enumerate(m for m in METHODS if m != "dense"):
        cs = sorted((c for (m, _), c in cells.items() if m == method), key=lambda c: c["density"])
        if not cs:
            continue
        shift = 1 + 0.04 * (i - 2)  # spread the markers apart along the log axis
        ax.errorbar([100 * c["density"] * shift for c in cs], [100 * c["test_mean"] for c in cs],
                    yerr=[100 * c["test_std"] for c in cs], fmt="o-", capsize=3,
                    color=colors[method],
                    label=f"{method} ({'/'.join(str(len(c['seeds'])) for c in cs)} seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("density (% of weights kept; log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{family} on MNIST ({FAMILIES[family]['train_limit']:,} training images): "
                 "mean ± std over seeds", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_runs(family_dir):
    runs = {}
    for name in sorted(os.listdir(family_dir)) if os.path.isdir(family_dir) else []:
        path = os.path.join(family_dir, name, "results.json")
        if os.path.exists(path) and avs.RUN_NAME.match(name):
            with open(path) as f:
                runs[name] = json.load(f)
    return runs


def aggregate(args):
    densities = [round(1 - float(s), 4) for s in SPARSITIES]
    out = {"issue": 16, "sparsities": list(SPARSITIES), "families": {}}
    lines = []
    for family in FAMILIES:
        fam_dir = os.path.join(args.work_dir, family)
        choice_path = os.path.join(fam_dir, "choice.json")
        if not os.path.exists(choice_path):
            continue
        with open(choice_path) as f:
            choice = json.load(f)
        runs = load_runs(fam_dir)
        pts = avs.points(runs)
        cells = cells_of(pts, densities)
        specs = grid_specs(family, choice["lr"], choice["epochs"])
        missing = missing_runs(specs, runs)
        plot_family(pts, cells, family,
                    os.path.join(args.output_dir, f"second_family_{family}.png"))
        out["families"][family] = {
            "data": FAMILIES[family]["data"], "model": FAMILIES[family]["model"],
            "choice": choice, "budgets": budgets(choice["epochs"]),
            "uni_flags": uni_flags(budgets(choice["epochs"])["uni"]),
            "runs_finished": len(runs), "runs_planned": len(specs), "missing": missing,
            "cells": [dict(c, density_key=k[1]) for k, c in sorted(
                cells.items(), key=lambda kv: (METHODS.index(kv[0][0]), str(kv[0][1])))],
            "warnings": warnings_of(runs),
            "points": pts,
            "run_flags": avs.run_flags(runs),
            "method_info": {n: r.get("method_info") for n, r in runs.items()},
        }
        lines += [f"### {family}", "", table_markdown(cells, densities), "",
                  f"missing: {', '.join(missing) or 'none'}", ""]
    with open(os.path.join(args.output_dir, "second_family.json"), "w") as f:
        json.dump(out, f, indent=1, default=float)
    with open(os.path.join(args.output_dir, "second_family.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


# --------------------------------------------------------------------------

# The order runs are started in (drop order of the brief: 3 seeds of dense,
# UniLTH, LTH and random first, then DLTH and UniDLTH).
PRIORITY = ([("dense", s) for s in SEEDS] + [("unilth", 0), ("random", 0), ("lth", 0)]
            + [(m, s) for s in (1, 2) for m in ("unilth", "random", "lth")]
            + [(m, s) for s in SEEDS for m in ("unidlth", "dlth")])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=sorted(FAMILIES))
    p.add_argument("--step", choices=["tune", "grid", "aggregate"], required=True)
    p.add_argument("--work_dir", default=os.path.join(ROOT, "benchmarks", "runs", "second_family"))
    p.add_argument("--output_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR"))
    p.add_argument("--tune_lrs", default="0.0003,0.001,0.003")
    p.add_argument("--tune_epochs", type=int, default=30)
    p.add_argument("--epoch_tolerance", type=float, default=0.001)
    p.add_argument("--max_epochs", type=int, default=None,
                   help="cap on the chosen dense budget (compute)")
    p.add_argument("--deadline_utc", default="16:25")
    p.add_argument("--budget_seconds", type=float, default=1e9)
    p.add_argument("--only", default="", help="comma-separated method:seed groups to run")
    args = p.parse_args()
    data = [f"--data_dir={args.data_dir}"] if args.data_dir else []
    if args.step == "aggregate":
        return aggregate(args)
    fam_dir = os.path.join(args.work_dir, args.family)
    if args.step == "tune":
        lrs = args.tune_lrs.split(",")
        tune_dir = os.path.join(fam_dir, "tune")
        specs = [(n, f + data) for n, f in tune_specs(args.family, lrs, args.tune_epochs)]
        run_queue(specs, tune_dir, args.deadline_utc, args.budget_seconds)
        curves = tuning_curves(tune_dir)
        lr, epochs, best = choose(curves, args.epoch_tolerance)
        if args.max_epochs:
            epochs = min(epochs, args.max_epochs)
        choice = {"lr": float(lr), "epochs": epochs, "best_val_accuracy": best,
                  "val_at_chosen_epochs": curves[lr][epochs - 1],
                  "tolerance": args.epoch_tolerance, "tune_epochs": args.tune_epochs,
                  "curves": curves, "chosen_utc": _utc()}
        with open(os.path.join(fam_dir, "choice.json"), "w") as f:
            json.dump(choice, f, indent=1)
        print(json.dumps({k: v for k, v in choice.items() if k != "curves"}))
        return None
    with open(os.path.join(fam_dir, "choice.json")) as f:
        choice = json.load(f)
    specs = [(n, f + data) for n, f in grid_specs(args.family, choice["lr"], choice["epochs"])]
    specs = ordered(specs, PRIORITY)
    if args.only:
        groups = {(g.split(":")[0], int(g.split(":")[1])) for g in args.only.split(",")}
        specs = [(n, f) for n, f in specs
                 if (avs.parse_name(n)[0], avs.parse_name(n)[2]) in groups]
    run_queue(specs, fam_dir, args.deadline_utc, args.budget_seconds)
    return None


if __name__ == "__main__":
    main()
