"""Keras 3 against tf_keras on LeNet-300-100/MNIST (issue #28, item 3): the
grid's runs at 90% and 96.5% sparsity, 3 seeds, every method the Keras 3 path
has (dense, random, lth, dlth, unilth, unidlth), compared per seed with the
tf_keras grid (`benchmarks/results/accuracy_vs_sparsity.json`).

Each run takes its flags from the tf_keras grid's `run_flags` (method
hyperparameters, learning rate, batch size, optimizer, seed), so both paths
run the same command. Two ways to run the Keras 3 half:

- TensorFlow backend, here (TFDS): the grid harness itself,
  `KERAS_BACKEND=tensorflow python benchmarks/accuracy_vs_sparsity.py
  --methods=dense,random,lth,dlth,unilth,unidlth --sparsities=0.9,0.965
  --method_flag=all:--keras=3 --work_dir=benchmarks/runs/keras3_tensorflow
  --output_dir=benchmarks/runs/keras3_tensorflow_out --readme= --parallel=1`;
- any backend without TensorFlow (the GPU machine has none): `--run`, which
  reads MNIST from an .npz (`gpu_speed.py --make_mnist`), splits it as
  `tf_unilth.data.load` does (5,000 held out by a permutation seeded with the
  run's seed) and calls `tf_unilth.find_ticket` on a Keras 3 model, one JSON a
  run under `--out_dir` (a run already there, or under `--done_dir`, is
  skipped, so a cut-short call goes on where it stopped).

`--aggregate` reads the tf_keras points, the TF-backend runs and the `--run`
runs and writes `benchmarks/results/keras3_equivalence.json`: per method and
density, each path's test accuracy per seed, the mean, and the paired
per-seed difference from tf_keras and its mean; a difference is "within
noise" when its mean is inside two standard errors of a difference of two
n-seed means, with the seed-to-seed sd pooled over the tf_keras grid's rows.

    KERAS_BACKEND=jax python benchmarks/keras3_equivalence.py --run \\
        --mnist mnist.npz --out_dir runs_jax                       # GPU machine
    python benchmarks/keras3_equivalence.py --aggregate \\
        --tensorflow_dir benchmarks/runs/keras3_tensorflow --jax_dir runs_jax
"""

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

GRID = os.path.join(ROOT, "benchmarks", "results", "accuracy_vs_sparsity.json")
METHODS = ("dense", "random", "lth", "dlth", "unilth", "unidlth")
SPARSITIES = (0.9, 0.965)
SEEDS = (0, 1, 2)


def run_names(methods=METHODS, sparsities=SPARSITIES, seeds=SEEDS):
    """The grid's run names (dense and lth: one run a seed, lth's levels give
    both sparsities)."""
    names = []
    for seed in seeds:
        for method in methods:
            if method in ("dense", "lth"):
                names.append(f"{method}_seed{seed}")
            else:
                names.extend(f"{method}_s{s:g}_seed{seed}" for s in sparsities)
    return names


