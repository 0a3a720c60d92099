"""Model coverage (issue #26): which models tfmot and tf_unilth prune.

For every model of the table (tfmot's own families and the ones it stops
at: RNNs, attention, wrappers, nested and subclassed models, custom layers,
a Keras-applications model), on random data:

  tfmot      `prune_low_magnitude(ConstantSparsity(0.5))` wraps it and one
             epoch trains (or the first line of its error);
  wraps      `tf_unilth.prune` wraps it: the mask keys, the layers kept dense;
  tickets    `find_ticket` with each method of the mode at each target: the
             sparsity reached (over the prunable weights), removed weights
             exactly 0 in the stripped ticket;
  round trip the ticket saved as .keras, loaded in a separate process that
             imports tf_keras (and `coverage_layers`, for the user classes)
             only, outputs compared;
  tflite     the ticket exported by `tf_unilth.export.to_tflite` (sparse
             encoding, checked in LiteRT against Keras), or the first line of
             the converter's error;
  step time  median seconds per training step of the dense model, tfmot's
             wrapped model and ours (one fit of `TIMED_STEPS` steps, repeated,
             interleaved; batch 32).

    python benchmarks/model_coverage.py            # every model, every method at 50% and 90%
    python benchmarks/model_coverage.py --quick    # 3 models, 1 ticket (a smoke run)

Writes benchmarks/results/model_coverage.json (or --output).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tf_unilth  # noqa: E402
from tf_unilth._compat import keras, tf, tfmot  # noqa: E402
from tf_unilth import masks, prunable, wrapper  # noqa: E402
import coverage_layers  # noqa: E402

L = keras.layers
TIMED_STEPS = 20
BATCH = 32


def _text(i):
    return L.Embedding(40, 8, name="embedding")(i)


def mlp():
    i = keras.Input((16,))
    x = L.Dense(32, activation="relu", name="fc1")(i)
    return keras.Model(i, L.Dense(3, name="output")(x))


def cnn():
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(i)
    x = L.SeparableConv2D(8, 3, name="sep")(L.BatchNormalization(name="bn")(x))
    x = L.Conv2DTranspose(4, 3, name="deconv")(x)
    return keras.Model(i, L.Dense(3, name="output")(L.GlobalAveragePooling2D()(x)))


def text_cnn():
    i = keras.Input((10,), dtype="int32")
    x = L.Conv1D(8, 3, activation="relu", name="conv1d")(_text(i))
    return keras.Model(i, L.Dense(3, name="output")(L.GlobalMaxPooling1D()(x)))


def lstm():
    i = keras.Input((10,), dtype="int32")
    return keras.Model(i, L.Dense(3, name="output")(L.LSTM(16, name="lstm")(_text(i))))


def gru_simple_rnn():
    i = keras.Input((10,), dtype="int32")
    x = L.GRU(16, return_sequences=True, name="gru")(_text(i))
    return keras.Model(i, L.Dense(3, name="output")(L.SimpleRNN(16, name="rnn")(x)))


def bidirectional_gru():
    i = keras.Input((10,), dtype="int32")
    x = L.Bidirectional(L.GRU(12, name="gru"), name="bi")(_text(i))
    return keras.Model(i, L.Dense(3, name="output")(x))


def time_distributed():
    i = keras.Input((6, 16))
    x = L.Flatten()(L.TimeDistributed(L.Dense(12, name="dense"), name="td")(i))
    return keras.Model(i, L.Dense(3, name="output")(x))


def transformer():
    i = keras.Input((10,), dtype="int32")
    e = _text(i)
    a = L.MultiHeadAttention(2, 8, name="mha")(e, e)
    x = L.LayerNormalization(name="ln1")(L.Add()([e, a]))
    f = L.Dense(8, name="ff2")(L.Dense(32, activation="relu", name="ff1")(x))
    x = L.LayerNormalization(name="ln2")(L.Add()([x, f]))
    return keras.Model(i, L.Dense(3, name="output")(L.GlobalAveragePooling1D()(x)))


def nested():
    ii = keras.Input((32,))
    inner = keras.Model(ii, L.Dense(32, activation="relu", name="inner_fc")(ii), name="inner")
    block = keras.Sequential([keras.Input((16,)), L.Dense(32, activation="relu", name="fc"),
                              inner], name="block")
    i = keras.Input((16,))
    return keras.Model(i, L.Dense(3, name="output")(block(i)))


def subclassed():
    model = coverage_layers.Sub(name="sub")
    model(np.zeros((1, 16), "float32"))
    return model


def custom_prunable():
    i = keras.Input((16,))
    x = coverage_layers.PrunableDense(32, name="custom")(i)
    return keras.Model(i, L.Dense(3, name="output")(x))


def normalization():
    """EfficientNet's first layers: a Normalization (statistics, nothing to prune)."""
    i = keras.Input((16,))
    norm = L.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).normal(size=(64, 16)).astype("float32"))
    x = L.Dense(32, activation="relu", name="fc1")(norm(i))
    return keras.Model(i, L.Dense(3, name="output")(x))


