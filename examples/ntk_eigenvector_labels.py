"""Figure 5 of the paper: labels set to the k-th eigenvector of the network's initial NTK.

Inputs are pure noise, ``x ~ N(0, I_D)``; the labels on all 2P points (train and test
together) are the k-th eigenvector, in descending eigenvalue order, of the centred initial
NTK ``H K0 H`` (``lazymeter.tasks.eigenlabels.eigenvector_labels``), scaled to unit
variance. The network, ``f(x) = alpha * mean_i phi(w_i . x / sqrt(D))`` with
``phi(h) = h + eps/2 h^2``, trains on the first P points (centred MSE, full-batch GD through
``lazymeter.LazyMeter``) and is tested on the other P. k=1: the kernel is aligned with the
task and train and test losses fall together; k=70: the test loss falls an order of
magnitude later than the train loss, and only to about a third of its start; k=100: the
train set is fitted while the test loss rises (no generalisation). The net stays lazy: its
final test losses are those of kernel regression with the initial NTK (printed).

Paper settings (its code for this figure): D=100, P=100, N=2, eps=0.25, lr = N/2, 25k
epochs, unit-norm labels with alpha=1. Unit-variance labels with alpha = sqrt(2P) (the
default) are the same parameter dynamics, with losses 2P times larger. The default budget
runs ``lr = 5 N/2`` for 5k steps, the same gradient flow as the paper's 25k epochs (steps
are reported as lr-equivalent epochs); ``--full`` runs the paper's schedule. Writes
OUT/k<k>/history.jsonl and TensorBoard events per k, OUT/summary.json and OUT/figure.png.
The default takes about 1.5 minutes on a busy 2-core CPU (one torch thread).

    python examples/ntk_eigenvector_labels.py --out runs/ntk_eigenvector_labels
"""

from __future__ import annotations

import argparse
import json
import math

from lazymeter.tasks.eigenlabels import EigenLabelsConfig, train
from lazymeter.threads import torch_threads


def _fmt(v: float | None) -> str:
    return "never" if v is None or not math.isfinite(v) else f"{v:g}"


def main(argv: list[str] | None = None) -> dict:
    d = EigenLabelsConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default=",".join(map(str, d.ks)), help="eigenvector indices, 1-based")
    ap.add_argument("--alpha", type=float, default=None, help="output scale (default sqrt(2P))")
    ap.add_argument("--eps", type=float, default=d.eps)
    ap.add_argument("--epochs", type=int, default=None, help="GD steps (default 5000; --full 25k)")
    ap.add_argument("--D", type=int, default=d.D)
    ap.add_argument("--P", type=int, default=d.P, help="train points (as many test points)")
    ap.add_argument("--N", type=int, default=d.N)
    ap.add_argument(
        "--normalize",
        default=d.normalize,
        choices=("variance", "norm"),
        help="labels with unit variance (default) or unit norm (the paper's, with --alpha 1)",
    )
    ap.add_argument("--no-linearized", action="store_true", help="skip the linearised shadow")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--out", default="runs/ntk_eigenvector_labels")
    ap.add_argument("--full", action="store_true", help="the paper's lr = N/2 for 25k epochs")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run (for tests)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the model is tiny, and a multi-threaded 100 x 100 "
        "eigendecomposition, measured at every log step, can be 100x slower on a busy machine)",
    )
    a = ap.parse_args(argv)
    cfg = EigenLabelsConfig.paper() if a.full else EigenLabelsConfig()
    cfg.ks = tuple(int(k) for k in a.ks.split(",") if k.strip())
    cfg.alpha, cfg.eps, cfg.D, cfg.P, cfg.N = a.alpha, a.eps, a.D, a.P, a.N
    cfg.normalize, cfg.linearized = a.normalize, not a.no_linearized
    cfg.seed, cfg.device = a.seed, a.device
    if a.epochs is not None:
        cfg.epochs = a.epochs
    if a.smoke:
        cfg.D, cfg.P, cfg.epochs, cfg.lr_scale, cfg.per_decade = 10, 12, 60, 2.0, 6
        cfg.ks = (1, 12, 20)
    with torch_threads(a.threads):
        summary = train(cfg, a.out, progress=not a.no_progress)

    print(json.dumps({"alpha": summary["alpha"], "seconds": round(summary["seconds"], 1)}))
    print(f"steps in {summary['epochs_unit']}; crossings: loss <= {cfg.threshold:g} x its start")
    for run in summary["runs"].values():
        g, h = run["time_to_grok"], run["time_to_half"]
        print(
            f"k={run['k']:>3} (lambda_k={run['eigenvalue']:.3g}, alignment0 train/test "
            f"{run['alignment0_train']:.3f}/{run['alignment0_test']:.3f}): train at "
            f"{_fmt(g['train_step'])}, test at {_fmt(g['test_step'])} (half: "
            f"{_fmt(h['train_step'])} vs {_fmt(h['test_step'])}); test loss "
            f"{run['initial_test_loss']:.3g} -> {run['final_test_loss']:.3g} (max "
            f"{run['max_test_loss']:.3g}, K0 regression {run['k0_test_mse']:.3g}); drift "
            f"{run['final_ntk_drift']:.3g}, movement {run['final_param_movement']:.3g}"
        )
    print(f"Figure: {a.out}/figure.png")
    return summary


if __name__ == "__main__":
    main()
