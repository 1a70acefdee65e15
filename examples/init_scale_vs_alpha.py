"""Appendix: the weight-init scale sigma and the output scale alpha act alike (sigma^2 * alpha).

The student of ``examples/student_teacher.py`` (``f(x) = w2 . act(W1 x)``, no biases, D=10,
128 hidden units, ``W1 ~ N(0, sigma^2/D)``, ``w2 ~ N(0, sigma^2/N)``) learns the same ReLU
teacher (P=300) by full-batch GD on the centred, alpha-scaled MSE
``mean (alpha (f(x; theta) - f(x; theta0)) - y)^2``, over a grid of sigma and alpha. Each run
records, through LazyMeter, the parameter movement ``||theta - theta0|| / ||theta0||``; its
final value is plotted against ``sigma^2 * alpha`` on log-log axes.

Why ``sigma^2 * alpha``: write ``theta = sigma * theta_hat`` (``theta_hat`` at the unit-scale
init). A ReLU net without biases is positively homogeneous, and the two-layer one has degree 2:
``f(x; sigma theta_hat) = sigma^2 f(x; theta_hat)``. Hence the trained function
``alpha (f(theta) - f(theta0)) = (alpha sigma^2) (f(theta_hat) - f(theta_hat0))`` depends on
``alpha`` and ``sigma`` only through ``alpha sigma^2``, and the relative movement
``||theta - theta0|| / ||theta0|| = ||theta_hat - theta_hat0|| / ||theta_hat0||`` is
scale-free. A larger init is a larger output scale: lazier training, smaller movement. The
dynamics match too once the learning rate keeps each run at the same fraction of its
gradient-descent stability edge, ``lr = lr_frac * P / (alpha^2 lambda_max(K0))`` (the NTK
``K0`` scales as ``sigma^2``): a GD step in ``theta`` is then exactly the step of the
``alpha' = alpha sigma^2, sigma' = 1`` run in ``theta_hat``, so for ReLU the points (and whole
movement histories) at equal ``sigma^2 alpha`` coincide up to float rounding. tanh is not
homogeneous (``tanh(sigma h) != sigma tanh(h)``): its points only roughly follow
``sigma^2 alpha``, a contrast that shows the collapse comes from homogeneity.

Defaults (~50 s wall on 2 busy CPU cores): sigma in {0.5, 1, 2} x alpha in {0.25, 1, 4, 16}
for ReLU and tanh (24 runs, 2000 GD steps each, ``lr_frac = 0.5``), so sigma^2 alpha spans
1/16..64 with 2-3 runs at each of 1/4, 1, 4, 16. ``--full``: sigma in {0.25, 0.5, 1, 2, 4}
x alpha in {1/64, 1/16, 1/4, 1, 4, 16, 64}, 10k steps. ``--smoke``: a seconds-long 2 x 2 ReLU
grid. Writes OUT/summary.json (every run's numbers, the collapse statistics), OUT/figure.png,
and per run OUT/runs/<act>_sigma<s>_alpha<a>/ (history.jsonl, TensorBoard events,
summary.json).

Default run (seed 0), final movement after 2000 steps: ReLU 0.859, 0.360, 0.125, 0.0347,
0.00878, 0.00220 at sigma^2 alpha = 1/16, 1/4, 1, 4, 16, 64 (a 391x range; ~1/(sigma^2 alpha)
in the lazy end), identical within every group of equal sigma^2 alpha (spread 0, R^2 of log
movement = 1; power-of-two scalings are exact in floating point, so the runs agree bit for
bit), and the final test loss collapses too (0.0042 rich ... 0.071 lazy, K0 regression 0.089).
tanh: spread up to 0.61 at equal sigma^2 alpha (e.g. 0.115, 0.167, 0.217 at sigma^2 alpha = 4),
but sigma^2 alpha still explains 98.9% of the variance of log movement over a 267x range.

    python examples/init_scale_vs_alpha.py --out runs/init_scale_vs_alpha
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from lazymeter.tasks.student_teacher import ScaleConfig, ScaleGrid, run_scale_grid
from lazymeter.threads import torch_threads

FULL = ScaleGrid(
    sigmas=[0.25, 0.5, 1.0, 2.0, 4.0],
    alphas=[4.0**k for k in range(-3, 4)],
    activations=["relu", "tanh"],
)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict:
    d, g = ScaleConfig(), ScaleGrid()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigmas", default=None, help="init scales, comma separated")
    ap.add_argument("--alphas", default=None, help="output scales, comma separated")
    ap.add_argument("--activations", default=None, help="relu and/or tanh, comma separated")
    ap.add_argument("--steps", type=int, default=None, help="GD steps per run (default 2000)")
    ap.add_argument("--lr-frac", type=float, default=d.lr_frac, help="fraction of the GD edge")
    ap.add_argument("--P", type=int, default=d.P)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--out", default="runs/init_scale_vs_alpha")
    ap.add_argument("--full", action="store_true", help="5 x 7 grid, 10k steps per run")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run (for tests)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (a model this small runs fastest on one; 0: torch's default)",
    )
    a = ap.parse_args(argv)
    base = replace(d, lr_frac=a.lr_frac, P=a.P, width=a.width, seed=a.seed, device=a.device)
    grid = replace(FULL) if a.full else g
    if a.full:
        base.steps = 10_000
    if a.smoke:
        base = replace(base, D=5, P=40, P_test=60, width=16, steps=60, per_decade=4, max_probe=16)
        grid = ScaleGrid(sigmas=[1.0, 2.0], alphas=[1.0, 4.0], activations=["relu"])
    if a.sigmas:
        grid.sigmas = _floats(a.sigmas)
    if a.alphas:
        grid.alphas = _floats(a.alphas)
    if a.activations:
        grid.activations = [v.strip() for v in a.activations.split(",") if v.strip()]
    if a.steps is not None:
        base.steps = a.steps
    with torch_threads(a.threads):  # restored after: main() may run inside a larger process
        summary = run_scale_grid(base, grid, a.out, progress=not a.no_progress)
    print(f"final movement ||theta-theta0||/||theta0|| after {base.steps} GD steps:")
    for act, cs in summary["collapse_movement"].items():
        print(f" {act}:")
        for grp in cs["groups"]:
            members = ", ".join(
                f"(sigma={m['sigma']:g}, alpha={m['alpha']:g}) {m['final_param_movement']:.5g}"
                for m in grp["members"]
            )
            spread = grp["rel_spread"]
            tail = f"  spread {spread:.2g}" if math.isfinite(spread) else ""
            print(f"  sigma^2 alpha = {grp['sigma2_alpha']:<7g} {members}{tail}")
        print(
            f"  -> R^2 of log movement explained by sigma^2 alpha: {cs['r2_log']:.6f}; largest "
            f"spread at equal sigma^2 alpha {cs['max_rel_spread']:.2g} (whole histories: "
            f"{summary['trajectory_spread'][act]:.2g}); movement spans {cs['range']:.3g}x, "
            f"log-log slope {cs['slope']:.2f}"
        )
    print(f"{summary['seconds']:.1f} s.  Figure: {a.out}/figure.png")
    return summary


if __name__ == "__main__":
    main()
