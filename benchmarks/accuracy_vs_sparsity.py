"""Accuracy against sparsity, and the cost of each ticket, for every method.

Runs the grid (method x target sparsity x seed) of MNIST / LeNet-300-100
tickets, one `examples/find_ticket.py` run (its own directory under
--work_dir, resumable) per cell, then aggregates every finished run into
benchmarks/results/accuracy_vs_sparsity.{json,csv,png} and
accuracy_vs_steps.png. Finished runs are never run again; a killed grid
started again continues (inside a run too: find_ticket.py resumes).

    python benchmarks/accuracy_vs_sparsity.py --data_dir=$TFDS_DATA_DIR
    python benchmarks/accuracy_vs_sparsity.py --aggregate_only

One protocol for all methods (PROTOCOL below, written into the JSON): Adam,
learning rate 6e-4, batch 60, 5,000 validation examples held out; LTH trains
`lth_epochs` per round, the dense baseline and the random control
`dense_epochs` / `random_epochs`, UniLTH/UniDLTH within one `uni_epochs`
budget, DLTH regularizes then fine-tunes within `dlth_epochs`.
"""

import csv
import json
import os
import subprocess
import sys
import time
from concurrent import futures

from absl import app, flags

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"), "TFDS data dir with mnist.")
flags.DEFINE_string("work_dir", os.path.join(ROOT, "benchmarks", "runs"),
                    "One directory per run (checkpoints, ticket, results.json).")
flags.DEFINE_string("output_dir", os.path.join(ROOT, "benchmarks", "results"),
                    "Where the aggregated JSON, CSV and plots go.")
flags.DEFINE_list("methods", ["dense", "random", "lth", "lth_rewind", "dlth", "unilth",
                              "unidlth"], "Methods of the grid.")
