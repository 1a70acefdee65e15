"""The paper's data sets and models, shared by the examples, the benchmarks and the CLI.

:data:`TASKS` names each task's module, its configuration dataclass and its ``train``
function, so that ``lazymeter run TASK`` and the example scripts share one code path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    module: str
    config: str
    train: str
    description: str

    def load(self) -> tuple[type, Any]:
        """``(config class, train function)``; imported on demand."""
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.train)


TASKS: dict[str, TaskSpec] = {
    "polynomial": TaskSpec(
        "lazymeter.tasks.polynomial",
        "PolynomialConfig",
        "train",
        "Figures 1/3/4: quadratic target (beta . x)^2 / 2, quadratic net, full-batch GD",
    ),
    "modular_mlp": TaskSpec(
        "lazymeter.tasks.modular_mlp",
        "ModularMLPConfig",
        "train",
        "Figure 2: (a + b) mod p with a quadratic two-layer MLP; the scale is alpha",
    ),
    "transformer_modular": TaskSpec(
        "lazymeter.tasks.transformer_modular",
        "TransformerModularConfig",
        "train",
        "Nanda et al.'s one-layer transformer on (a + b) mod p, centred logits x alpha",
    ),
    "student_teacher": TaskSpec(
        "lazymeter.tasks.student_teacher",
        "StudentTeacherConfig",
        "train_student",
        "teacher MLP targets, large-init student: accuracy thresholds move, losses do not",
    ),
    "mnist": TaskSpec(
        "lazymeter.tasks.mnist",
        "MnistConfig",
        "train",
        "MLP on 1000 MNIST images (or sklearn digits), lazy start via alpha",
    ),
    "eigenlabels": TaskSpec(
        "lazymeter.tasks.eigenlabels",
        "EigenLabelsConfig",
        "train",
        "Figure 5: labels = k-th eigenvector of the initial NTK (aligned ... misaligned)",
    ),
}
