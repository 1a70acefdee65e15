"""Figure 3 of the paper: laziness (alpha) delays grokking; the (alpha, eps) phase diagram.

Every run is one polynomial-task run (``examples/polynomial_regression.py``; centred loss, no
linearised shadow model), run by the task harness (``--workers`` processes). The figure:
(a) train/test loss over their initial values for several alpha at eps=0.25 on the authors'
Figure-3a data (target ``(beta . x)^2``), (b) the same for several eps at alpha=1, and (e) the
phase diagram: over an (alpha, eps) grid on the Figure-1 data, the delay
``test_step - train_step`` (lr-equivalent epochs) between the train and the test loss falling
below the authors' absolute threshold 0.1 (``--threshold-kind relative``: 0.1 x the loss's
start instead). Each grid run stops once both losses have crossed, or once it has converged
without the test loss crossing (train loss at 1e-6 x its start, or a test-loss plateau);
hatched grey cells never grokked.

Defaults (``paper.phase_diagram.PhaseDiagramConfig``): D=50, P=300 (curves 225),
P_test=500, N=200; grid alpha in {0.5, 1, 2, 4} x eps in {0.02, 0.05, 0.1, 0.2, 0.3} at
``lr = 10 N / alpha^2`` for at most 20k steps (200k lr-equivalent epochs); curves at
``lr = 2.5 N / alpha^2`` for 4k steps (10k lr-equivalent epochs; the authors run
0.5 N / alpha^2 x 60k steps = 30k; a higher lr destabilises the rich small-alpha runs).
``--full``: the authors' D=100, P=550/450, N=500, 14 x 14 grid alpha 0.4..5.6 x
eps 0.02..0.28 at 20 N / alpha^2 up to 110k steps, curves at 0.5 N / alpha^2 for 60k steps,
alpha = 2^-5, 2^-2..2^4 (CPU-days). ``--smoke``: a seconds-long 2 x 2 run for tests.

Measured on the default grid (seed 0; delay in lr-equivalent epochs, loss < 0.1):

    alpha\\eps   0.02    0.05    0.1     0.2     0.3
    0.5         5.44k   2.42k   1.41k   820     630
    1           11.7k   5.16k   3.01k   2.1k    1.6k
    2           24.1k   13k     7.5k    7.01k   never
    4           61.7k   31.7k   25.3k   never   never

The delay grows with alpha at every eps (x11 from alpha 0.5 to 4 at eps=0.02) and shrinks as
eps grows. The corner of large alpha and large eps never groks: the train loss vanishes (to
1e-6 x its start, where the run stops as converged, at 20k-49k epochs) while the test loss
freezes above the threshold (0.112 at alpha=2, eps=0.3; 0.157 and 0.238 at alpha=4,
eps=0.2 and 0.3): the quadratic part interpolates the train set before the features align.
(The authors' heat map shows such cells as 0 grokking.) The 20 grid runs took 613 s of
training in all (the slowest, alpha=4 eps=0.02, 105 s); the whole default run took 476 s
with ``--workers 2`` on a 2-core machine shared with other jobs (load ~12).

Curves (lr 2.5 N / alpha^2, 10k epochs; test loss at 0.1 x its start): panel (a), eps=0.25,
at epoch 318, 1540 and never (test loss still 0.77 at 10k: lazy) for alpha = 0.25, 1, 4;
panel (b), alpha=1, at 5625, 3162, 1540 for eps = 0.05, 0.1, 0.25.

Writes OUT/summary.json (the heat-map matrix, the cells that never grokked, the curves and
every run's summary), OUT/figure.png and each run's files in OUT/<run name>/.

    python examples/alpha_eps_sweep.py --out runs/alpha_eps_sweep --workers 2

Every option: ``--help`` (the same as ``python -m examples.paper run alpha_eps``).
"""

from paper.cli import run_task  # examples/paper, next to this script


def main(argv: list[str] | None = None) -> dict:
    return run_task("alpha_eps", argv, prog="alpha_eps_sweep.py")


if __name__ == "__main__":
    main()
