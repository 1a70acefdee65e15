"""MNIST (scikit-learn's 8x8 digits offline): the paper's uncentred alpha sweep on a large
initialisation.

The paper's MNIST runs (after Omnigrok): a bias-free ReLU MLP 784-200-200-200-10 in the NTK
parametrisation, every weight ``150 * sqrt(2 / fan_in) * N(0, 1)``, output times an uncentred
alpha in {1e-3, 0.01, 0.05, 0.5}, MSE to one-hot labels, AdamW at lr 1e-3 for every alpha
(``meter.scaled_lr(lr, "none")``), weight decay 0.01, batch 200 of 1000 images, 250k steps
(``--full``). The net is 4-homogeneous, so alpha acts as an initialisation scale
``alpha^(1/4)``; at a fixed Adam lr a larger alpha is lazier.

The claim checked (tests/examples/test_example_mnist.py): a larger alpha delays generalisation.
Measured by the CPU default (digits, seed 0, width 32, init scale 50, AdamW lr 3e-2 at every
alpha, 4000 steps; about 3 minutes on a busy core), steps where accuracy first reaches 80%
(log-spaced measurements):

    alpha   output rms at init   train   test    K0 regression test acc   final train/test
    1e-3    0.39                 251     251     0.976                    1.000 / 0.987
    0.01    3.9                  1259    1259    0.944                    0.994 / 0.970
    0.05    19                   never   never   0.428                    0.784 / 0.774
    0.5     194                  never   never   0.112                    0.102 / 0.102

The order holds (``test_step_grows_with_alpha``), and the lazy baseline worsens with alpha as
the large uncentred initial function spoils it; but on the digits train and test accuracy
rise together (largest train-test gap under 0.05 in every run), so the delay is in the whole
fit, not a train-before-test gap (``delay_grows_with_alpha`` is False). With 200 training
images (``--smoke``) a small gap appears: train 80% at step 50 and 63, test at 79 and 100
(alpha 1e-3 and 0.05), alpha 0.5 crossing neither in 200 steps.

MNIST cannot be downloaded by this script: put the four IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally
``.gz``) in ``--data-dir`` (or torchvision's ``DIR/MNIST/raw/``). Without them it uses
scikit-learn's 8x8 digits (1000 train, 797 test; the net's input width follows: 64) and says
so. Writes OUT/alpha<a>/ (history.jsonl, TensorBoard events), OUT/summary.json and
OUT/figure.png.

    python examples/mnist.py --out runs/mnist

Every option: ``--help`` (the same as ``python -m examples.paper run mnist``); one alpha alone:
``python -m examples.paper run mnist_run --alphas 0.5``.
"""

from paper.cli import run_task  # examples/paper, next to this script


def main(argv: list[str] | None = None) -> dict:
    return run_task("mnist", argv, prog="mnist.py")


if __name__ == "__main__":
    main()
