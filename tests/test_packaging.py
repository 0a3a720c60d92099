"""The package as a user installs it: a non-editable install into a fresh
environment, its command run from outside the checkout; the core without the
optional extras; an import that does nothing but the documented set-up."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--epochs=8", "--rounds=2", "--round_epochs=1", "--patience=1",
         "--min_finetune_epochs=1", "--train_limit=1200", "--validation_size=300",
         "--test_limit=300", "--verbose=0"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with the checkout installed as a user does
    (`pip install "<checkout>[all]"`, not editable). It sees this machine's
    packages (TensorFlow is not downloaded again), so only tf_unilth comes
    from the checkout; no network is needed."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(home)
    python = home / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-build-isolation",
         "--no-deps", "--quiet", f"{ROOT}[all]"],
        capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "no such option: --python" in done.stderr:
        pytest.skip("this pip cannot install into another environment (pip < 22.3)")
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def test_a_non_editable_install_runs_the_main_job_from_outside_the_checkout(
        installed, mnist_data_dir, tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=mnist_data_dir, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import tf_unilth; print(tf_unilth.__file__, tf_unilth.__version__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert str(installed) in where.stdout and str(ROOT) not in where.stdout  # not the checkout
    command = installed / "bin" / "tf-unilth"
    out = tmp_path / "runs" / "unilth"
    done = subprocess.run([str(command), "find-ticket", "--method=unilth", "--target_sparsity=0.9",
                           f"--output_dir={out}", *SMALL], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["sparsity"] == pytest.approx(0.9, abs=0.005)
    assert (out / "ticket.keras").exists()
    exported = subprocess.run([str(command), "export-tflite", f"--ticket={out / 'ticket.keras'}",
                               f"--output={out / 'ticket.tflite'}", "--check_examples=100",
                               "--latency_runs=0"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (out / "ticket.tflite").stat().st_mode & 0o777 == (out / "results.json").stat().st_mode & 0o777


# The extras, made missing: a finder that refuses their imports.
WITHOUT_EXTRAS = textwrap.dedent("""
    import importlib.abc, sys

    class NoExtras(importlib.abc.MetaPathFinder):
        BLOCKED = ("tensorflow_datasets", "ai_edge_litert", "matplotlib", "importlib_resources")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked)")
            return None

    sys.meta_path.insert(0, NoExtras())
""")


def test_the_core_runs_without_the_extras_and_names_the_one_to_install(tmp_path):
    script = WITHOUT_EXTRAS + textwrap.dedent(f"""
        import numpy as np
        import tf_unilth
        rng = np.random.default_rng(0)
        x = rng.normal(size=(96, 8)).astype("float32")
        y = (x[:, 0] > 0).astype("int64")
        inputs = tf_unilth.keras.Input((8,))
        hidden = tf_unilth.keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
        model = tf_unilth.keras.Model(inputs, tf_unilth.keras.layers.Dense(2, name="output")(hidden))
        result = tf_unilth.find_ticket(model, "lth", (x, y), (x, y), target_sparsity=0.5,
                                       epochs_per_round=1, prune_rate=0.5, batch_size=32,
                                       verbose=0, printer=lambda *_: None)
        print("ticket", round(result.sparsity, 3))
        for name, call in [
                ("data", lambda: tf_unilth.data.load("mnist")),
                ("export", lambda: tf_unilth.to_tflite(result.model, {str(tmp_path / 'x.tflite')!r},
                                                       sample=x)),
                ("plots", lambda: tf_unilth.results.plot_curve(result.rounds,
                                                               {str(tmp_path / 'c.png')!r}))]:
            try:
                call()
                print(name, "no error")
            except ImportError as e:
                print(name, "ImportError:", e)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert float(lines["ticket"]) >= 0.5
    for extra in ("data", "export", "plots"):
        assert f'pip install "tf_unilth[{extra}]"' in lines[extra], lines[extra]


def test_importing_does_nothing_but_set_keras_2_up():
    script = textwrap.dedent("""
        import os, sys, time
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        start = time.perf_counter()
        import tf_unilth
        took = time.perf_counter() - start
        heavy = [m for m in ("tensorflow", "tf_keras", "matplotlib", "tensorflow_datasets",
                             "ai_edge_litert") if m in sys.modules]
        print(os.environ.get("TF_USE_LEGACY_KERAS"), heavy, took < 1.0)
        tf_unilth.prune  # the API loads on first use
        print("tensorflow" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()[-2:]
    assert first == "1 [] True"
    assert second == "True"


def test_a_plot_leaves_the_users_matplotlib_backend_alone(tmp_path):
    script = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("svg")
        import tf_unilth
        tf_unilth.results.plot_curve([{{"round": 1, "sparsity": 0.5, "test_accuracy": 0.9}}],
                                     {str(tmp_path / 'curve.png')!r})
        print(matplotlib.get_backend())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "svg"
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_setup_py_is_a_thin_entry_with_pyprojects_metadata():
    import ast  # pylint: disable=import-outside-toplevel
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [(c.func.id, c.args, c.keywords) for c in calls] == [("setup", [], [])], \
        "setup.py passes metadata: it belongs in pyproject.toml"
    done = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import tf_unilth  # pylint: disable=import-outside-toplevel
    assert done.stdout.split()[-2:] == ["tf_unilth", tf_unilth.__version__]