def load_mnist(path, seed, validation_size=5000):
    """MNIST from the .npz, split as tf_unilth.data.load splits it."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpu_speed  # pylint: disable=import-outside-toplevel
    with np.load(path) as f:
        return gpu_speed.split(f["x_train"], f["y_train"], f["x_test"], f["y_test"], seed,
                               validation_size)


def run_one(name, flags, mnist, train_limit=None):
    """One grid run on Keras 3 through find_ticket; its summary."""
    import dataclasses  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    import tf_unilth  # pylint: disable=import-outside-toplevel
    from tf_unilth import methods  # pylint: disable=import-outside-toplevel
    from tf_unilth.keras3 import models  # pylint: disable=import-outside-toplevel
    cls = methods.get(flags["method"])
    fields = {f.name for f in dataclasses.fields(cls)}
    method = cls.create(**{k: v for k, v in flags.items() if k in fields})
    keras.utils.set_random_seed(flags["seed"])
    train, val, test = load_mnist(mnist, flags["seed"], flags["validation_size"])
    if train_limit:  # a smoke run (CPU): the first examples only
        train = (train[0][:train_limit], train[1][:train_limit])
    model = models.build(flags["model"], train[0].shape[1:], 10, seed=flags["seed"])
    lines = []
    t0 = time.perf_counter()
    result = tf_unilth.find_ticket(
        model, method, train, val, target_sparsity=flags["target_sparsity"], test_data=test,
        batch_size=flags["batch_size"], optimizer=flags["optimizer"],
        learning_rate=flags["learning_rate"], verbose=0, printer=lines.append)
    wall = time.perf_counter() - t0
    ticket = result.model
    zeros = [float(np.mean(np.asarray(v) == 0)) for layer in ticket.layers
             for v in layer.weights if v.name.endswith("kernel")] if flags["method"] != "dense" \
        else []
    return {"name": name, "method": flags["method"], "seed": flags["seed"],
            "target_sparsity": flags["target_sparsity"], "final": result.final,
            "rounds": [{k: r.get(k) for k in ("round", "sparsity", "test_accuracy",
                                               "val_accuracy", "train_steps")}
                       for r in result.rounds],
            "train_steps": result.total.get("train_steps"), "wall_seconds": round(wall, 1),
            "kernel_zero_fractions": zeros, "warnings": list(result.warnings),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "device": _device(), "hyperparameters": dataclasses.asdict(method),
            "lines": lines[-5:], "train_examples": len(train[0])}


def _device():
    try:
        import jax  # pylint: disable=import-outside-toplevel
        d = jax.devices()[0]
        return getattr(d, "device_kind", str(d))
    except ImportError:
        return "cpu"


def run(args):
    grid = json.load(open(args.grid))
    os.makedirs(args.out_dir, exist_ok=True)
    names = run_names(args.methods.split(","), seeds=[int(s) for s in args.seeds.split(",")])
    for i, name in enumerate(names):
        done = [os.path.join(d, name + ".json") for d in (args.out_dir, args.done_dir) if d]
        if any(os.path.exists(p) for p in done):
            continue
        out = run_one(name, grid["run_flags"][name], args.mnist, args.train_limit)
        with open(os.path.join(args.out_dir, name + ".json"), "w") as f:
            json.dump(out, f, indent=1)
        print(f"[{i + 1}/{len(names)}] {name}: test {out['final']['test_accuracy']:.4f} "
              f"sparsity {out['final']['sparsity']:.4f} {out['wall_seconds']} s", flush=True)


# -- aggregation ---------------------------------------------------------------
def _lth_at(rounds, density):
    """The LTH level nearest `density` (the grid reads LTH's levels the same way)."""
    return min(rounds, key=lambda r: abs((1 - r["sparsity"]) - density))


def _points_tf_keras(grid):
    """{(method, sparsity, seed): test accuracy} of the tf_keras grid."""
    out = {}
    for name in run_names():
        method, seed = name.split("_")[0], int(name.rsplit("seed", 1)[1])
        if method == "lth":
            for s in SPARSITIES:
                r = _lth_at(grid["round_records"][name], 1 - s)
                out[(method, s, seed)] = (r["test_accuracy"], r["sparsity"])
        elif method == "dense":
            p = next(p for p in grid["points"] if p["method"] == "dense" and p["seed"] == seed)
            out[("dense", 0.0, seed)] = (p["test_accuracy"], 0.0)
        else:
            s = float(name.split("_s")[1].split("_")[0])
            p = next(p for p in grid["points"] if p["method"] == method and p["seed"] == seed
                     and abs((1 - p["density"]) - s) < 1e-3)
            out[(method, s, seed)] = (p["test_accuracy"], 1 - p["density"])
    return out


def _points_keras3(runs):
    """{(method, sparsity, seed): (test accuracy, sparsity)} of Keras 3 runs
    ({name: summary with final and rounds})."""
    out = {}
    for name, r in runs.items():
        method, seed = r["method"], r["seed"]
        if method == "lth":
            for s in SPARSITIES:
                level = _lth_at(r["rounds"], 1 - s)
                out[(method, s, seed)] = (level["test_accuracy"], level["sparsity"])
        elif method == "dense":
            out[("dense", 0.0, seed)] = (r["final"]["test_accuracy"], 0.0)
        else:
            out[(method, r["target_sparsity"], seed)] = (r["final"]["test_accuracy"],
                                                         r["final"]["sparsity"])
    return out


def _cli_runs(directory):
    runs = {}
    for path in glob.glob(os.path.join(directory, "*", "results.json")):
        r = json.load(open(path))
        runs[os.path.basename(os.path.dirname(path))] = r
    return runs


def _json_runs(directory):
    return {os.path.basename(p)[:-5]: json.load(open(p))
            for p in glob.glob(os.path.join(directory, "*.json"))}


def pooled_seed_sd(reference):
    """The tf_keras grid's seed-to-seed standard deviation of test accuracy,
    pooled over its (method, sparsity) rows: one row's 3 seeds say little
    about its own spread, the rows together do."""
    variances = []
    for key in sorted({k[:2] for k in reference}):
        acc = [reference[(*key, s)][0] for s in SEEDS if (*key, s) in reference]
        if len(acc) > 1:
            variances.append(float(np.var(acc, ddof=1)))
    return float(np.sqrt(np.mean(variances)))


def compare(reference, other):
    """Per (method, sparsity): seeds, means and paired differences. Within
    noise: |mean difference| <= 2 standard errors of a difference of two
    n-seed means, sd pooled over the tf_keras rows (2 * sd * sqrt(2 / n))."""
    pooled = pooled_seed_sd(reference)
    rows = []
    for key in sorted({k[:2] for k in reference}):
        seeds = [s for s in SEEDS if (*key, s) in reference and (*key, s) in other]
        if not seeds:
            continue
        ref = np.array([reference[(*key, s)][0] for s in seeds])
        oth = np.array([other[(*key, s)][0] for s in seeds])
        diff = oth - ref
        bound = 2 * pooled * np.sqrt(2 / len(seeds))
        rows.append({"method": key[0], "sparsity": key[1], "seeds": seeds,
                     "tf_keras": ref.round(4).tolist(), "keras3": oth.round(4).tolist(),
                     "keras3_sparsity": [round(other[(*key, s)][1], 4) for s in seeds],
                     "tf_keras_mean": round(float(ref.mean()), 4),
                     "keras3_mean": round(float(oth.mean()), 4),
                     "diff_per_seed_points": (100 * diff).round(2).tolist(),
                     "diff_mean_points": round(100 * float(diff.mean()), 2),
                     "noise_bound_points": round(100 * float(bound), 2),
                     "within_noise": bool(abs(diff.mean()) <= bound)})
    return rows, pooled


def aggregate(args):
    grid = json.load(open(args.grid))
    reference = _points_tf_keras(grid)
    report = {"benchmark": "keras3_equivalence", "protocol": grid["protocol"],
              "reference": "tf_keras grid, benchmarks/results/accuracy_vs_sparsity.json",
              "rule": "within_noise: |mean paired difference| <= 2 * sd * sqrt(2 / seeds), sd "
                      "the tf_keras grid's seed-to-seed sd pooled over its rows",
              "command": " ".join(["keras3_equivalence.py"] + sys.argv[1:]), "paths": {},
              "pooled_seed_sd_points": round(100 * pooled_seed_sd(reference), 3)}
    for label, runs in (("tensorflow", _cli_runs(args.tensorflow_dir) if args.tensorflow_dir
                         else {}), ("jax", _json_runs(args.jax_dir) if args.jax_dir else {})):
        if not runs:
            continue
        some = next(iter(runs.values()))
        device = some.get("device") or "cpu (this project's 2-core machine)"
        rows, _ = compare(reference, _points_keras3(runs))
        report["paths"][label] = {"device": device, "runs": len(runs), "rows": rows,
                                  "command": report["command"],
                                  "within_noise": sum(r["within_noise"] for r in rows),
                                  "compared": len(rows)}
    if os.path.exists(args.output):  # a path not given this time keeps its committed rows
        before = json.load(open(args.output))
        kept = before.get("paths", {})
        for path in kept.values():
            path.setdefault("command", before.get("command"))
        report["paths"] = {**{k: v for k, v in kept.items() if k not in report["paths"]},
                           **report["paths"]}
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    if report["paths"]:
        plot(report, args.output[:-len(".json")] + ".png")
    for label, path in report["paths"].items():
        print(f"{label} ({path['device']}): {path['within_noise']}/{path['compared']} within "
              "noise")
        for r in path["rows"]:
            print(f"  {r['method']:8s} {r['sparsity']:5.3f}  tf_keras {r['tf_keras_mean']:.4f}  "
                  f"keras3 {r['keras3_mean']:.4f}  diff {r['diff_mean_points']:+.2f} "
                  f"(bound {r['noise_bound_points']:.2f}, seeds {len(r['seeds'])})"
                  f"{'' if r['within_noise'] else '  OUTSIDE NOISE'}")
    print("wrote", args.output)


def plot(report, path):
    """Paired Keras 3 - tf_keras differences per seed, with the noise bound."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    labels = sorted({(r["method"], r["sparsity"]) for p in report["paths"].values()
                     for r in p["rows"]})
    fig, ax = plt.subplots(figsize=(9, 4))
    for offset, (label, p) in zip((-0.15, 0.15), report["paths"].items()):
        rows = {(r["method"], r["sparsity"]): r for r in p["rows"]}
        for i, key in enumerate(labels):
            if key not in rows:
                continue
            r = rows[key]
            ax.scatter([i + offset] * len(r["diff_per_seed_points"]), r["diff_per_seed_points"],
                       s=12, color="C0" if label == "tensorflow" else "C1",
                       label=f"{label} backend, per seed" if i == 0 else None)
            ax.errorbar(i + offset, r["diff_mean_points"], yerr=r["noise_bound_points"],
                        fmt="_", color="k", capsize=3)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{m}\n{s:g}" for m, s in labels], fontsize=8)
    ax.set_ylabel("Keras 3 - tf_keras test accuracy (points)")
    ax.set_title("LeNet-300-100 / MNIST: Keras 3 against tf_keras, paired by seed "
                 "(bar: mean, +- noise bound)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("wrote", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the Keras 3 runs (no TF)")
    parser.add_argument("--aggregate", action="store_true")
    parser.add_argument("--grid", default=GRID, help="the tf_keras grid's JSON")
    parser.add_argument("--mnist", help=".npz of MNIST (gpu_speed.py --make_mnist)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--train_limit", type=int, default=None,
                        help="train on the first N examples only (a CPU smoke run)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out_dir", default="runs_keras3")
    parser.add_argument("--done_dir", default=None, help="runs already done (skipped)")
    parser.add_argument("--tensorflow_dir", default=None,
                        help="the grid harness's --work_dir of the TF-backend runs")
    parser.add_argument("--jax_dir", default=None, help="--run's --out_dir")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                         "keras3_equivalence.json"))
    args = parser.parse_args(argv)
    if args.run:
        run(args)
    if args.aggregate:
        aggregate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
