"""The paper's experiments, as examples of the lazymeter plugin: data sets, models and one
:class:`~paper.harness.Task` per figure, all run by :func:`paper.harness.run` (the scripts in
``examples/`` and ``python -m examples.paper run|sweep`` alike).

This package is not part of the installed library: it uses lazymeter's public API only
(``import lazymeter as lm`` and its public modules) and lives in a checkout's ``examples/``
folder. The scripts next to it import it as ``paper``; the command line is
``python -m examples.paper`` from the checkout's root (``--help`` lists its commands).

:data:`TASKS` maps each task's name to ``"module:TASK"``; a task module is imported only
when it is used (:func:`paper.harness.load_task`).
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    name: f"{__name__}.{ref}"  # this package's name, however it was imported
    for name, ref in {
        "polynomial": "polynomial:TASK",
        "alpha_eps": "phase_diagram:TASK",
        "decomposition": "decomposition:TASK",
        "modular_mlp": "modular_mlp:TASK",
        "transformer_modular": "transformer_modular:TASK",
        "transformer_modular_run": "transformer_modular:RUN",
        "student_teacher": "student_teacher:TASK",
        "init_scale": "init_scale:TASK",
        "init_scale_run": "init_scale:RUN",
        "mnist": "mnist:TASK",
        "mnist_run": "mnist:RUN",
        "eigenlabels": "eigenlabels:TASK",
        "eigenlabels_run": "eigenlabels:RUN",
    }.items()
}
