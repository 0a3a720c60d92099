"""Speed of the Keras 3 path (JAX backend by default) on whatever device JAX
finds: a GPU on the device machine, the CPU elsewhere (`--quick` is a smoke
run for CI, small and short: LeNet at batch 60 and Conv-2 only, a 100-step level).

Measures, writing one JSON (`--out`):
  1. per training step, dense vs pruned (masked layers at 90% sparsity), after
     compilation: LeNet-300-100 at batch 60 and 1,024 (and at batch 60 with one
     step per execution, the dispatch-bound case), and Conv-2 on random 32x32x3
     data at batch 60; median of `--repeats` interleaved repeats;
  2. one paper-protocol LTH level on LeNet-300-100 (Frankle & Carbin: Adam
     1.2e-3, batch 60, 24K iterations a level, 20% pruning): `find_ticket`
     with method lth, rounds=1 (the dense level 0 and one pruned level),
     wall seconds per level, the number OpenLTH reports as ~100 s a level on
     an H200;
  3. end to end, the same search's total wall time (both levels, evaluation,
     pruning and rewind included).

Data: MNIST from `--mnist` (an .npz with x_train, y_train, x_test, y_test,
made by `--make_mnist` where TFDS is installed), or random data of MNIST's
shape when it is absent (speed does not depend on the pixels).

    KERAS_BACKEND=jax python benchmarks/gpu_speed.py --out benchmarks/results/gpu_speed.json
    python benchmarks/gpu_speed.py --quick --out /tmp/gpu_speed.json   # CPU smoke
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def make_mnist(path):
    """Writes MNIST (uint8) as a compressed .npz from TFDS (run where TF is)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    out = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1, as_supervised=True,
                                       download=False))
        out[f"x_{split}"], out[f"y_{split}"] = x.astype(np.uint8), y.astype(np.uint8)
    np.savez_compressed(path, **out)
    print("wrote", path, {k: v.shape for k, v in out.items()})