def mobilenet_v2():
    return keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=3,
                                          classifier_activation=None)


MODELS = {f.__name__: f for f in (mlp, cnn, text_cnn, lstm, gru_simple_rnn, bidirectional_gru,
                                  time_distributed, transformer, nested, subclassed,
                                  custom_prunable, normalization, mobilenet_v2)}
QUICK = ("mlp", "lstm", "nested")
# Every registered method but dense (which makes no ticket).
TICKET_METHODS = tuple(n for n in tf_unilth.methods.names() if n != "dense")
FULL_TICKETS = tuple((m, t) for m in TICKET_METHODS for t in (0.5, 0.9))
QUICK_TICKETS = (("random", 0.5),)
# Budgets a few steps long (the point is that each method runs on each model).
# LTH trains one epoch a round, as many rounds as its target takes on the
# model (a model with little to prune needs more rounds to reach 90% overall).
_STAGED = dict(epochs=5, rounds=2, round_epochs=1, patience=1, min_finetune_epochs=1)
METHOD_ARGS = {"random": dict(epochs=2), "lth": dict(epochs_per_round=1, prune_rate=0.55),
               "unilth": _STAGED, "unidlth": _STAGED,
               "unilth_retrain_k": dict(_STAGED, retrain_epochs=1),
               "dlth": dict(epochs=3, finetune_epochs=1)}


def data_for(model, n=96, seed=0):
    rng = np.random.default_rng(seed)
    spec = model.inputs[0] if model.inputs else None
    shape = tuple(spec.shape[1:]) if spec is not None else (16,)
    if spec is not None and spec.dtype.is_integer:
        x = rng.integers(0, 40, size=(n,) + shape).astype("int32")
    else:
        x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.integers(0, 3, size=n)


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _compile(model):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _step_seconds(model, x, y, callbacks, repeats):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True).repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0, callbacks=callbacks)  # tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=TIMED_STEPS, epochs=1, verbose=0, callbacks=callbacks)
        times.append((time.perf_counter() - start) / TIMED_STEPS)
    return statistics.median(times)


def tfmot_row(build, x, y, repeats):
    model = tf_unilth.models.functional(build())
    try:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=5))
    except Exception as error:  # noqa: BLE001 (what tfmot says is the result)
        return {"wraps": False, "trains": False, "error": first_line(error)}, None
    try:
        _compile(pruned)
        seconds = _step_seconds(pruned, x, y, [tfmot.sparsity.keras.UpdatePruningStep()],
                                repeats)
    except Exception as error:  # noqa: BLE001
        return {"wraps": True, "trains": False, "error": first_line(error)}, None
    return {"wraps": True, "trains": True, "error": None}, seconds


def ours_step(build, x, y, repeats):
    from tf_unilth import callbacks, schedules  # pylint: disable=import-outside-toplevel
    pruned = wrapper.prune(build(), lambda layer: schedules.TriggeredSchedule.rounds(
        [0.5], steps_per_round=5))
    for layer in wrapper.wrappers(pruned):
        layer.pruning_schedule.start(0)
    _compile(pruned)
    wrapper.link_optimizer(pruned)
    return _step_seconds(pruned, x, y, [callbacks.UpdatePruningStep()], repeats)


def _tflite(model, x, path, note):
    from tf_unilth import export  # pylint: disable=import-outside-toplevel
    report = export.to_tflite(model, path, sample=x, compare_dense=False)
    encoded = report.encoded or {}
    return {"ok": bool(report.passed), "relative_error": report.relative_error,
            "size_bytes": report.size_bytes,
            "encoded_sparsity": encoded.get("encoded_sparsity"),
            "ops": sorted(set(encoded.get("ops") or [])), "needs": note, "error": None}


