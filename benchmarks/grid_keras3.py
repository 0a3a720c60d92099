"""The accuracy-vs-sparsity grid on Keras 3, where there is no TensorFlow
(issue #27: Conv-2 on Fashion-MNIST, run on the GPU machine with JAX).

`accuracy_vs_sparsity.py` runs each grid cell as `find_ticket.py` on tf_keras,
which needs TensorFlow and TFDS. This script runs the same cells (the same
run names and flags, `accuracy_vs_sparsity.run_specs`) through
`tf_unilth.find_ticket` on a Keras 3 model of the same architecture, from an
.npz of the dataset, and writes each cell's `results.json` (the CLI's schema,
without the ticket file) under `--work_dir/<name>/`, so that
`accuracy_vs_sparsity.py --aggregate_only --work_dir=...` aggregates them.

Four steps, the first two where TensorFlow is:

    python benchmarks/grid_keras3.py make_data --dataset=fashion_mnist --out=fm.npz
    python benchmarks/grid_keras3.py make_specs --dataset=fashion_mnist --model=conv2 \\
        --out=specs.json
    KERAS_BACKEND=jax python benchmarks/grid_keras3.py run --specs=specs.json \\
        --data=fm.npz --work_dir=W --deadline_s=560 --parallel=12     # GPU machine
    python benchmarks/accuracy_vs_sparsity.py --dataset=fashion_mnist --model=conv2 \\
        --aggregate_only --work_dir=W --protocol_note="..."

`run` first chooses the learning rate as `accuracy_vs_sparsity.py --step=tune`
does (dense, seed 0, each candidate rate; the best validation accuracy wins,
ties to the smaller; test never read) unless `W/tune.json` exists, then runs
the grid at that rate, `--parallel` processes at a time sharing the device,
the specs in order (LTH's long trajectories first). A run whose dependency
(random_equal reads its UniDLTH run's epochs) is not finished waits. A run is
started only while its estimated time (its epochs times the slowest seconds
per epoch seen so far) fits before `--deadline_s`; at the deadline the runs
still going are stopped and lost (the Keras 3 path keeps no snapshots), and
a later `run` on the same `W` does only what is missing.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import accuracy_vs_sparsity as grid  # noqa: E402  (benchmarks/: the grid's cells and rules)
import keras3_equivalence  # noqa: E402  (its .npz split and device name)

TUNE_LRS = ("3e-4", "6e-4", "1.2e-3")
# The CLI's run flags a grid spec uses that are not method hyperparameters.
COMMON = {"dataset": ("string", "mnist"), "model": ("string", "lenet300_100"),
          "data_dir": ("string", None), "seed": ("integer", 0),
          "target_sparsity": ("float", 0.9), "verbose": ("integer", 0),
          "batch_size": ("integer", 60), "learning_rate": ("float", 6e-4),
          "optimizer": ("string", "adam"), "validation_size": ("integer", 5000),
          "method": ("string", "dense")}


# ------------------------------------------------------------ where TF is
def make_data(dataset, out):
    """The dataset's raw uint8 splits (tf_unilth.data.load_arrays) as an .npz."""
    import tf_unilth.data  # pylint: disable=import-outside-toplevel
    (xtr, ytr), (xte, yte), num_classes = tf_unilth.data.load_arrays(dataset)
    np.savez_compressed(out, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                        num_classes=num_classes, dataset=dataset)
    print(f"wrote {out}: {dataset} {xtr.shape} train, {xte.shape} test")


def make_specs(dataset, model, out):
    """The grid's (name, flags) for `dataset` / `model`, as
    accuracy_vs_sparsity runs them; the learning rate is set by `run`'s tune."""
    grid.FLAGS(["grid", f"--dataset={dataset}", f"--model={model}", "--data_dir=npz"])
    specs = grid.run_specs(extra={})
    with open(out, "w") as f:
        json.dump({"dataset": dataset, "model": model, "specs": specs}, f, indent=1)
    print(f"wrote {out}: {len(specs)} runs")


# ------------------------------------------------------------ one run
def _flag_values(argv):
    from absl import flags  # pylint: disable=import-outside-toplevel
    from tf_unilth.cli import method_flags  # pylint: disable=import-outside-toplevel
    fv = flags.FlagValues()
    for name, (kind, default) in COMMON.items():
        getattr(flags, f"DEFINE_{kind}")(name, default, name, flag_values=fv)
    method_flags.define(fv)
    fv(["run"] + list(argv))
    return fv


