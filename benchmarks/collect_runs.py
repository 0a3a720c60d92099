"""Collects finished `examples/find_ticket.py` runs into one JSON table.

The tuning and diagnostic runs quoted in benchmarks/README.md live in scratch
directories; this keeps what they measured (the flags that were set, val/test
accuracy, epochs, steps, the method's own summary) in a committed file.

    python benchmarks/collect_runs.py --runs=/tmp/bg/a,/tmp/bg/b \
        --output=benchmarks/results/tuning_runs.json
"""

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", [], "Run directories (each holding a results.json).")
flags.DEFINE_string("output", None, "JSON file to write (runs already in it are kept).")
flags.mark_flag_as_required("output")

# Flags that say where things are, not what was run.
_PLUMBING = {"output_dir", "data_dir", "verbose", "logtostderr", "alsologtostderr"}


def summary(path):
    with open(os.path.join(path, "results.json")) as f:
        r = json.load(f)
    set_flags = {k: v for k, v in sorted(r.get("flags", {}).items())
                 if v is not None and k not in _PLUMBING}
    return {"run": os.path.basename(os.path.normpath(path)), "method": r["method"],
            "flags": set_flags, "sparsity": r["final"]["sparsity"],
            "val_accuracy": r["final"]["val_accuracy"],
            "test_accuracy": r["final"]["test_accuracy"], "epochs": r["total"]["epochs"],
            "train_steps": r["total"]["train_steps"], "method_info": r.get("method_info")}


def load_table(path):
    """{run name: row} of a JSON table written by `write_table` ({} if absent)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {row["run"]: row for row in json.load(f)["runs"]}


def write_table(path, table, **meta):
    """Writes the rows sorted by run name under "runs", after the `meta` keys."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({**meta, "runs": sorted(table.values(), key=lambda r: r["run"])}, f, indent=1)


def main(argv):
    del argv
    table = load_table(FLAGS.output)
    for path in FLAGS.runs:
        if not os.path.exists(os.path.join(path, "results.json")):
            raise app.UsageError(f"{path} has no results.json: the run has not finished.")
        row = summary(path)
        table[row["run"]] = row
    write_table(FLAGS.output, table)
    for row in sorted(table.values(), key=lambda r: r["run"]):
        print(f"{row['run']:28s} {row['method']:8s} s={row['sparsity']:.3f} "
              f"val {100 * row['val_accuracy']:.2f}% test {100 * row['test_accuracy']:.2f}% "
              f"{row['epochs']} epochs")


if __name__ == "__main__":
    app.run(main)