def tflite_check(ticket, x, path):
    """The ticket as exported; when the converter refuses a dynamic batch
    (RNN loops: TensorList ops need a static element shape), the same ticket
    behind a batch-1 Input, as TFLite's RNN guide builds it."""
    try:
        return _tflite(ticket, x[:32], path, None)
    except Exception as error:  # noqa: BLE001 (the converter's answer is the result)
        first = first_line(error)
    try:
        spec = ticket.inputs[0]
        inputs = keras.Input(batch_shape=(1,) + tuple(spec.shape[1:]), dtype=spec.dtype)
        fixed = keras.Model(inputs, ticket(inputs))
        found = _tflite(fixed, x[:1], path, "a fixed batch size (batch-1 Input)")
        found["dynamic_batch_error"] = first
        return found
    except Exception as error:  # noqa: BLE001
        return {"ok": False, "error": first, "batch1_error": first_line(error)}


def ticket_checks(name, result, x, work):
    ticket = result.model
    zeros = masks.zeros_mask(ticket)
    found = {"sparsity": round(result.sparsity, 4),
             "ticket_zeros_sparsity": round(zeros.sparsity, 4),
             "removed_exactly_zero": bool(abs(zeros.sparsity - result.sparsity) < 1e-9),
             "val_accuracy": result.final["val_accuracy"]}
    path = os.path.join(work, f"{name}.keras")
    ticket.save(path)
    np.save(os.path.join(work, f"{name}.x.npy"), x[:8])
    np.save(os.path.join(work, f"{name}.out.npy"), ticket(x[:8], training=False).numpy())
    found["tflite"] = tflite_check(ticket, x, os.path.join(work, f"{name}.tflite"))
    return found


ROUND_TRIP = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import tf_keras as keras
import coverage_layers  # the user classes (tf_keras only)
out = {}
for name in json.loads(sys.argv[3]):
    base = sys.argv[1] + "/" + name
    try:
        m = keras.models.load_model(base + ".keras", compile=False)
        got = m(np.load(base + ".x.npy"), training=False).numpy()
        out[name] = {"ok": bool(np.allclose(got, np.load(base + ".out.npy"), atol=1e-5)),
                     "error": None}
    except Exception as e:
        out[name] = {"ok": False, "error": type(e).__name__ + ": " + str(e).splitlines()[0]}
