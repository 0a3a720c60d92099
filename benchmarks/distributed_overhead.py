"""Training-step overhead of pruning under MirroredStrategy (2 logical CPU devices).

The question: does pruned training (tf_unilth's wrapper + growing regularizer,
the "ours" variant of benchmarks/step_overhead.py) stay within 1.2x of the
dense step time when the step is replicated and its gradients all-reduced?
tfmot's own `prune_low_magnitude` is measured alongside: its wrapper assigns
every masked weight (a synchronized update) in every forward pass.

Variants (built in the strategy's scope, same LeNet-300-100 / MNIST / Adam as
step_overhead.py, whose variant classes, data, timing and statistics this
script reuses):

  dense        plain model;
  tfmot        prune_low_magnitude(ConstantSparsity(0.9, frequency=100));
  ours         tf_unilth.wrapper.prune + regularizers.attach + RegularizerGrowth
               (lambda changes every step) + round plan with 3 events per call;
  ours_noreg   ours without the regularizer (the wrapper alone), an ablation.

Protocol: step_overhead.py's (one `model.fit(ds.take(steps))` call per
measurement, per-call cost removed with one-step fits, variants interleaved
round robin, foreign CPU load from /proc/stat with retries). Where the time
goes, per variant: the ops of the traced training step (and of the functions
it calls), the graph edges between the two devices (each one a copy between
replicas at run time), and a TensorFlow profile of `--profile_steps` steps
whose per-op CPU self time is summed into categories (input pipeline,
all-reduce, optimizer, layer compute, pruning wrapper, the rest: regularizer
penalty and lambda growth, loss and metrics).

Usage:

    python benchmarks/distributed_overhead.py --data_dir=/path/to/tfds
"""

import collections
import gc
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_overhead as so  # noqa: E402  (its flags: steps, repeats, batch sizes, ...)

from tf_unilth import distribute  # noqa: E402
from tf_unilth._compat import tf  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("cpu_devices", 2, "Logical CPU devices (replicas) of the MirroredStrategy.")
flags.DEFINE_list("variants", ["dense", "tfmot", "ours", "ours_noreg"],
                  "Variants to measure (see the module doc).")
flags.DEFINE_integer("profile_steps", 200, "Steps profiled per variant for the CPU time "
                     "breakdown (0: no profile).")
FLAGS.set_default("name", "distributed_overhead")
FLAGS.set_default("repeats", 7)

TARGET = 1.2  # ours / dense, wall time per step


VARIANTS = {
    "dense": so.Dense,
    "tfmot": so.Tfmot,
    "ours": so.Ours,
    "ours_noreg": lambda: so.Ours(regularizer=False, name="ours_noreg",
                                  description="ours without the regularizer (wrapper only)"),
}


# --------------------------------------------------------------------------
# Op counts of the traced training step

def _graph_defs(model):
    """The GraphDef of the model's last traced train_function."""
    concrete = model.train_function._list_all_concrete_functions()  # pylint: disable=protected-access
    return [concrete[-1].graph.as_graph_def()]


def _device_of(name):
    device = (name or "").upper()
    return device.rsplit("DEVICE:", 1)[-1] if "DEVICE:" in device else ""


def op_counts(model):
    """Ops of the training step, with those of every function it calls."""
    counts = collections.Counter()
    cross, per_device = 0, collections.Counter()
    for graph_def in _graph_defs(model):
        bodies = [list(graph_def.node)] + [list(f.node_def) for f in graph_def.library.function]
        for nodes in bodies:
            devices = {n.name: _device_of(n.device) for n in nodes}
            for node in nodes:
                counts[node.op] += 1
                per_device[devices[node.name] or "unplaced"] += 1
                for source in node.input:
                    source = source.lstrip("^").split(":")[0]
                    a, b = devices.get(source), devices[node.name]
                    if a and b and a != b:
                        cross += 1
    interesting = ("AssignVariableOp", "AssignAddVariableOp", "ReadVariableOp", "If",
                   "StatelessIf", "Assert", "MatMul", "Mul", "AddN", "Identity")
    return {"total_ops": int(sum(counts.values())),
            "cross_device_edges": int(cross),
            "ops_per_device": dict(per_device),
            "selected_op_types": {k: int(counts[k]) for k in interesting}}


