"""The paper's experiments: data sets, models and one :class:`~lazymeter.tasks.harness.Task`
per figure, all run by :func:`lazymeter.tasks.harness.run` (the example scripts,
``lazymeter run`` and ``lazymeter sweep`` alike).

:data:`TASKS` maps each task's name to ``"module:TASK"``; a task module is imported only
when it is used (``lazymeter.tasks.harness.load_task``).
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    "polynomial": "lazymeter.tasks.polynomial:TASK",
    "alpha_eps": "lazymeter.tasks.phase_diagram:TASK",
    "decomposition": "lazymeter.tasks.decomposition:TASK",
    "modular_mlp": "lazymeter.tasks.modular_mlp:TASK",
    "transformer_modular": "lazymeter.tasks.transformer_modular:TASK",
    "transformer_modular_run": "lazymeter.tasks.transformer_modular:RUN",
    "student_teacher": "lazymeter.tasks.student_teacher:TASK",
    "init_scale": "lazymeter.tasks.init_scale:TASK",
    "init_scale_run": "lazymeter.tasks.init_scale:RUN",
    "mnist": "lazymeter.tasks.mnist:TASK",
    "mnist_run": "lazymeter.tasks.mnist:RUN",
    "eigenlabels": "lazymeter.tasks.eigenlabels:TASK",
    "eigenlabels_run": "lazymeter.tasks.eigenlabels:RUN",
}
