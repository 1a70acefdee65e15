"""Figure 4 of the paper: the test loss of the quadratic net, split into three exact terms.

Data ``x ~ N(0, I/D)``, target ``y = (beta . x)^2 / 2``; network
``f(x) = alpha * mean_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2``, trained on the
*uncentred* MSE (the decomposition is of ``f`` itself, not of ``f - f0``) with full-batch GD
at ``lr = lr_scale * N / alpha^2`` (D=40, N=2, P=120, eps=0.25, alpha=1). With
``M = W^T W / N`` and ``wbar = W^T 1 / N`` the population test MSE is exactly

    variance      (alpha eps/2 tr(M)/D - mean(beta^2)/2)^2   mean output off
    misalignment  ||alpha eps M - beta beta^T||_F^2 / (2 D^2) wrong quadratic form
    linear        alpha^2 ||wbar||^2 / D                      linear part the target lacks

(:func:`lazymeter.decompose_quadratic`). The figure plots the three terms and their sum over
training next to the train loss and the loss on the finite test set: the sum lies on the test
loss up to the test set's Monte-Carlo error (its relative std is below ``4 / sqrt(P_test)``
for any degree-2 polynomial of a Gaussian, so about 13% at the default ``P_test=1000``).

Budget. The authors run ``lr = 0.5 N / alpha^2`` for 50k steps (``--full``): 25k
lr-equivalent epochs (steps are reported in units of ``lr = N / alpha^2``). The default runs
the same 25k lr-equivalent epochs at ``lr_scale=5`` in 5k steps (the stability edge
``P / (N lambda_max(K0))`` is about 15 here; curves at 5 and 0.5 agree to a few percent):
about 10 s of training on an idle core (30 s on a loaded 2-core machine). The linearised
model and the K0 baseline (ill-posed: K0 has rank <= N D = 80 < P) are not measured.

Seeds. With N=2 hidden units many initialisations end in a spurious minimum (train loss
about 0.05, test loss rising, misalignment growing): at alpha=1 seeds 2, 4, 5 and 9 of 0-9
generalise within ``10^4`` epochs, the others do not (``--P-test`` changes the draw too: the
init is drawn after the test set). The default is seed 0, as for every task; docs/reproduction.md
gives the numbers of seeds 0-4, and ``--seed 2`` is one that groks. Measured (``--seed 2``):
the lazy phase first cuts the linear power (0.63 -> 0.15 by epoch ~40) and fits the mean
(variance 0.07 -> 1e-3 by epoch ~650) while the misalignment stays at 0.32-0.35: train
loss below 0.1x its start at epoch 240, where the misalignment is 1.08x its start, test loss
flat near 0.5. From epoch ~1000 misalignment and linear power collapse together (zero loss
forces ``w_1 = -w_2 = +-beta / sqrt(alpha eps)``): the test loss falls below 0.1x its start
at epoch 3655 and the misalignment below 0.1x its start at epoch 4220, so the test crossing
comes with the collapse, not after it; 4e-8 at 25k. The 1000-point test set reads up to 14%
off the sum late in training, about one Monte-Carlo std (bound above); with ``P_test=20000``
(another init, which groks too) the gap stays under 2.5%. Larger alpha delays the collapse.

Writes OUT/history.jsonl (``decomp_variance``, ``decomp_misalignment``, ``decomp_linear``,
``decomp_total`` next to ``train_loss``, ``test_loss``, ``alignment_*``, ``ntk_drift``, ...),
TensorBoard events, OUT/summary.json and OUT/figure.png.

    python examples/loss_decomposition.py --out runs/fig4

Every option: ``--help`` (the same as ``python -m examples.paper run decomposition``).
"""

from paper.cli import run_task  # examples/paper, next to this script


def main(argv: list[str] | None = None) -> dict:
    return run_task("decomposition", argv, prog="loss_decomposition.py")


if __name__ == "__main__":
    main()
