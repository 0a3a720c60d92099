"""Growth curves of the regularization coefficient lambda: lambda as a function
of the training steps t since growth started (numpy only: shared by the tf_keras
and Keras 3 paths)."""

import numpy as np


class LinearStepGrowth:
    """DLTH: +delta every `every` steps, capped at lambda_max (then held)."""

    def __init__(self, delta=1e-4, every=5, lambda_max=1.0):
        if delta <= 0 or every < 1 or lambda_max <= 0:
            raise ValueError(
                f"LinearStepGrowth needs delta > 0 (got {delta}), every >= 1 (got {every}) and "
                f"lambda_max > 0 (got {lambda_max}); find_ticket.py sets them with "
                "--lambda_delta, --lambda_every and --lambda_max.")
        self.delta, self.every, self.lambda_max = delta, int(every), lambda_max

    def __call__(self, t):
        return min(self.lambda_max, self.delta * (t // self.every))

    def steps_to_max(self):
        return int(np.ceil(self.lambda_max / self.delta)) * self.every

    def step_form(self):  # (K, r, gamma) of LambdaGrowth's formula
        return self.every, self.delta / self.lambda_max, 1.0

    def get_config(self):
        return {"delta": self.delta, "every": self.every, "lambda_max": self.lambda_max}


class PowerGrowth:
    """UniLTH: lambda_max * (t / G)^gamma for t <= G, then lambda_max.

    lambda_max = 0 turns the extrusion off (an ablation: the rounds then remove
    weights by magnitude alone, with no penalty first).
    """

    def __init__(self, lambda_max=1.0, steps=1000, gamma=2.0):
        if lambda_max < 0 or steps < 1 or gamma <= 0:
            raise ValueError(
                f"PowerGrowth needs lambda_max >= 0 (got {lambda_max}), steps >= 1 (got "
                f"{steps}) and gamma > 0 (got {gamma}); find_ticket.py sets them with "
                "--lambda_max, --growth_steps and --gamma.")
        self.lambda_max, self.steps, self.gamma = lambda_max, int(steps), gamma

    def __call__(self, t):
        return self.lambda_max * min(1.0, t / self.steps) ** self.gamma

    def steps_to_max(self):
        return self.steps

    def step_form(self):
        return 1, 1.0 / self.steps, self.gamma

    def get_config(self):
        return {"lambda_max": self.lambda_max, "steps": self.steps, "gamma": self.gamma}