def run_one(name, argv, data_path, work_dir, train_limit=0):
    """One grid cell through tf_unilth.find_ticket on Keras 3: its results.json."""
    import keras  # pylint: disable=import-outside-toplevel
    import tf_unilth  # pylint: disable=import-outside-toplevel
    from tf_unilth import methods, results  # pylint: disable=import-outside-toplevel
    from tf_unilth.cli import method_flags  # pylint: disable=import-outside-toplevel
    from tf_unilth.keras3 import models  # pylint: disable=import-outside-toplevel
    fv = _flag_values(argv)
    method = methods.get(fv.method).create(**method_flags.values(fv.method, fv))
    with np.load(data_path) as f:
        num_classes = int(f["num_classes"])
    train, val, test = keras3_equivalence.load_mnist(data_path, fv.seed, fv.validation_size)
    if train_limit:
        train = (train[0][:train_limit], train[1][:train_limit])
    keras.utils.set_random_seed(fv.seed)
    model = models.build(fv.model, train[0].shape[1:], num_classes, seed=fv.seed)
    out = os.path.join(work_dir, name)
    log = open(os.path.join(out, "stdout.log"), "a")  # pylint: disable=consider-using-with
    printer = lambda *a: print(*a, file=log, flush=True)  # noqa: E731
    result = tf_unilth.find_ticket(
        model, method, train, val, target_sparsity=fv.target_sparsity, test_data=test,
        batch_size=fv.batch_size, optimizer=fv.optimizer, learning_rate=fv.learning_rate,
        verbose=0, printer=printer)
    flag_values = {n: fv[n].value for n in fv if n in COMMON or fv[n].present}
    results.RunDir(out).write_results(
        method=fv.method, dataset=fv.dataset, model_name=fv.model, seed=fv.seed,
        target_sparsity=fv.target_sparsity, result=result, flag_values=flag_values,
        distribution={"strategy": "default", "replicas": 1, "keras": keras.__version__,
                      "backend": keras.backend.backend(),
                      "device": keras3_equivalence._device()})  # pylint: disable=protected-access
    os.remove(os.path.join(out, "ticket.keras"))  # megabytes a run; the numbers are the point
    printer(json.dumps(result.final))


# ------------------------------------------------------------ the scheduler
def _epochs(argv):
    """The epochs a run trains (LTH: rounds x epochs per round, rounds to its
    target at its prune rate, the dense level included)."""
    v = dict(a[2:].split("=", 1) for a in argv if "=" in a)
    if v.get("method") == "lth":
        rate, target = float(v.get("prune_rate", 0.2)), float(v["target_sparsity"])
        levels = int(np.ceil(np.log(1 - target) / np.log(1 - rate) - 1e-9))
        return (levels + 1) * int(v.get("epochs_per_round", 10))
    return int(v.get("epochs", 30))


def _with_lr(argv, lr):
    return [a for a in argv if not a.startswith("--learning_rate=")] + [f"--learning_rate={lr}"]


class Pool:
    """Up to `parallel` runs of this script's `one` step at a time."""

    def __init__(self, args):
        self.args, self.running, self.deadline = args, {}, time.time() + args.deadline_s
        self.sec_per_epoch = None

    def done(self, name):
        return os.path.exists(os.path.join(self.args.work_dir, name, "results.json"))

    def fits(self, argv):
        if self.sec_per_epoch is None:
            return True
        return time.time() + _epochs(argv) * self.sec_per_epoch * 1.1 < self.deadline

    def start(self, name, argv):
        out = os.path.join(self.args.work_dir, name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "launch.json"), "w") as f:
            json.dump({"flags": argv, "runner": "benchmarks/grid_keras3.py",
                       "library_commit": self.args.library_commit or None,
                       "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, f,
                      indent=1)
        cmd = [sys.executable, os.path.abspath(__file__), "one", f"--name={name}",
               f"--data={self.args.data}", f"--work_dir={self.args.work_dir}",
               f"--train_limit={self.args.train_limit}", "--"] + argv
        with open(os.path.join(out, "stderr.log"), "a") as log:  # the child keeps its copy
            self.running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                                  time.time(), _epochs(argv))
        print(f"{time.strftime('%H:%M:%S')} start {name} ({_epochs(argv)} epochs; "
              f"{len(self.running)} running)", flush=True)

    def reap(self):
        for name, (proc, t0, epochs) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[name]
            seconds = time.time() - t0
            ok = proc.returncode == 0 and self.done(name)
            if ok:
                per = seconds / epochs
                self.sec_per_epoch = max(per, self.sec_per_epoch or 0.0)
            print(f"{time.strftime('%H:%M:%S')} {'done' if ok else 'FAILED'} {name} "
                  f"{seconds:.0f} s ({seconds / epochs:.2f} s/epoch)", flush=True)

    def stop_all(self):
        for name, (proc, _, _) in self.running.items():
            proc.kill()
            print(f"stopped at the deadline: {name}", flush=True)
        self.running.clear()

    def run(self, specs):
        """Runs `specs` [(name, argv)] (not yet done) in order; returns when
        all are done or the deadline came."""
        pending = [(n, a) for n, a in specs if not self.done(n)]
        while pending or self.running:
            self.reap()
            if time.time() > self.deadline - 5:
                self.stop_all()
                break
            for item in list(pending):
                if len(self.running) >= self.args.parallel:
                    break
                name, argv = item
                dep = grid.depends_on(argv)
                if dep is not None and not self.done(dep):
                    if dep not in self.running and not any(n == dep for n, _ in pending):
                        pending.remove(item)  # its dependency will not finish in this call
                    continue
                pending.remove(item)
                argv = grid.resolve(argv, self.args.work_dir)
                if self.fits(argv):
                    self.start(name, argv)
                else:
                    print(f"not started (would not finish before the deadline): {name}")
            time.sleep(2)
        return [n for n, _ in specs if not self.done(n)]


