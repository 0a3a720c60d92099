"""Round records and the accounting of a search (epochs, steps, seconds).

A round record is what results.json keeps per pruning round: sparsity,
validation and test accuracy and loss, and the epochs, training steps and
wall time spent from the random initialization to the end of that round (the
cost of the ticket), plus what the method adds (fidelity, lambda, ...).
"""


class RoundLog:
    """The rounds and counters of one search; its state is part of every snapshot."""

    def __init__(self):
        self.rounds = []
        self.epochs = 0
        self.steps = 0
        self.seconds = 0.0
        self.first_data_loss = None  # the search's first epoch: the divergence yardstick

    def add_epoch(self, steps, seconds):
        self.epochs += 1
        self.steps += steps
        self.seconds += seconds

    def get_state(self):
        return {"epochs": self.epochs, "steps": self.steps, "seconds": self.seconds,
                "rounds": list(self.rounds), "first_data_loss": self.first_data_loss}

    def set_state(self, state):
        self.epochs, self.steps = state["epochs"], state["steps"]
        self.seconds, self.rounds = state["seconds"], list(state["rounds"])
        self.first_data_loss = state.get("first_data_loss")

    def make(self, round_index, sparsity, val, test, epochs=None, steps=None, seconds=None,
             **extra):
        """A record; epochs / steps / seconds default to the totals so far."""
        return {"round": round_index, "sparsity": sparsity,
                "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                "val_accuracy": val["accuracy"], "val_loss": val["loss"],
                "epochs": int(self.epochs if epochs is None else epochs),
                "train_steps": int(self.steps if steps is None else steps),
                "wall_seconds": float(self.seconds if seconds is None else seconds), **extra}

    def totals(self):
        return {"epochs": self.epochs, "train_steps": self.steps, "wall_seconds": self.seconds}


def format_round(r):
    fmt = lambda v: "  n/a " if v is None else f"{100 * v:6.2f}"  # noqa: E731
    return (f"round {r['round']:2d} | sparsity {100 * r['sparsity']:6.2f}% | "
            f"val acc {fmt(r['val_accuracy'])}% | test acc {fmt(r['test_accuracy'])}% | "
            f"{r['epochs']:3d} epochs {r['train_steps']:7d} steps | {r['wall_seconds']:7.1f} s")
