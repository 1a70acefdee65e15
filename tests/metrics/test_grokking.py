"""time_to_grok on synthetic curves with known crossings."""

import math

import numpy as np
import pytest

import lazymeter as lm


def test_crossings_of_exponential_and_delayed_sigmoid_curves():
    steps = np.arange(0, 10_001)
    train = np.exp(-steps / 100.0)  # < 0.1 * 1 first at 100 ln 10 = 230.26 -> step 231
    test = 1.0 / (1.0 + np.exp((steps - 5000) / 200.0))
    test = test / test[0]
    g = lm.time_to_grok(steps, train, test, threshold=0.1)
    assert g.train_step == 231
    # test/test[0] <= 0.1 where 1 + e^{(s-5000)/200} >= 10 (1 + e^-25): s >= 5000 + 200 ln 9
    assert g.test_step == math.ceil(5000 + 200 * math.log(9 * (1 + 10 * math.exp(-25))))
    assert g.delay == g.test_step - g.train_step
    assert g.ratio == pytest.approx(g.test_step / 231)


def test_test_loss_that_rises_first_is_measured_against_its_start():
    steps = [0, 10, 100, 1000, 10_000]
    train = [1.0, 0.5, 0.05, 0.01, 0.001]
    test = [1.0, 3.0, 2.0, 0.5, 0.05]  # 0.5 is below its peak/10 but not below 0.1 x start
    g = lm.time_to_grok(steps, train, test)
    assert (g.train_step, g.test_step) == (100, 10_000)


def test_never_crossing_gives_nan_and_nan_entries_are_skipped():
    steps = [0, 1, 2, 3]
    g = lm.time_to_grok(steps, [1.0, 0.5, 0.05, 0.01], [1.0, 0.9, 0.8, 0.7])
    assert g.train_step == 2 and math.isnan(g.test_step) and math.isnan(g.delay)
    g = lm.time_to_grok(steps, [math.nan, 1.0, 0.5, 0.05], [1.0, math.nan, 0.01, 0.01])
    assert (g.train_step, g.test_step) == (3, 2)
    assert g.as_dict()["threshold"] == 0.1


@pytest.mark.parametrize(
    ("steps", "train", "test", "threshold", "match"),
    [
        ([0, 1], [1.0], [1.0, 1.0], 0.1, "equal length"),
        ([0, 0], [1.0, 1.0], [1.0, 1.0], 0.1, "increasing"),
        ([0, 1], [1.0, 1.0], [1.0, 1.0], 1.5, "threshold"),
        ([], [], [], 0.1, "empty"),
    ],
)
def test_bad_curves_are_rejected(steps, train, test, threshold, match):
    with pytest.raises(ValueError, match=match):
        lm.time_to_grok(steps, train, test, threshold=threshold)