# --------------------------------------------------------------------------
# CPU time by category, from a TensorFlow profile

_LAYER_OP_TYPES = ("MatMul", "_MklMatMul", "_MklNativeFusedMatMul", "_FusedMatMul", "BiasAdd",
                   "BiasAddGrad", "Relu", "ReluGrad", "Softmax", "Reshape")


def categorize(op_type, op_name):
    """The category of one profiled op (see the module doc)."""
    name = re.sub(r"^(gradient_tape/)?(replica_\d+/)?", "", op_name)
    parts = name.split("/")
    if op_type == "Dataset" or name.startswith("Iterator") or "Iterator" in op_type:
        return "input pipeline"
    if op_type.startswith("Collective") or re.fullmatch(r"(split|concat)(_\d+)?", parts[0]) \
            or parts[0].startswith("GroupCrossDevice"):
        return "all-reduce (with packing)"
    if parts[0] == "Adam":
        return "optimizer"
    if len(parts) > 1 and parts[0] == so.MODEL:
        if "prune_low_magnitude" in parts[1] and op_type not in _LAYER_OP_TYPES:
            return "pruning wrapper (masks, step, events)"
        return "layer compute"
    if parts[0].startswith(("sparse_categorical_crossentropy", "ArgMax", "Equal", "Sum",
                            "Cast", "div_no_nan")):
        return "loss and metrics"
    return "other (regularizer penalty, lambda growth, gradient sums)"


def profile(variant, ds, steps):
    """CPU self time per step (ms) by category over one profiled `steps`-step fit."""
    from tensorflow.python.profiler.internal import (  # pylint: disable=import-outside-toplevel
        _pywrap_profiler_plugin as plugin)
    directory = tempfile.mkdtemp(prefix="tf_unilth_profile_")
    try:
        variant.before_timed()
        tf.profiler.experimental.start(directory)
        variant.fit(ds, steps)
        tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
        data, ok = plugin.xspace_to_tools_data(paths[-1:], "framework_op_stats", {})
        if not ok:
            return None
        table = json.loads(data)[0]
        cols = [c["id"] for c in table["cols"]]
        rows = [dict(zip(cols, [c["v"] for c in r["c"]])) for r in table["rows"]]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    totals = collections.Counter()
    for row in rows:
        if row["type"] != "IDLE":
            totals[categorize(row["type"], row["operation"])] += row["total_self_time"]
    per_step = {k: v / 1e3 / steps for k, v in sorted(totals.items())}
    return {"ms_per_step": per_step, "total_ms_per_step": sum(per_step.values()),
            "steps": steps}


# --------------------------------------------------------------------------

PROTOCOL = dict(
    so.PROTOCOL,
    strategy="tf.distribute.MirroredStrategy over cpu_devices logical CPU devices carved out "
             "of the one physical CPU (tf.config.set_logical_device_configuration); every "
             "model, wrapper, mask, regularizer variable and optimizer created in its scope",
    batch="the batch sizes are global: each replica computes batch / cpu_devices examples; "
          "gradients are all-reduced across the replicas every step",
    op_counts="ops of the traced train_function and of every function in its library "
              "(cond branches, ...), and graph edges whose two ends are placed on different "
              "devices (each a copy between replicas at run time)",
    profile="after the timed repeats, one profile_steps-step fit per variant under "
            "tf.profiler; per-op CPU self time (framework_op_stats, idle excluded) summed "
            "into categories by op name and type (benchmarks/distributed_overhead.py "
            "categorize); profiling slows ops down, so compare categories, not totals, with "
            "the timings",
)


