"""TFLite export: round trip, sparse encoding, int8 + delegate fallback, stripping, errors,
LiteRT imported lazily, the command-line program."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_unilth._compat import keras, tfmot
from tf_unilth import export, masks, wrapper
from tf_unilth.export import interpreter
from helpers import toy_data, toy_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, HIDDEN = 64, 128  # big enough for the converter to bother encoding sparsity


def _model(seed=0):
    return toy_model(dim=DIM, hidden=HIDDEN, seed=seed)


def _sample(n=200):
    return toy_data(n=n, dim=DIM)[0]


def _zero_unstructured(model, sparsity=0.9):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k = layer.kernel.numpy()
            layer.kernel.assign(np.where(np.abs(k) > np.quantile(np.abs(k), sparsity), k, 0))
    return model


def _zero_blocks(model, sparsity=0.9, rows=4):
    """Zeros whole blocks of `rows` consecutive input rows per output column."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k = layer.kernel.numpy()
            norms = np.sqrt((k.reshape(k.shape[0] // rows, rows, -1) ** 2).sum(1))
            keep = np.repeat(norms > np.quantile(norms, sparsity), rows, axis=0)
            layer.kernel.assign(k * keep)
    return model


def _numpy_forward(kernels_biases, x):
    """The toy model's forward pass in numpy (relu, relu, logits)."""
    h = x
    for i, (k, b) in enumerate(kernels_biases):
        h = h @ k + b
        if i < len(kernels_biases) - 1:
            h = np.maximum(h, 0)
    return h


def test_float_sparse_export_round_trips_and_is_smaller(tmp_path):
    model = _zero_unstructured(_model())
    x = _sample()
    path = tmp_path / "ticket.tflite"
    report = export.to_tflite(model, str(path), sample=x)
    assert path.exists() and path.stat().st_size == report.size_bytes
    assert report.quantize == "float32" and report.stripped == "none"
    # Independent of the report: run the file and compare with Keras.
    got, _, _ = export.predict(str(path), x)
    expected = model(x).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))
    assert report.relative_error <= 1e-5 and report.argmax_agreement == 1.0
    assert report.model_sparsity == pytest.approx(0.9, abs=0.01)
    # ~90% sparse: the file keeps about a tenth of the weights.
    assert report.size_bytes < 0.35 * report.dense_size_bytes
    assert report.encoded["encoded_sparsity"] > 0.85
    formats = {w["format"] for w in report.encoded["weights"]}
    assert formats == {"unstructured (CSR)"}
    assert {w["use"] for w in report.encoded["weights"]} == {"densified at load"}


def test_dense_export_stores_every_weight(tmp_path):
    report = export.to_tflite(_model(), str(tmp_path / "dense.tflite"), sparse=False,
                              sample=_sample())
    assert report.encoded["encoded_sparsity"] == 0.0
    assert {w["format"] for w in report.encoded["weights"]} == {"dense"}
    assert report.dense_size_bytes == report.size_bytes


def test_4x1_blocks_get_the_block_sparse_kernel(tmp_path):
    model = _zero_blocks(_model())
    report = export.to_tflite(model, str(tmp_path / "block.tflite"), sample=_sample(),
                              compare_dense=False, latency_runs=20)
    weights = report.encoded["weights"]
    assert [w["format"] for w in weights] == ["block 1x4"] * 3  # TFLite layout [out, in]
    assert {w["use"] for w in weights} == {"sparse kernel"}
    assert "DENSIFY" not in report.encoded["ops"]
    assert report.relative_error <= 1e-5
    assert report.latency_us["exported"] > 0


def test_prefer_size_reencodes_mostly_empty_blocks_as_csr(tmp_path):
    model = _zero_unstructured(_model(), 0.97)
    x = _sample()
    speed = export.to_tflite(model, str(tmp_path / "speed.tflite"), sample=x, compare_dense=False)
    # So sparse that nearly every 1x4 block is empty: the converter stores 1x4
    # blocks, zeros inside kept blocks included.
    assert {w["format"] for w in speed.encoded["weights"]} == {"block 1x4"}
    size = export.to_tflite(model, str(tmp_path / "size.tflite"), prefer="size", sample=x,
                            compare_dense=False)
    assert size.reencoded == 3 and size.size_bytes < 0.7 * speed.size_bytes
    weights = size.encoded["weights"]
    assert {(w["format"], w["use"]) for w in weights} == {("unstructured (CSR)", "densified at load")}
    nonzeros = sum(int(np.count_nonzero(l.kernel.numpy())) for l in model.layers[1:])
    assert sum(w["stored_values"] for w in weights) == nonzeros
    assert size.encoded["ops"].count("DENSIFY") == 3
    got, _, _ = export.predict(size.path, x)
    expected = model(x).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_dynamic_int8_export_and_delegate_fallback(tmp_path):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    model = _zero_unstructured(_model())
    x = _sample()
    report = export.to_tflite(model, str(tmp_path / "q.tflite"), quantize="dynamic_int8",
                              sample=x)
    assert report.quantize == "dynamic_int8"
    assert any(w["dtype"] == "INT8" for w in report.encoded["weights"])
    assert report.size_bytes < report.dense_size_bytes
    assert report.relative_error <= export.TOLERANCES["dynamic_int8"][0]
    assert report.argmax_agreement >= export.TOLERANCES["dynamic_int8"][1]
    # Does the default resolver (XNNPACK) load this file? The report must say
    # which resolver it used accordingly.
    try:
        Interpreter(model_path=report.path, num_threads=1).allocate_tensors()
        expected = export.RESOLVER_DEFAULT
    except RuntimeError:
        expected = export.RESOLVER_BUILTIN
    assert report.resolver == expected
    assert bool(report.fallback_reason) == (expected == export.RESOLVER_BUILTIN)


def test_delegate_failure_falls_back_and_other_errors_do_not(monkeypatch, caplog):
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    content = export.convert(_model(), sparse=False)
    real = litert.Interpreter

    class FailingDelegate(real):
        """The default resolver fails in allocate_tensors(), as XNNPACK does for
        sparse dynamic int8; the builtin resolver works."""
        message = "failed to delegate FULLY_CONNECTED node (TfLiteXNNPackDelegate) failed to prepare."

        def __init__(self, *args, experimental_op_resolver_type=litert.OpResolverType.AUTO, **kw):
            super().__init__(*args, experimental_op_resolver_type=experimental_op_resolver_type,
                             **kw)
            self.fail = experimental_op_resolver_type == litert.OpResolverType.AUTO

        def allocate_tensors(self):
            if self.fail:
                raise RuntimeError(self.message)
            return super().allocate_tensors()

    monkeypatch.setattr(litert, "Interpreter", FailingDelegate)
    with caplog.at_level("WARNING", logger="tf_unilth.export.interpreter"):
        out, resolver, reason = export.predict(content, _sample(8))
    assert resolver == export.RESOLVER_BUILTIN and "TfLiteXNNPackDelegate" in reason
    assert out.shape == (8, 3)
    assert "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in caplog.text
    FailingDelegate.message = "tensor has the wrong shape"  # not a delegate failure
    with pytest.raises(RuntimeError, match="wrong shape"):
        export.predict(content, _sample(8))


def test_strips_our_wrappers_and_applies_the_masks(tmp_path):
    pruned = wrapper.prune(_model())
    selection = masks.magnitude_layerwise(pruned, 0.8)
    masks.remove(pruned, selection)
    kernels = [(l.layer.kernel.numpy() * l.pruning_vars[0][1].numpy(), l.layer.bias.numpy())
               for l in wrapper.wrappers(pruned)]
    x = _sample()
    report = export.to_tflite(pruned, str(tmp_path / "w.tflite"), sample=x, compare_dense=False)
    assert report.stripped == "tf_unilth"
    assert report.model_sparsity == pytest.approx(0.8, abs=0.01)
    got, _, _ = export.predict(report.path, x)
    expected = _numpy_forward(kernels, x)
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_strips_tfmot_wrappers_and_applies_the_masks(tmp_path):
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        _model(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    rng = np.random.default_rng(1)
    kernels = []
    for layer in wrapper.wrappers(pruned):
        weight, mask, _ = layer.pruning_vars[0]
        m = (rng.random(mask.shape) > 0.7).astype("float32")
        mask.assign(m)  # the weights themselves are still dense
        kernels.append((weight.numpy() * m, layer.layer.bias.numpy()))
    x = _sample()
    report = export.to_tflite(pruned, str(tmp_path / "t.tflite"), sample=x, compare_dense=False)
    assert report.stripped == "tfmot"
    assert report.model_sparsity == pytest.approx(0.7, abs=0.03)
    got, _, _ = export.predict(report.path, x)
    expected = _numpy_forward(kernels, x)
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_saved_ticket_path_is_loaded(tmp_path):
    model = _zero_unstructured(_model())
    saved = tmp_path / "ticket.keras"
    model.save(saved)
    report = export.to_tflite(str(saved), str(tmp_path / "t.tflite"), sample=_sample(),
                              compare_dense=False)
    assert report.model_sparsity == pytest.approx(0.9, abs=0.01)


def test_a_mismatch_raises(tmp_path, monkeypatch):
    real = interpreter.predict  # what to_tflite runs the file with
    monkeypatch.setattr(interpreter, "predict",
                        lambda *a, **k: (real(*a, **k)[0] + 1.0,) + real(*a, **k)[1:])
    with pytest.raises(export.ExportCheckError, match="relative error"):
        export.to_tflite(_model(), str(tmp_path / "m.tflite"), sample=_sample(),
                         compare_dense=False)
    assert (tmp_path / "m.tflite").exists()  # kept, as the message says


def test_wrong_delegate_outputs_switch_to_the_builtin_kernels(tmp_path, monkeypatch):
    real = interpreter.predict  # what to_tflite runs the file with

    def nan_with_xnnpack(*args, resolver=None, **kw):
        out, used, reason = real(*args, resolver=resolver, **kw)
        if used == export.RESOLVER_DEFAULT:
            out = out.copy()
            out[:, 0] = np.nan  # what XNNPACK returned for int8 1x16 block-sparse kernels
        return out, used, reason

    monkeypatch.setattr(interpreter, "predict", nan_with_xnnpack)
    report = export.to_tflite(_model(), str(tmp_path / "n.tflite"), sample=_sample(),
                              compare_dense=False)
    assert report.resolver == export.RESOLVER_BUILTIN and report.passed
    assert "non-finite" in report.fallback_reason and report.relative_error <= 1e-5


def test_bad_inputs_have_clear_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="quantize='int4'.*dynamic_int8"):
        export.to_tflite(model, str(tmp_path / "a.tflite"), quantize="int4")
    with pytest.raises(ValueError, match="prefer='small'.*'size'"):
        export.to_tflite(model, str(tmp_path / "a.tflite"), prefer="small")
    with pytest.raises(FileNotFoundError, match="No model file.*find_ticket"):
        export.to_tflite(str(tmp_path / "missing.keras"), str(tmp_path / "a.tflite"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.to_tflite(model, str(tmp_path / "no" / "dir" / "a.tflite"))
    with pytest.raises(ValueError, match="is a directory"):
        export.to_tflite(model, str(tmp_path))
    with pytest.raises(TypeError, match="tf_keras"):
        export.to_tflite(object(), str(tmp_path / "a.tflite"))
    assert not os.listdir(tmp_path)  # nothing written


def test_keras3_model_is_refused(tmp_path):
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 not installed")
    model = keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="Keras 3.*tf_keras"):
        export.to_tflite(model, str(tmp_path / "k3.tflite"))


def test_missing_litert_raises_an_import_error_naming_the_fix(monkeypatch):
    content = export.convert(_model(), sparse=False)  # TensorFlow only, no LiteRT
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter",
                 "ai_edge_litert.schema_py_generated"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of it now fails
    fix = 'pip install "tf_unilth[export]"'
    for call in (lambda: export.predict(content, _sample(8)),
                 lambda: export.inspect_tflite(content),
                 lambda: export.smallest_encoding(content)):
        with pytest.raises(ImportError) as err:
            call()
        assert fix in str(err.value) and isinstance(err.value, export.MissingLiteRTError)


def test_importing_tf_unilth_does_not_load_litert():
    code = ("import sys, tf_unilth; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ai_edge_litert'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_program_prints_the_report_and_errors_in_one_line(tmp_path):
    model = _zero_unstructured(_model())
    model.save(tmp_path / "ticket.keras")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def program(*args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "export_tflite.py"),
                               *args], capture_output=True, text=True, env=env, cwd=tmp_path)

    out = program("--ticket=ticket.keras", "--output=t.tflite", "--dataset=none",
                  "--latency_runs=0", "--report=report.json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("wrote t.tflite (float32, sparse=True, prefer=speed)")
    assert any(line.startswith("  check on 64 random inputs in [0, 1)") for line in lines)
    assert lines[-1] == "report written to report.json"
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True
    # Quiet: no INFO lines from TensorFlow's or absl's Python logging (e.g. the
    # converter's "Using new converter"), nor the C++ INFO lines that
    # TF_CPP_MIN_LOG_LEVEL=2 (set by the script when unset) hides.
    assert "INFO:tensorflow" not in out.stderr and "Using new converter" not in out.stderr
    assert "cpu_feature_guard" not in out.stderr

    out = program("--ticket=missing.keras", "--output=t.tflite", "--dataset=none")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: No model file at 'missing.keras'")
    assert "Traceback" not in out.stderr
