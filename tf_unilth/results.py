"""A run directory: its flags, results.json, the ticket and the accuracy plot."""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS_FILE = "flags.json"
RESULTS_FILE = "results.json"


class RunDir:
    """One directory per run (OpenLTH-style): flags.json first, results at the end.

    `write_flags=False` only compares with a flags.json already there (a
    non-chief worker: the chief records the flags).
    """

    def __init__(self, path, write_flags=True):
        self.root = path
        self.write_flags = write_flags

    def path(self, name):
        return os.path.join(self.root, name)

    def check_flags(self, flag_values):
        """'new' or 'finished'; raises when the directory belongs to other flags."""
        os.makedirs(self.root, exist_ok=True)
        flags_path = self.path(FLAGS_FILE)
        if os.path.exists(flags_path):
            with open(flags_path) as f:
                saved = json.load(f)
            comparable = {k: v for k, v in flag_values.items() if k not in ("verbose",)}
            saved_cmp = {k: v for k, v in saved.items() if k not in ("verbose",)}
            if saved_cmp != comparable:
                diff = sorted(k for k in set(saved_cmp) | set(comparable)
                              if saved_cmp.get(k) != comparable.get(k))
                raise SystemExit(
                    f"{self.root} holds a run with different flags ({', '.join(diff)}); "
                    "nothing was overwritten. Use another --output_dir, or delete it.")
            if os.path.exists(self.path(RESULTS_FILE)):
                return "finished"
            return "new"
        if self.write_flags:
            with open(flags_path + ".tmp", "w") as f:
                json.dump(flag_values, f, indent=1, sort_keys=True)
            os.replace(flags_path + ".tmp", flags_path)  # other workers read it
        return "new"

    def write_results(self, *, method, dataset, model_name, seed, target_sparsity, result,
                      flag_values, distribution=None):
        summary = {
            "method": method, "dataset": dataset, "model": model_name, "seed": seed,
            "target_sparsity": target_sparsity, "final": result.final,
            "rounds": result.rounds, "total": result.total,
            "method_info": result.method_info, "warnings": result.warnings,
            "flags": flag_values,
        }
        if distribution is not None:
            summary["distribution"] = distribution
        os.makedirs(self.root, exist_ok=True)
        result.model.save(self.path("ticket.keras"))
        plot_curve(result.rounds, self.path("curve.png"),
                   title=f"{method} on {dataset}/{model_name} (seed {seed})",
                   final=result.final)
        tmp = self.path(RESULTS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, self.path(RESULTS_FILE))  # results.json appears complete or not at all
        return summary


def plot_curve(rounds, path, title="", final=None):
    """Test accuracy against sparsity, one point per round (and the final ticket)."""
    fig, ax = plt.subplots(figsize=(6, 4))
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
    plt.close(fig)