print(json.dumps(out))
print("tf_unilth imported:", "tf_unilth" in sys.modules, file=sys.stderr)
"""


def round_trips(work, names):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, work, HERE, json.dumps(names)],
                          capture_output=True, text=True, env=env, check=False)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr
    except (IndexError, ValueError):
        return {n: {"ok": False, "error": done.stderr[-300:]} for n in names}, done.stderr


def run(quick=False, output=None, repeats=3, printer=print, names=None):
    names = tuple(names or (QUICK if quick else MODELS))
    tickets = QUICK_TICKETS if quick else FULL_TICKETS
    work = tempfile.mkdtemp(prefix="model_coverage_")
    rows, saved = [], []
    for name in names:
        build = MODELS[name]
        printer(f"== {name}")
        row = {"model": name}
        functional = tf_unilth.models.functional(build())
        x, y = data_for(functional)
        row["tfmot"], tfmot_seconds = tfmot_row(build, x, y, repeats)
        try:
            found = prunable.plan(functional)
            row["wraps"] = {"ok": True, "keys": found.keys(),
                            "kept_dense": [{"layer": p, "class": c, "weights": n}
                                           for p, c, n in found.kept], "error": None}
        except Exception as error:  # noqa: BLE001
            row["wraps"] = {"ok": False, "error": first_line(error)}
            rows.append(row)
            continue
        row["tickets"] = []
        for method, target in tickets:
            tag = f"{name}_{method}_{int(target * 100)}"
            record = {"method": method, "target": target}
            try:
                result = tf_unilth.find_ticket(
                    build(), method, (x, y), (x, y), target_sparsity=target, batch_size=BATCH,
                    verbose=0, printer=lambda *a: None, floor_count=2, jit_compile=False,
                    **METHOD_ARGS[method])
                record.update(ticket_checks(tag, result, x, work))
                saved.append(tag)
            except Exception as error:  # noqa: BLE001
                record["error"] = first_line(error)
            row["tickets"].append(record)
            printer(f"   {method} {target}: {record}")
        dense = _compile(tf_unilth.models.functional(build()))
        row["step_seconds"] = {"dense": _step_seconds(dense, x, y, [], repeats),
                               "tfmot": tfmot_seconds,
                               "tf_unilth": ours_step(build, x, y, repeats)}
        rows.append(row)
    trips, stderr = round_trips(work, saved)
    for row in rows:
        for record in row.get("tickets", []):
            tag = f"{row['model']}_{record['method']}_{int(record['target'] * 100)}"
            if tag in trips:
                record["round_trip"] = trips[tag]
    summary = {
        "benchmark": "model_coverage", "quick": quick, "rows": rows,
        "round_trip_process": "tf_keras + benchmarks/coverage_layers.py only; " + (
            stderr.strip().splitlines()[-1] if stderr.strip() else ""),
        "protocol": {"data": "random, 96 examples, 3 classes", "batch": BATCH,
                     "timed_steps": TIMED_STEPS, "repeats": repeats,
                     "tfmot": "prune_low_magnitude(ConstantSparsity(0.5, 0, frequency=5))",
                     "tickets": [list(t) for t in tickets], "method_args": METHOD_ARGS},
        "machine": {"python": platform.python_version(), "tensorflow": tf.__version__,
                    "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
    }
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def _reached(tickets, target):
    """'0.9: 6/6 methods, 0.899-0.900' (the methods that failed named)."""
    at = [r for r in tickets if r["target"] == target]
    got = [r["sparsity"] for r in at if "sparsity" in r]
    failed = [r["method"] for r in at if "sparsity" not in r]
    cell = f"{target}: {len(got)}/{len(at)} methods"
    if got:
        cell += f", {min(got):.3f}-{max(got):.3f}"
    return cell + (f" (failed: {', '.join(failed)})" if failed else "")


def table(summary):
    """The README table (markdown) of a summary."""
    lines = ["| model | tfmot wraps / trains | tf_unilth wraps (keys, kept dense) | "
             "sparsity reached (target: methods ok, range) | zeros exact | .keras round trip | "
             "TFLite ok (encoded sparsity) | step ms dense / tfmot / ours |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        t = row["tfmot"]
        tfmot_cell = ("yes / yes" if t["trains"] else
                      f"{'yes' if t['wraps'] else 'no'} / no: {t['error'][:70]}")
        w = row["wraps"]
        wraps = (f"yes ({len(w['keys'])}, {len(w['kept_dense'])})" if w["ok"]
                 else f"no: {w['error'][:70]}")
        tickets = row.get("tickets", [])
        reached = "; ".join(_reached(tickets, target)
                            for target in sorted({r["target"] for r in tickets}))
        zeros = "yes" if tickets and all(r.get("removed_exactly_zero") for r in tickets) \
            else "no"
        trips = "yes" if tickets and all(r.get("round_trip", {}).get("ok") for r in tickets) \
            else "no"
        tfl = [r.get("tflite", {}) for r in tickets]
        tfl_ok = "yes" if tfl and all(x.get("ok") for x in tfl) else "no"
        if tfl and any(x.get("needs") for x in tfl):
            tfl_ok += " (batch-1 Input)"
        enc = [x.get("encoded_sparsity") for x in tfl if x.get("encoded_sparsity") is not None]
        if enc:
            tfl_ok += f" ({min(enc):.2f}-{max(enc):.2f})"
        sec = row.get("step_seconds") or {}
        ms = " / ".join("-" if sec.get(k) is None else f"{1000 * sec[k]:.1f}"
                        for k in ("dense", "tfmot", "tf_unilth"))
        lines.append(f"| {row['model']} | {tfmot_cell} | {wraps} | {reached} | {zeros} | "
                     f"{trips} | {tfl_ok} | {ms} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 models, 1 ticket each.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed fits per variant.")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "model_coverage.json"))
    args = parser.parse_args()
    print(table(run(args.quick, args.output, args.repeats)))


if __name__ == "__main__":
    main()