def load_mnist(path, quick):
    if path and os.path.exists(path):
        with np.load(path) as f:
            xtr, ytr, xte, yte = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
        source = "mnist"
    else:
        rng = np.random.default_rng(0)
        xtr = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
        ytr = rng.integers(0, 10, 60000).astype(np.uint8)
        xte, yte = xtr[:10000], ytr[:10000]
        source = "random"
    if quick:
        xtr, ytr, xte, yte = xtr[:1200], ytr[:1200], xte[:300], yte[:300]
    return (*split(xtr, ytr, xte, yte, seed=0, validation_size=len(xtr) // 12), source)


def split(xtr, ytr, xte, yte, seed, validation_size):
    """(train, validation, test) float pairs, the validation part held out as
    tf_unilth.data.load holds it out (a permutation seeded with `seed`; 5,000
    of MNIST's 60,000)."""
    perm = np.random.default_rng(seed).permutation(len(xtr))
    val, train = np.sort(perm[:validation_size]), np.sort(perm[validation_size:])
    f = lambda x: (x.astype("float32") / 255.0).reshape(len(x), 28, 28, 1)  # noqa: E731
    return ((f(xtr[train]), ytr[train].astype("int32")), (f(xtr[val]), ytr[val].astype("int32")),
            (f(xte), yte.astype("int32")))


class _Timer:
    """Seconds of each epoch (a Keras 3 callback made on first use)."""

    @staticmethod
    def make():
        import keras  # pylint: disable=import-outside-toplevel

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.epochs.append(time.perf_counter() - self._t)
        return Timer()


def step_time(build, x, y, batch, pruned, epochs, spe):
    """(first epoch s, steady s/step) of model.fit, dense or 90% pruned."""
    import keras  # pylint: disable=import-outside-toplevel
    from tf_unilth.keras3 import callbacks as k3cb, core  # pylint: disable=import-outside-toplevel
    from tf_unilth.sparsity import Mask  # pylint: disable=import-outside-toplevel
    model = build()
    callbacks = []
    if pruned:
        core.prune(model)
        rng = np.random.default_rng(0)
        core.remove(model, Mask({k: rng.random(v.shape) < 0.9
                                 for k, v in core.get_masks(model).items()}))
        callbacks.append(k3cb.UpdatePruningStep())
    model.compile(keras.optimizers.Adam(1.2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=spe)
    timer = _Timer.make()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True,
              callbacks=[timer, *callbacks])
    steps = int(np.ceil(len(x) / batch))
    steady = float(np.median(timer.epochs[1:])) if len(timer.epochs) > 1 else timer.epochs[0]
    out = {"first_epoch_s": round(timer.epochs[0], 4), "steady_epoch_s": round(steady, 4),
           "steps_per_epoch": steps, "ms_per_step": round(1000 * steady / steps, 5),
           "epochs": epochs, "batch": batch, "steps_per_execution": spe}
    if pruned:
        out["sparsity"] = round(float(core.sparsity(model)), 4)
        weights = [r.weight.numpy() for r in core.pruned_weights(model)]
        masks = core.get_masks(model)
        out["removed_weights_nonzero"] = int(sum(
            np.count_nonzero(w[~masks[r.key]]) for w, r in zip(weights,
                                                               core.pruned_weights(model))))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/gpu_speed.json")
    parser.add_argument("--mnist", default=None, help=".npz of MNIST (see --make_mnist)")
    parser.add_argument("--make_mnist", default=None, help="write MNIST to this .npz and exit")
    parser.add_argument("--quick", action="store_true", help="small and short (CPU smoke)")
    parser.add_argument("--iterations", type=int, default=24000, help="LTH level length")
    parser.add_argument("--skip_level", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of each per-step configuration (median kept)")
    args = parser.parse_args(argv)
    if args.make_mnist:
        make_mnist(args.make_mnist)
        return 0

    started = time.perf_counter()
    import jax  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    from tf_unilth import kits  # pylint: disable=import-outside-toplevel
    from tf_unilth.keras3 import models as k3models  # pylint: disable=import-outside-toplevel

    devices = jax.devices()
    result = {"device": str(devices[0].device_kind if hasattr(devices[0], "device_kind")
                            else devices[0]),
              "platform": devices[0].platform, "jax": jax.__version__,
              "keras": keras.__version__, "backend": keras.backend.backend(),
              "python": platform.python_version(), "quick": args.quick,
              "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}
    print(json.dumps(result), flush=True)
    train, val, test, source = load_mnist(args.mnist, args.quick)
    result["data"] = source
    epochs = 2 if args.quick else 4
    spe = 100

    # 1. per step, dense vs pruned: a discarded warm-up fit first (device clocks,
    # allocator), then `--repeats` rounds with the configurations interleaved, so a
    # drift of the machine falls on every configuration alike; the median is reported.
    lenet = lambda: k3models.lenet300_100(seed=0)  # noqa: E731
    rng = np.random.default_rng(0)
    n_conv = 120 if args.quick else 12000
    xc = rng.random((n_conv, 32, 32, 3), dtype=np.float32)
    yc = rng.integers(0, 10, n_conv).astype("int32")
    conv = lambda: k3models.conv2((32, 32, 3), 10, seed=0)  # noqa: E731
    configs = {}
    for batch in (60,) if args.quick else (60, 1024):  # --quick: one of each kind
        for pruned in (False, True):
            configs[f"lenet300_100_b{batch}_{'pruned90' if pruned else 'dense'}"] = (
                lenet, train[0], train[1], batch, pruned, spe)
    for pruned in (False, True):
        if not args.quick:
            configs[f"lenet300_100_b60_spe1_{'pruned90' if pruned else 'dense'}"] = (
                lenet, train[0], train[1], 60, pruned, 1)
        configs[f"conv2_b60_{'pruned90' if pruned else 'dense'}"] = (conv, xc, yc, 60, pruned, spe)
    if not args.quick:
        step_time(lenet, train[0][:6000], train[1][:6000], 60, False, 2, spe)  # warm-up, discarded
    runs = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name, (build, x, y, batch, pruned, spe_) in configs.items():
            runs[name].append(step_time(build, x, y, batch, pruned, epochs, spe_))
            print(f"repeat {repeat}", name, runs[name][-1], flush=True)
    steps = {}
    for name, outs in runs.items():
        per_step = [o["ms_per_step"] for o in outs]
        steps[name] = dict(outs[int(np.argsort(per_step)[len(per_step) // 2])],
                           ms_per_step=round(float(np.median(per_step)), 5),
                           ms_per_step_repeats=per_step, repeats=len(per_step))
    for prefix in sorted({name.rsplit("_", 1)[0] for name in configs}):
        steps[f"{prefix}_pruned_over_dense"] = round(
            steps[f"{prefix}_pruned90"]["ms_per_step"] / steps[f"{prefix}_dense"]["ms_per_step"],
            3)
    result["per_step"] = steps
    _write(result, args.out, started)  # kept if the level below is cut short

    # 2-3. one paper-protocol LTH level, through find_ticket (the Keras 3 search)
    if not args.skip_level:
        iterations = 100 if args.quick else args.iterations
        spe_epoch = int(np.ceil(len(train[0]) / 60))
        level_epochs = max(1, int(round(iterations / spe_epoch)))
        model = k3models.lenet300_100(seed=0)
        lines = []
        t0 = time.perf_counter()
        found = kits.find_ticket(
            model, "lth", train, val, target_sparsity=0.2, test_data=test, batch_size=60,
            optimizer=keras.optimizers.Adam(1.2e-3), epochs_per_round=level_epochs, rounds=1,
            verbose=0, printer=lines.append, seed=0)
        total = time.perf_counter() - t0
        rounds = found.rounds
        result["lth_level"] = {
            "iterations_per_level": level_epochs * spe_epoch, "epochs_per_level": level_epochs,
            "batch": 60, "optimizer": "adam 1.2e-3", "train_examples": len(train[0]),
            "level0_dense_s": round(rounds[0]["wall_seconds"], 2),
            "level1_pruned_s": round(rounds[1]["wall_seconds"] - rounds[0]["wall_seconds"], 2),
            "end_to_end_s": round(total, 2),
            "rounds": [{k: r[k] for k in ("round", "sparsity", "test_accuracy", "val_accuracy",
                                          "train_steps", "wall_seconds")} for r in rounds],
            "final": found.final, "openlth_h200_reference_s_per_level": 100}
        print(json.dumps(result["lth_level"]), flush=True)
    _write(result, args.out, started)
    return 0


def _write(result, out, started):
    result["script_seconds"] = round(time.perf_counter() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print("wrote", out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
