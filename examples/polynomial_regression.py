"""Figure 1 of the paper: grokking of a quadratic target by a lazily initialised network.

Data ``x ~ N(0, I/D)``, target ``y = (beta . x)^2 / 2``; network
``f(x) = alpha * mean_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2``, trained on the centred
MSE with full-batch GD at ``lr = N / alpha^2`` (D=100, P=550, N=500, alpha=1, eps=0.02).

The default budget runs ``lr = 20 N / alpha^2`` for 5k epochs, which follows the same
gradient flow as the paper's 100k epochs (steps are reported as lr-equivalent epochs);
``--full`` runs the paper's schedule. Writes OUT/history.jsonl, TensorBoard events,
OUT/summary.json and OUT/figure.png. The kernel-target alignment is measured as the paper
did, on its 1000 test points with its (biased, row-centred) definition, and with the
unbiased estimator on the same points with a band of one standard error: the first rises
x1.4 here, which is mostly the probe size (docs/numbers.md); the second is 0 at
initialisation and about 0.003 at the end.

    python examples/polynomial_regression.py --out runs/fig1

Every option: ``--help`` (the same as ``python -m examples.paper run polynomial``).
"""

from paper.cli import run_task  # examples/paper, next to this script


def main(argv: list[str] | None = None) -> dict:
    return run_task("polynomial", argv, prog="polynomial_regression.py")


if __name__ == "__main__":
    main()