def run():
    wall = time.perf_counter()
    strategy = distribute.make_strategy("mirrored", cpu_devices=FLAGS.cpu_devices)
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    unknown = set(FLAGS.variants) - set(VARIANTS)
    if unknown or "dense" not in FLAGS.variants:
        raise app.UsageError(f"--variants must include dense and name only {sorted(VARIANTS)}; "
                             f"got {FLAGS.variants}.")
    if FLAGS.steps < 2:
        raise app.UsageError("--steps must be >= 2.")
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    for b in batch_sizes:
        distribute.check_batch_size(b, strategy)
    machine = so.machine_info()
    machine["replicas"] = strategy.num_replicas_in_sync
    machine["devices"] = list(strategy.extended.worker_devices)
    results = {}
    for bs in batch_sizes:
        print(f"batch size {bs} ({bs // strategy.num_replicas_in_sync} per replica): "
              "loading data", flush=True)
        ds, n_batches = so.in_memory_dataset(FLAGS.data_dir, bs)
        variants = []
        for name in FLAGS.variants:
            with strategy.scope():
                variants.append(VARIANTS[name]())
        so.warm_up(variants, ds, bs, n_batches)
        ops = {v.name: op_counts(v.model) for v in variants}
        for name, o in ops.items():
            print(f"  {name:>12s}: {o['total_ops']} ops in the training step, "
                  f"{o['cross_device_edges']} cross-device edges", flush=True)
        raw = so.measure(variants, ds, FLAGS.steps, FLAGS.repeats, FLAGS.n_empty,
                         FLAGS.max_foreign_load, FLAGS.retries)
        summary = so.summarize(raw, FLAGS.steps)
        profiles = {v.name: profile(v, ds, FLAGS.profile_steps) for v in variants} \
            if FLAGS.profile_steps else {}
        for name, prof in profiles.items():
            if prof:
                cells = ", ".join(f"{k} {t:.2f}" for k, t in prof["ms_per_step"].items())
                print(f"  profile {name:>12s}: {prof['total_ms_per_step']:.2f} ms CPU/step: "
                      f"{cells}", flush=True)
        results[str(bs)] = so.batch_record(
            summary, variants, n_batches,
            per_replica_batch=bs // strategy.num_replicas_in_sync, op_counts=ops,
            profile_cpu_ms_per_step=profiles)
        del variants, ds
        gc.collect()
    machine["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    names = list(results[str(batch_sizes[0])]["variants"])
    target = {}
    for bs in batch_sizes:
        ratio = results[str(bs)]["ratios"].get("ours/dense", {}).get("ratio_of_medians")
        if ratio is not None:
            target[bs] = {"ours/dense": ratio, f"within_{TARGET}": ratio <= TARGET}
    report = {
        "benchmark": FLAGS.name,
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": machine,
        "protocol": dict(PROTOCOL, steps=FLAGS.steps, repeats=FLAGS.repeats,
                         warmup_steps=FLAGS.warmup_steps, prune_steps=FLAGS.prune_steps,
                         n_empty=FLAGS.n_empty, batch_sizes=batch_sizes,
                         cpu_devices=FLAGS.cpu_devices,
                         max_foreign_load=FLAGS.max_foreign_load, retries=FLAGS.retries,
                         threads=FLAGS.threads or "tensorflow default"),
        "results": results,
        "target": target,
        "wall_time_s": None,
    }
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot(results, batch_sizes, names, os.path.join(FLAGS.output_dir, FLAGS.name + ".png"),
         strategy.num_replicas_in_sync)
    report["wall_time_s"] = round(time.perf_counter() - wall, 1)
    with open(os.path.join(FLAGS.output_dir, FLAGS.name + ".json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    _print_summary(results, batch_sizes, report)
    return report


def plot(results, batch_sizes, names, path, replicas):
    """step_overhead.py's two-panel bar chart, titled for the strategy."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    original = plt.Figure.suptitle

    def suptitle(fig, *args, **kwargs):
        del args
        return original(fig, f"LeNet-300-100, MNIST, Adam, MirroredStrategy over {replicas} "
                             "logical CPU devices: training-step time (batch = global); "
                             "whiskers: min-max over repeats", **kwargs)

    plt.Figure.suptitle = suptitle
    try:
        so.plot(results, batch_sizes, names, path)
    finally:
        plt.Figure.suptitle = original


def _print_summary(results, batch_sizes, report):
    so.print_summary(results, batch_sizes)
    print(f"target ours/dense <= {TARGET}: {report['target']}")
    print(f"wall time {report['wall_time_s']} s; wrote "
          f"{os.path.join(FLAGS.output_dir, FLAGS.name)}.json/.png")


def main(argv):
    del argv
    run()


if __name__ == "__main__":
    app.run(main)