def tune(pool, specs, lrs):
    """The grid's learning rate, chosen as accuracy_vs_sparsity.tune chooses it."""
    path = os.path.join(pool.args.work_dir, "tune.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["chosen"]["learning_rate"]
    dense = dict(specs)["dense_seed0"]
    runs = [(f"tune_lr{lr}", _with_lr(dense, float(lr))) for lr in lrs]
    left = pool.run(runs)
    if left:
        raise SystemExit(f"the tuning runs {left} did not finish")
    val = {}
    for lr in lrs:
        with open(os.path.join(pool.args.work_dir, f"tune_lr{lr}", "results.json")) as f:
            val[lr] = json.load(f)["final"]["val_accuracy"]
    chosen = max(sorted(val, key=float), key=lambda k: val[k])
    out = {"rule": "dense, seed 0, the dense budget; the best validation accuracy (its best "
                   "epoch) wins, ties to the smaller rate; test never read",
           "runner": "benchmarks/grid_keras3.py (Keras 3)", "val_accuracy": val,
           "chosen": {"learning_rate": float(chosen), "val_accuracy": val[chosen]}}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"learning rate {chosen} (validation accuracy {val[chosen]:.4f})", flush=True)
    return float(chosen)


def run(args):
    with open(args.specs) as f:
        specs = [tuple(s) for s in json.load(f)["specs"]]
    os.makedirs(args.work_dir, exist_ok=True)
    pool = Pool(args)
    lr = tune(pool, specs, args.tune_lrs.split(","))
    specs = [(n, _with_lr(a, lr)) for n, a in specs]
    if args.seeds:
        keep = {f"seed{s}" for s in args.seeds.split(",")}
        specs = [(n, a) for n, a in specs if n.rsplit("_", 1)[1] in keep]
    if args.only:
        specs = [(n, a) for n, a in specs if re.search(args.only, n)]
    # The chosen rate's tuning run is dense_seed0 (the same flags): not run twice.
    dense0 = os.path.join(args.work_dir, "dense_seed0")
    tuned = os.path.join(args.work_dir, f"tune_lr{_lr_name(lr, args.tune_lrs)}")
    if not os.path.exists(dense0) and os.path.exists(os.path.join(tuned, "results.json")):
        os.symlink(os.path.basename(tuned), dense0)
    left = pool.run(specs)
    print(f"{len(specs) - len(left)} of {len(specs)} runs done; left: {left}", flush=True)


def _lr_name(lr, lrs):
    return next(s for s in lrs.split(",") if float(s) == float(lr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["make_data", "make_specs", "run", "one"])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--model", default="conv2")
    parser.add_argument("--out")
    parser.add_argument("--specs")
    parser.add_argument("--data")
    parser.add_argument("--work_dir")
    parser.add_argument("--name")
    parser.add_argument("--deadline_s", type=float, default=560)
    parser.add_argument("--parallel", type=int, default=12)
    parser.add_argument("--seeds", default="", help="only these seeds' runs (e.g. 0)")
    parser.add_argument("--tune_lrs", default=",".join(TUNE_LRS))
    parser.add_argument("--library_commit", default="",
                        help="the commit the run's tree is (recorded in launch.json; the GPU "
                        "machine's copy has no .git)")
    parser.add_argument("--only", default="", help="a regular expression: only the runs "
                        "whose names match (and the tune)")
    parser.add_argument("--train_limit", type=int, default=0,
                        help="the first N training examples only (a smoke run)")
    args, rest = parser.parse_known_args()
    if args.step == "make_data":
        make_data(args.dataset, args.out)
    elif args.step == "make_specs":
        make_specs(args.dataset, args.model, args.out)
    elif args.step == "run":
        run(args)
    else:
        run_one(args.name, [a for a in rest if a != "--"], args.data, args.work_dir,
                args.train_limit)


if __name__ == "__main__":
    main()
