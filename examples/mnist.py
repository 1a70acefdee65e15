"""MNIST (scikit-learn's 8x8 digits offline): the paper's uncentred alpha sweep on a large
initialisation.

The paper's MNIST runs (after Omnigrok): a bias-free ReLU MLP 784-200-200-200-10 in the NTK
parametrisation, every weight ``150 * sqrt(2 / fan_in) * N(0, 1)``, output times an uncentred
alpha in {1e-3, 0.01, 0.05, 0.5}, MSE to one-hot labels, AdamW at lr 1e-3 for every alpha
(``meter.scaled_lr(lr, "none")``), weight decay 0.01, batch 200 of 1000 images, 250k steps
(``--full``). The net is 4-homogeneous, so alpha acts as an initialisation scale
``alpha^(1/4)``; at a fixed Adam lr a larger alpha is lazier.

The claim checked: the larger alpha, the later the network generalises, and the
train-to-test delay grows with alpha; a run that never fits its training set counts against
it (tests/examples/test_example_mnist.py, and docs/reproduction.md over seeds 0-4). The CPU
default (digits, width 128, init scale 50, AdamW lr 3e-2 at every alpha, 4000 steps, under a
minute per seed on one core) keeps the paper's alpha ends, 1e-3 and 0.5, and uses 0.1 and 0.2
between them: on the digits the small alphas fit train and test together, and at width 32
the large ones did not fit at all in 4000 steps. The delays on the digits are small (a few
log-spaced measurements); the run prints its crossings, and whether each part holds.

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
