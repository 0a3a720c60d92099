"""A run directory: its flags, results.json, the ticket and the accuracy plot."""

import json
import os

FLAGS_FILE = "flags.json"
RESULTS_FILE = "results.json"
# Flags that change how a run goes, not what it computes: a run may be
# resumed with others (e.g. --data_dir where the data is found offline).
NOT_COMPARED = ("verbose", "data_dir", "peer_timeout", "keep_state", "restart",
                "steps_per_execution", "plugin")
# What a run writes into its directory (what --restart removes).
RUN_FILES = (FLAGS_FILE, RESULTS_FILE, "ticket.keras", "curve.png", "logs", "state")


class FlagsConflict(ValueError):
    """The run directory belongs to a run with other flags."""


def _write_atomic(path, text, mode=0o644):
    """`text` into `path` as one step (a unique temporary name, then a rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class RunDir:
    """One directory per run (OpenLTH-style): flags.json when the run starts,
    results at the end. Only the chief of a multi-worker job writes them."""

    def __init__(self, path):
        self.root = path

    def path(self, name):
        return os.path.join(self.root, name)

    def ensure_writable(self):
        """Creates the directory; a clear error when it cannot be written."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise NotADirectoryError(f"--output_dir {self.root} is a file, not a directory; "
                                     "give a directory (it is created if missing).")
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = self.path(f".write-test-{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise PermissionError(f"--output_dir {self.root} cannot be written "
                                  f"({e.strerror or e}); give a directory you can write to.") from None

    def status(self, flag_values):
        """'new', 'resume' or 'finished'; FlagsConflict when the directory holds a
        run with other flags (nothing is changed then)."""
        flags_path = self.path(FLAGS_FILE)
        if not os.path.exists(flags_path):
            return "new"
        with open(flags_path) as f:
            saved = json.load(f)
        comparable = {k: v for k, v in flag_values.items() if k not in NOT_COMPARED}
        saved_cmp = {k: v for k, v in saved.items() if k not in NOT_COMPARED}
        if saved_cmp != comparable:
            diff = sorted(k for k in set(saved_cmp) | set(comparable)
                          if saved_cmp.get(k) != comparable.get(k))
            raise FlagsConflict(
                f"{self.root} holds a run with different flags ({', '.join(diff)}); nothing was "
                "changed. Use another --output_dir, or --restart to discard that run.")
        return "finished" if os.path.exists(self.path(RESULTS_FILE)) else "resume"

    def record_flags(self, flag_values):
        """flags.json: written once the run is known to start."""
        _write_atomic(self.path(FLAGS_FILE), json.dumps(flag_values, indent=1, sort_keys=True))

    def clear(self):
        """Removes what an earlier run wrote here (--restart)."""
        import shutil  # pylint: disable=import-outside-toplevel
        for name in RUN_FILES:
            path = self.path(name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    def write_results(self, *, method, dataset, model_name, seed, target_sparsity, result,
                      flag_values, distribution=None):
        summary = {
            "method": method, "dataset": dataset, "model": model_name, "seed": seed,
            "target_sparsity": target_sparsity, "final": result.final,
            "rounds": result.rounds, "total": result.total,
            "method_info": result.method_info, "warnings": result.warnings,
            "kept_dense": getattr(result, "kept_dense", []),
            "hyperparameters": result.hyperparameters, "flags": flag_values,
        }
        if distribution is not None:
            summary["distribution"] = distribution
        os.makedirs(self.root, exist_ok=True)
        result.model.save(self.path("ticket.keras"))
        plot_curve(result.rounds, self.path("curve.png"),
                   title=f"{method} on {dataset}/{model_name} (seed {seed})",
                   final=result.final)
        # results.json appears complete or not at all.
        _write_atomic(self.path(RESULTS_FILE), json.dumps(summary, indent=1))
        return summary


def figure(size):
    """A matplotlib figure drawn off screen (the `plots` extra), without pyplot
    and without touching the user's matplotlib backend."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
        from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(f"Plots need matplotlib ({e}); install it with: "
                          'pip install "tf_unilth[plots]".') from e
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_curve(rounds, path, title="", final=None):
    """Test accuracy against sparsity, one point per round (and the final ticket)."""
    fig = figure((6, 4))
    ax = fig.add_subplot()
    xs = [100 * r["sparsity"] for r in rounds]
    ys = [100 * r["test_accuracy"] for r in rounds if r["test_accuracy"] is not None]
    if len(ys) == len(xs):
        ax.plot(xs, ys, "o-")
        for r, x, y in zip(rounds, xs, ys):
            ax.annotate(str(r["round"]), (x, y), textcoords="offset points", xytext=(3, 4),
                        fontsize=8)
    if final and final.get("test_accuracy") is not None:
        ax.plot([100 * final["sparsity"]], [100 * final["test_accuracy"]], "r*", markersize=12,
                label="final ticket")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("sparsity (% of prunable weights removed)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
