"""README.md's code runs as written: every Python snippet (in order, in one
namespace, as a reader would paste them; the MNIST they load cut to a subset
through data.load's documented limits) and every shell command (with short
budgets appended as documented flags; the commands themselves unedited).

The README's install command is the packaging test's (tests/test_packaging.py
installs the checkout the same way, in a fresh environment), and its test
command is this suite; both are checked to be there, not run again here.
"""

import gc
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(python|sh)\n(.*?)```", README, re.S)
PYTHON = [code for kind, code in BLOCKS if kind == "python"]
SHELL = [line.strip() for kind, code in BLOCKS if kind == "sh"
         for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]

SUBSET = dict(train_limit=6000, validation_size=1000, test_limit=1000)
SMALL = ["--train_limit=1200", "--validation_size=300", "--test_limit=300", "--verbose=0"]
# The documented flags that make each command short here (appended, in order).
SHORT = {
    "find-ticket": ["--epochs=8", "--rounds=2", "--round_epochs=1", "--patience=1",
                    "--min_finetune_epochs=1", *SMALL],
    "launch-workers": ["--epochs=8", "--rounds=2", "--round_epochs=1", "--patience=1",
                       "--min_finetune_epochs=1", *SMALL],
    "export-tflite": ["--check_examples=100", "--latency_runs=0"],
    "stability": ["--train_limit=1200", "--validation_size=300", "--epochs=1",
                  "--lth_rounds=1", "--uni_methods=", "--rewind_points=0",
                  "--nodense_reference"],
}


def test_the_readme_has_its_three_commands_and_they_are_what_ci_runs():
    assert SHELL[:3] == ['pip install ".[test]"', "tf-unilth find-ticket --method=unilth "
                         "--target_sparsity=0.9 --output_dir=runs/unilth_mnist",
                         "python -m pytest -q tests"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert SHELL[0] in ci and SHELL[2] in ci
    assert (ROOT / "tests" / "test_packaging.py").exists()  # runs the install command


def test_every_python_snippet_runs_in_order(mnist_data_dir, tmp_path, monkeypatch):
    import tf_unilth  # pylint: disable=import-outside-toplevel
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", mnist_data_dir)
    # The snippets as written; the MNIST they load is cut short through
    # data.load's documented limits (as the shell commands get short budgets).
    load = tf_unilth.data.load

    def short_load(*args, **kwargs):
        for name, value in SUBSET.items():
            kwargs.setdefault(name, value)
        return load(*args, **kwargs)

    monkeypatch.setattr(tf_unilth.data, "load", short_load)
    namespace = {"__name__": "readme"}
    for i, code in enumerate(PYTHON):
        exec(compile(code, f"README.md (python snippet {i + 1})", "exec"), namespace)  # pylint: disable=exec-used
    result = namespace["result"]
    assert result.sparsity == pytest.approx(0.9, abs=0.005)
    assert result.final["test_accuracy"] > 0.9
    assert not namespace["tf_unilth"].wrapper.wrappers(namespace["ticket"])
    assert (tmp_path / "pruned.keras").exists()
    # The snippets' Rewind callback keeps its temporary checkpoints while it
    # lives (a reader's session ends there): let it go, and them with it.
    namespace.clear()
    gc.collect()


def _command(line):
    """The README's command line, and the short-budget flags its command takes."""
    words = shlex.split(line)
    assert words[0] == "tf-unilth", line
    return words, SHORT[words[1]]


def test_every_shell_command_runs(mnist_data_dir, tmp_path):
    exe = shutil.which("tf-unilth")
    assert exe, "the tf-unilth command is not installed (README: pip install \".[test]\")"
    env = dict(os.environ, TFDS_DATA_DIR=mnist_data_dir, TF_CPP_MIN_LOG_LEVEL="2")
    ran = []
    for line in SHELL:
        if line.startswith("pip install") or "pytest" in line:
            continue  # see the module doc
        words, short = _command(line)
        done = subprocess.run(words + short, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        ran.append(words[1])
    assert sorted(set(ran)) == sorted(SHORT)
    results = json.loads((tmp_path / "runs/unilth_mnist/results.json").read_text())
    assert results["final"]["sparsity"] == pytest.approx(0.9, abs=0.005)
    assert not (tmp_path / "runs/unilth_mnist/state").exists()  # removed once finished
    assert (tmp_path / "runs/unilth_mnist/ticket.tflite").exists()
    assert (tmp_path / "runs/stability/stability.json").exists()
    for name in ("unilth_mirrored", "unilth_2workers"):
        assert json.loads((tmp_path / "runs" / name / "results.json").read_text())["final"]


def test_python_m_tf_unilth_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "tf_unilth", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0
    assert all(name in done.stdout for name in SHORT)
