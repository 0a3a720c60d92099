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
flags.DEFINE_string("readme", os.path.join(ROOT, "benchmarks", "README.md"),
                    "Markdown file whose results section (between the markers) the "
                    "aggregation rewrites; empty: none.")
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


def run_specs(methods=None, sparsities=None, seeds=None):
    """(name, flags) of every run of the grid (by default the flags' selection)."""
    methods = FLAGS.methods if methods is None else methods
    sparsities = FLAGS.sparsities if sparsities is None else sparsities
    seeds = FLAGS.seeds if seeds is None else seeds
    p = PROTOCOL
    common = [f"--data_dir={FLAGS.data_dir}", f"--learning_rate={p['learning_rate']}",
              f"--batch_size={p['batch_size']}", f"--optimizer={p['optimizer']}",
              "--verbose=0"]
    specs = []
    # Per seed, LTH's long trajectories first, so they overlap the short runs.
    order = sorted(methods, key=lambda m: not m.startswith("lth"))
    for seed in seeds:
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
                for sparsity in sparsities:
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
            # This checkout's library, whatever `pip install -e` points at now.
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                     PYTHONPATH=os.pathsep.join([ROOT] + [os.environ.get("PYTHONPATH", "")])))
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
    """Mean and std over seeds per (method, density rounded to 0.01%)."""
    groups = {}
    for p in pts:
        key = (p["method"], round(p["density"], 4))
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
        # LTH has ~20 rounds: label every third so the labels stay readable.
        for r in (rs[::3] + rs[-1:] if method.startswith("lth") else rs):
            ax.annotate(f"{100 * r['density']:.1f}%", (r["train_steps_mean"],
                                                      100 * r["test_accuracy_mean"]),
                        fontsize=6, xytext=(2, 2), textcoords="offset points")
    if dense:
        ax.plot([dense[0]["train_steps_mean"]], [100 * dense[0]["test_accuracy_mean"]], "k*",
                markersize=9, label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("training steps from the random init to the ticket (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Cost of each ticket (labels: density)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_cost, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------
# Cost ratios, targets and the README table

# Published anchors (Frankle et al. 2020, LeNet-300-100 on MNIST).
ANCHORS = {"dense_test_accuracy": 0.983, "imp_matching_density": 0.035}
GRID_METHODS = ("random", "dlth", "unilth", "unidlth")


def lth_steps_to(rows, density, method="lth"):
    """Training steps LTH spends to reach `density` (mean over seeds).

    LTH's rounds land on its own densities (0.8^i, output layer at half rate),
    not on the grid's, so the cumulative steps are interpolated linearly in
    log(density) between the two rounds around `density`. None outside the
    trajectory.
    """
    traj = sorted(((r["density"], r["train_steps_mean"]) for r in rows
                   if r["method"] == method), reverse=True)
    for (d0, s0), (d1, s1) in zip(traj, traj[1:]):
        if d1 <= density <= d0:
            if d0 == d1:
                return s1
            w = (np.log(d0) - np.log(density)) / (np.log(d0) - np.log(d1))
            return float(s0 + w * (s1 - s0))
    return None


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


def targets(rows, match, dense_acc, ratios):
    """The issue's targets, each with the numbers that decide it (None: no data yet)."""
    def row(method, density):
        return next((r for r in rows if r["method"] == method
                     and abs(r["density"] - density) < 5e-4), None)

    out = {}
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


def markdown(rows, match, dense_acc, ratios, tg, runs, missing=()):
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
    for method in ("random", "lth", "lth_rewind", "dlth", "unilth", "unidlth"):
        cells = []
        for d in grid:
            r = nearest(rows, method, d)
            if r is None or abs(np.log(r["density"] / d)) > 0.15:
                cells.append("–")
            else:
                c = pct(r["test_accuracy_mean"], r["test_accuracy_std"], r["seeds"])
                if method.startswith("lth"):
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
    lines += ["", "Sparsest density whose mean test accuracy matches the mean dense "
              f"accuracy ({pct(dense_acc)}%):", "",
              "| method | density | test accuracy | training steps |", "|---|---:|---:|---:|"]
    for m in ("random", "lth", "lth_rewind", "dlth", "unilth", "unidlth"):
        r = match.get(m)
        none = "none in the grid" if dense_acc is not None else "no dense runs yet"
        lines.append(f"| {m} | " + (f"{none} | – | –" if r is None else
                                    f"{100 * r['density']:.2f}% | {pct(r['test_accuracy_mean'])}"
                                    f" | {r['train_steps_mean']:,.0f}") + " |")
    lines += ["", "Cost: training steps from the random init to the ticket, against the "
              "steps LTH (k = 0) spends to reach the same density (interpolated in "
              "log density between its rounds). Wall times are in the JSON and CSV "
              "(`wall_seconds_mean`), but the runs shared the 2 cores with one to three "
              "others, so steps are the measure of cost here:", "",
              "| method | " + " | ".join(f"{100 * d:g}%" for d in grid) + " |",
              "|---|" + "---:|" * len(grid)]
    by = {(c["method"], c["density"]): c for c in ratios}
    lth_row = [("–" if steps is None else f"{steps:,.0f}")
               for steps in (lth_steps_to(rows, d) for d in grid)]
    lines.append("| LTH steps | " + " | ".join(lth_row) + " |")
    for m in GRID_METHODS:
        cells = [(f"{by[(m, d)]['train_steps_mean']:,.0f} ({by[(m, d)]['ratio']:.2f}x)"
                  if (m, d) in by else "–") for d in grid]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    verdict = {True: "**met**", False: "**not met**", None: "not decided yet (runs missing)"}
    t = tg["unilth_matching_at_2pct_within_quarter_lth_steps"]
    u = tg["unidlth_at_or_above_dlth_everywhere"]
    v = tg["unidlth_1pt_above_random_at_3_5pct_and_sparser"]
    a = tg["lth_reproduces_anchor"]
    sparsest = t["unilth_sparsest_matching_density"]
    ratio2 = "–" if t["cost_ratio_at_2pct"] is None else f"{t['cost_ratio_at_2pct']:.2f}"
    lines += ["", "Targets (computed from the rows above):", "",
              f"- UniLTH matching at 2% density or sparser within 1/4 of LTH's steps: "
              f"{verdict[t['met']]} (sparsest matching density: "
              f"{'none' if sparsest is None else f'{100 * sparsest:.1f}%'}; steps ratio at 2%: "
              f"{ratio2}).",
              f"- UniDLTH at or above DLTH at every density: {verdict[u['met']]} ("
              + "; ".join(f"{100 * c['density']:g}%: {pct(c['unidlth'])} vs {pct(c['dlth'])}"
                          for c in u["by_density"]) + ").",
              f"- UniDLTH at least 1 point above the random control at 3.5% density and "
              f"sparser: {verdict[v['met']]} (margins: "
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
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- accuracy_vs_sparsity results: begin (written by --aggregate_only) -->"
README_END = "<!-- accuracy_vs_sparsity results: end -->"


def write_into_readme(path, text):
    """Replace the text between the markers in `path`; no markers: leave it alone."""
    if not os.path.exists(path):
        return False
    with open(path) as f:
        doc = f.read()
    if README_BEGIN not in doc or README_END not in doc:
        return False
    head, rest = doc.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    with open(path, "w") as f:
        f.write(head + README_BEGIN + "\n" + text + README_END + tail)
    return True


def aggregate():
    runs = load_runs()
    pts = points(runs)
    rows = summarize(pts)
    match, dense_acc = matching(rows)
    ratios = cost_ratios(rows)
    tg = targets(rows, match, dense_acc, ratios)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    base = os.path.join(FLAGS.output_dir, "accuracy_vs_sparsity")
    report = {"benchmark": "accuracy_vs_sparsity", "protocol": PROTOCOL,
              "runs_finished": sorted(runs), "dense_test_accuracy_mean": dense_acc,
              "matching_dense": match, "cost_ratios": ratios, "targets": tg,
              "anchors": ANCHORS, "rows": rows, "points": pts,
              # Every run's per-round records (results.json "rounds"), for the diagnostics.
              "round_records": {name: r["rounds"] for name, r in sorted(runs.items())}}
    # Missing against the whole default grid, whatever subset this invocation ran.
    full = run_specs(*(FLAGS[f].default for f in ("methods", "sparsities", "seeds")))
    missing = sorted({name for name, _ in full} - set(runs))
    report["runs_missing"] = missing
    text = markdown(rows, match, dense_acc, ratios, tg, runs, missing)
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