flags.DEFINE_list("sparsities", ["0.8", "0.9", "0.965", "0.98"],
                  "Target sparsities (LTH instead runs its whole trajectory).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_integer("parallel", 2, "Runs at a time (each is one process).")
flags.DEFINE_boolean("aggregate_only", False, "Only aggregate the finished runs.")
flags.DEFINE_float("lth_final_sparsity", 0.985, "Where LTH's trajectory stops (1.5% density).")

PROTOCOL = {
    "dataset": "mnist (55,000 train / 5,000 validation held out / 10,000 test)",
    "model": "lenet300_100",
    "optimizer": "adam", "learning_rate": 6e-4, "batch_size": 60,
    "dense_epochs": 30, "random_epochs": 20, "lth_epochs": 10, "lth_prune_rate": 0.2,
    "lth_rewind_step": 500, "uni_epochs": 60, "dlth_epochs": 30, "dlth_lambda_delta": 1e-3,
    "model_selection": "validation only (dense/random: best val_accuracy epoch; "
                       "UniLTH: best val_loss epoch of fine-tuning); test never used for "
                       "choices",
}


def run_specs():
    """(name, flags) of every run of the grid."""
    p = PROTOCOL
    common = [f"--data_dir={FLAGS.data_dir}", f"--learning_rate={p['learning_rate']}",
              f"--batch_size={p['batch_size']}", f"--optimizer={p['optimizer']}",
              "--verbose=0"]
    specs = []
    # Per seed, LTH's long trajectories first, so they overlap the short runs.
    order = sorted(FLAGS.methods, key=lambda m: not m.startswith("lth"))
    for seed in FLAGS.seeds:
        s = [f"--seed={seed}"]
        for method in order:
            if method == "dense":
                specs.append((f"dense_seed{seed}", ["--method=dense",
                                                    f"--epochs={p['dense_epochs']}"] + s))
            elif method in ("lth", "lth_rewind"):
                k = 0 if method == "lth" else p["lth_rewind_step"]
                specs.append((f"{method}_seed{seed}", [
                    "--method=lth", f"--target_sparsity={FLAGS.lth_final_sparsity}",
                    f"--epochs={p['lth_epochs']}", f"--prune_rate={p['lth_prune_rate']}",
                    f"--rewind_step={k}"] + s))
            else:
                for sparsity in FLAGS.sparsities:
                    extra = {"random": [f"--epochs={p['random_epochs']}"],
                             "dlth": [f"--epochs={p['dlth_epochs']}",
                                      f"--lambda_delta={p['dlth_lambda_delta']}"],
                             "unilth": [f"--epochs={p['uni_epochs']}"],
                             "unidlth": [f"--epochs={p['uni_epochs']}"]}[method]
                    specs.append((f"{method}_s{sparsity}_seed{seed}", [
                        f"--method={method}", f"--target_sparsity={sparsity}"] + extra + s))
    return [(name, common + f) for name, f in specs]


def run_one(name, run_flags):
    out = os.path.join(FLAGS.work_dir, name)
    if os.path.exists(os.path.join(out, "results.json")):
        return name, "done before", 0.0
    os.makedirs(out, exist_ok=True)
    start = time.time()
    with open(os.path.join(out, "stdout.log"), "a") as log:
        code = subprocess.call(
            [sys.executable, os.path.join(ROOT, "examples", "find_ticket.py"),
             f"--output_dir={out}"] + run_flags, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return name, "ok" if code == 0 else f"failed ({code}; see {out}/stdout.log)", \
        time.time() - start


# --------------------------------------------------------------------------
# Aggregation

def load_runs():
    runs = {}
    for name in sorted(os.listdir(FLAGS.work_dir)) if os.path.isdir(FLAGS.work_dir) else []:
        path = os.path.join(FLAGS.work_dir, name, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[name] = json.load(f)
    return runs


def points(runs):
    """One point per (method, seed, density): the ticket and what it cost."""
    out = []
    for name, r in runs.items():
        method = name.split("_s")[0] if not name.startswith("lth") else name.rsplit("_seed", 1)[0]
        seed = int(name.rsplit("seed", 1)[1])
        if method.startswith("lth"):
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
                            wall_seconds=r["total"]["wall_seconds"], round=None))
    return out


def summarize(pts):
    """Mean and std over seeds per (method, density rounded to 0.1%)."""
    groups = {}
    for p in pts:
        key = (p["method"], round(p["density"], 3))
        groups.setdefault(key, []).append(p)
    rows = []
    for (method, density), ps in sorted(groups.items()):
        acc = np.array([p["test_accuracy"] for p in ps])
        steps = np.array([p["train_steps"] for p in ps])
        secs = np.array([p["wall_seconds"] for p in ps])
        rows.append(dict(method=method, density=density, seeds=len(ps),
                         test_accuracy_mean=float(acc.mean()), test_accuracy_std=float(acc.std()),
                         train_steps_mean=float(steps.mean()), wall_seconds_mean=float(secs.mean())))
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
        ax.plot(x, y, "o-", label=method, markersize=4)
        ax.fill_between(x, y - e, y + e, alpha=0.15)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of prunable weights kept, log scale)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("MNIST / LeNet-300-100 tickets", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    lo = min([100 * r["test_accuracy_mean"] for r in rows] + [97.0])
    ax.set_ylim(max(lo - 0.5, 90), 99)
    fig.tight_layout()
    fig.savefig(path_acc, dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: -r["density"])
        ax.plot([r["train_steps_mean"] for r in rs], [100 * r["test_accuracy_mean"] for r in rs],
                "o-", label=method, markersize=4)
        for r in rs:
            ax.annotate(f"{100 * r['density']:.1f}%", (r["train_steps_mean"],
                                                      100 * r["test_accuracy_mean"]),
                        fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training steps from the random init to the ticket (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Cost of each ticket (labels: density)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_cost, dpi=130)
    plt.close(fig)


def aggregate():
    runs = load_runs()
    pts = points(runs)
    rows = summarize(pts)
    match, dense_acc = matching(rows)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    base = os.path.join(FLAGS.output_dir, "accuracy_vs_sparsity")
    report = {"benchmark": "accuracy_vs_sparsity", "protocol": PROTOCOL,
              "runs_finished": sorted(runs), "dense_test_accuracy_mean": dense_acc,
              "matching_dense": match, "rows": rows, "points": pts}
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        plot(rows, base + ".png", os.path.join(FLAGS.output_dir, "accuracy_vs_steps.png"))
    print(f"{len(runs)} runs aggregated into {base}.json/.csv/.png")
    return report


def main(argv):
    del argv
    if not FLAGS.aggregate_only:
        if not FLAGS.data_dir:
            raise app.UsageError("Give --data_dir (or set TFDS_DATA_DIR) holding mnist.")
        specs = run_specs()
        print(f"{len(specs)} runs in the grid; work dir {FLAGS.work_dir}", flush=True)
        with futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
            jobs = [pool.submit(run_one, name, f) for name, f in specs]
            for i, job in enumerate(futures.as_completed(jobs), 1):
                name, status, seconds = job.result()
                print(f"[{i}/{len(specs)}] {name}: {status} ({seconds / 60:.1f} min)", flush=True)
                if i % 4 == 0:
                    aggregate()
    aggregate()


if __name__ == "__main__":
    app.run(main)
