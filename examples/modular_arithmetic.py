"""Figure 2 of the paper: an MLP groks modular addition, later the larger its output scale.

Task: ``(a + b) mod p`` for ``p = 23``, inputs the concatenated one-hot pair (``D = 2p``),
90% of the ``p^2`` pairs train (``--seed 1`` is the authors' split), MSE against the one-hot
label. Network (the paper's code): ``g(x) = W2 (W1 x)^2 / (D N)``, bias-free layers,
``N = 100``, weights ``N(0, 1)``, full-batch GD. The authors multiply the output by the
scale ``s`` twice and divide the train loss by ``s^2`` at ``lr = 100 / s^2``: the effective
output scale is ``alpha = s^2`` (the default ``--convention paper``; ``--convention alpha``
makes ``s`` the alpha itself). LazyMeter applies alpha (``center=False``: the model is
uncentred), so each run also logs NTK drift, kernel-target alignment and parameter
movement (see ``examples/paper/modular_mlp.py``).

Panels: (a) train/test accuracy against the (log) step with the weight norm on a twin axis;
(b) train/test loss with the test loss of kernel regression with the initial NTK (the lazy
limit: it predicts no test pair right); (c) train (--) and test (-) accuracy for each scale
of ``--scales``: the test accuracy rises after the train accuracy, and both move later, the
test more, as alpha grows; (d) the meter's lazy-vs-rich diagnostics for the main run
(``--scale``).

Budget: the default runs ``lr = 20 x the paper's`` for 8k steps (160k lr-equivalent
steps, where the paper ran 100k at its rate: ``--full``); full-batch GD at these rates
follows the same gradient flow (steps are reported as lr-equivalent steps).

On the default (4 scales, about 2 CPU-minutes, which ``--workers 2`` splits over two cores)
the error (1 - accuracy) falls to 0.1 x its start (about 90% accuracy) on the train set,
then on the test set, later the larger alpha, and the delay between them grows with alpha;
every run ends at 100% test accuracy, and at s = 2 the test crossing lies past the paper's
100k steps. The test accuracy first falls to 0 while the train set is memorised; the weight
norm grows as the network generalises; kernel regression with the initial NTK (the lazy
limit) gets no test pair right. docs/reproduction.md gives the crossings over seeds 0-4.

Appendix controls: ``--weight-decay`` (torch's; for SGD it adds ``wd/2 ||theta||^2`` to the
minimised loss, a decay of ``100 wd / s^2`` per lr-equivalent step) shows that weight decay
is not necessary for the delay (the default has none, and groks); a large one shrinks the
weights before anything is learned, a run that learns nothing and so says nothing about
whether weight decay alone could cause a delay. ``--optimizer momentum`` (0.9, lr x 0.1)
follows GD; ``--optimizer adamw`` (``lr = 3e-3 / alpha``, real steps) keeps the delay.
docs/reproduction.md runs these controls and gives their numbers.

Writes OUT/scale=<s>/ (history.jsonl, TensorBoard events, summary.json) for each scale,
OUT/summary.json (the main run's numbers and the sweep table under "sweep") and
OUT/figure.png. ``--scales ''`` runs only the main scale, into OUT itself.

    python examples/modular_arithmetic.py --out runs/modular_arithmetic --workers 2

Every option: ``--help`` (the same as ``python -m examples.paper run modular_mlp``).
"""

from paper.cli import run_task  # examples/paper, next to this script


def main(argv: list[str] | None = None) -> dict:
    return run_task("modular_mlp", argv, prog="modular_arithmetic.py")


if __name__ == "__main__":
    main()
