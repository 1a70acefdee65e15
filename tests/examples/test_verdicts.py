"""The reproduction page's verdicts, part by part, on made-up results: a run that never fits
its training set, or fits and never generalises, is no late grokker."""

import importlib.util
import sys
from pathlib import Path

import pytest
from paper.results import Verdict, delay_grows

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduction.py"


@pytest.fixture(scope="module")
def rep():
    spec = importlib.util.spec_from_file_location("reproduction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduction"] = module
    spec.loader.exec_module(module)
    return module


def test_verdict_words():
    assert Verdict({"a": True, "b": True}) == "yes" and bool(Verdict({"a": True}))
    v = Verdict({"a": True, "b": False})
    assert v == "partly" and not v and str(v) == "partly (fails: b)"
    assert Verdict({"a": False}) == "no"


def test_never_is_not_later():
    assert delay_grows(["a", "b"], [1, 2], [5, 20]) == (True, "")
    ok, why = delay_grows(["a", "b"], [1, None], [5, None], ["10 steps", "99 steps"])
    assert not ok and "b never fitted its training set (ran 99 steps)" in why
    ok, why = delay_grows(["a", "b"], [1, 2], [5, None], ["10 steps", "99 steps"])
    assert not ok and "b never generalised within 99 steps" in why
    ok, why = delay_grows(["a", "b", "c"], [1, 1, 1], [5, 9, None], never_tail=True)
    assert ok and "c never generalised" in why  # a never-grok phase counts for nothing
    assert not delay_grows(["a", "b", "c"], [1, 1, 1], [None, 5, 9], never_tail=True)[0]


# --- transformer -----------------------------------------------------------------------


def _transformer(train, test, gap=0.01):
    runs = [
        dict(alpha=a, lr=1e-3, acc_threshold=0.9, train_acc_step=tr, test_acc_step=te,
             final_test_acc=0.5, final_step=1000)
        for a, tr, te in zip((1.0, 2.0, 4.0), train, test, strict=True)
    ]  # fmt: skip
    return {"runs": runs, "k0_test_acc": 0.5, "laziest_k0_gap": gap}


def test_transformer(rep):
    assert rep.check_transformer(_transformer([10, 20, 30], [50, 100, 400]))[1] == "yes"
    lines, v = rep.check_transformer(_transformer([10, 20, None], [50, 100, None]))
    assert v != "yes" and "never fitted" in "\n".join(lines)
    lines, v = rep.check_transformer(_transformer([10, 20, 30], [50, None, None]))
    assert v != "yes" and "never generalised within 1k steps" in "\n".join(lines)
    v = rep.check_transformer(_transformer([10, 20, 30], [50, 100, 400], gap=-0.128))[1]
    assert v == "partly" and "K0" in str(v)


# --- mnist -------------------------------------------------------------------------------


def _mnist(train, test):
    n = len(train)
    return {
        "dataset": "digits", "n_train": 10, "n_test": 10, "acc_threshold": 0.9,
        "config": {"steps": 500},
        "by_alpha": {
            "alpha": [0.001, 0.01, 0.5][:n], "train_acc_step": train, "test_acc_step": test,
            "final_train_acc": [1.0] * n, "final_test_acc": [0.9] * n, "k0_test_acc": [0.5] * n,
        },
    }  # fmt: skip


def test_mnist(rep):
    assert rep.check_mnist(_mnist([10, 20, 30], [20, 40, 90]))[1] == "yes"
    lines, v = rep.check_mnist(_mnist([10, 20, None], [20, 40, None]))  # alpha=0.5 at chance
    assert v == "no" and "alpha=0.5 never fitted its training set (ran 500 steps)" in "\n".join(
        lines
    )
    assert rep.check_mnist(_mnist([10, 20, 30], [20, 40, None]))[1] != "yes"
    v = rep.check_mnist(_mnist([10, 30, 60], [20, 40, 70]))[1]  # later, but delays do not grow
    assert v == "partly" and "delay grows" in str(v)


# --- fig 2 -------------------------------------------------------------------------------


def _fig2(train, test):
    rows = [
        dict(scale=a**0.5, alpha=a, train_acc_step=tr, test_acc_step=te,
             acc_delay=(te - tr) if tr is not None and te is not None else None,
             final_test_acc=0.9)
        for a, tr, te in zip((1.0, 4.0), train, test, strict=True)
    ]  # fmt: skip
    return {"convention": "x", "sweep": rows}


def test_fig2(rep):
    assert rep.check_fig2(_fig2([10, 20], [20, 60]))[1] == "yes"
    assert rep.check_fig2(_fig2([10, None], [20, None]))[1] == "no"
    assert rep.check_fig2(_fig2([10, 20], [20, None]))[1] == "no"
    v = rep.check_fig2(_fig2([10, 20], [40, 30]))[1]
    assert v == "partly" and "grows" in str(v)


# --- fig 3 -------------------------------------------------------------------------------


def _fig3(train, test):
    delay = [
        [(b - a) if a is not None and b is not None else None for a, b in zip(r, q, strict=True)]
        for r, q in zip(train, test, strict=True)
    ]
    return {
        "threshold_kind": "absolute", "threshold": 0.1, "metric": "delay",
        "alphas": [0.5, 1.0, 2.0], "eps": [0.05, 0.2], "matrix": delay,
        "train_step": train, "test_step": test, "final_step": [[1000] * 2] * 3,
        "never": [],
    }  # fmt: skip


GOOD_TRAIN = [[10, 10], [10, 10], [10, 10]]


def test_fig3(rep):
    # delay grows with alpha, shrinks with eps; the largest alpha at small eps never groks
    good = [[50, 20], [100, 40], [None, 80]]
    assert rep.check_fig3(_fig3(GOOD_TRAIN, good))[1] == "yes"
    never_fit = [[10, 10], [10, 10], [None, None]]
    lines, v = rep.check_fig3(_fig3(never_fit, good))
    assert v != "yes" and "never fitted" in "\n".join(lines)
    small_alpha_never = [[None, 20], [100, 40], [None, 80]]  # fits, never groks at alpha 0.5
    assert rep.check_fig3(_fig3(GOOD_TRAIN, small_alpha_never))[1] != "yes"
    grows_not_shrinks = [[20, 50], [40, 100], [None, 200]]
    v = rep.check_fig3(_fig3(GOOD_TRAIN, grows_not_shrinks))[1]
    assert v == "partly" and str(v) == "partly (fails: the delay shrinks with eps)"


# --- fig 5 -------------------------------------------------------------------------------


def _fig5(train, test):
    return {
        "by_k": {
            str(k): dict(eigenvalue=1 / (k + 1), train_half=tr, test_half=te,
                         final_test_over_start=0.1, final_test_over_k0=1.0)
            for k, tr, te in zip((1, 2, 3), train, test, strict=True)
        },
        "laziness_max": {"lin_test_gap": 0.01, "kernel_change": 0.001, "param_movement": 0.01},
    }  # fmt: skip


def test_fig5(rep):
    assert rep.check_fig5(_fig5([1, 2, 3], [5, 10, 20]))[1] == "yes"
    assert rep.check_fig5(_fig5([1, 2, None], [5, 10, None]))[1] != "yes"
    # "late or never": the smallest eigenvalue fits and never generalises, after two that did
    assert rep.check_fig5(_fig5([1, 2, 3], [5, 10, None]))[1] == "yes"
    assert rep.check_fig5(_fig5([1, 2, 3], [5, None, 20]))[1] != "yes"  # never before a later
    assert rep.check_fig5(_fig5([1, 2, 3], [5, None, None]))[1] != "yes"  # one is no order
    assert rep.check_fig5(_fig5([1, 2, 3], [5, 10, 7]))[1] != "yes"


# --- fig 1, fig 4, student-teacher: single runs ----------------------------------------


def _fig1(train, test, ratio):
    return {
        "time_to_grok": {"train_step": train, "test_step": test, "ratio": ratio},
        "alignment": {}, "final_test_loss": 0.01, "max_test_loss": 1.0,
        "final_lin_test_loss": 0.5, "k0_test_mse": 0.5, "config": {"epochs": 100},
    }  # fmt: skip


def test_fig1(rep):
    assert rep.check_fig1(_fig1(10, 100, 10))[1] == "yes"
    lines, v = rep.check_fig1(_fig1(None, None, None))
    assert v != "yes" and "never fell" in "\n".join(lines)
    lines, v = rep.check_fig1(_fig1(10, None, None))
    assert v != "yes" and "never generalised within 100 steps" in "\n".join(lines)


def _fig4(train, test, collapse=100):
    d = {"variance": 1, "misalignment": 1, "linear": 1}
    return {
        "time_to_grok": {"train_step": train, "test_step": test},
        "decomposition_initial": d, "decomposition_final": d,
        "misalignment_at_train_crossing": 0.9 if train is not None else None,
        "misalignment_collapse_step": collapse,
        "max_rel_gap": 0.01, "mc_rel_std_bound": 0.02, "config": {"P_test": 10},
    }  # fmt: skip


def test_fig4(rep):
    assert rep.check_fig4(_fig4(10, 100))[1] == "yes"
    assert rep.check_fig4(_fig4(None, None, None))[1] != "yes"
    v = rep.check_fig4(_fig4(10, None))[1]  # fits, never generalises
    assert v == "partly" and "collapse" in str(v)
    # the test loss falls long before the misalignment collapses: not "with" it
    v = rep.check_fig4(_fig4(10, 100, collapse=1000))[1]
    assert v == "partly" and "collapse" in str(v)
    v = rep.check_fig4(_fig4(10, 15, collapse=15))[1]  # right after the fit: no delay
    assert v == "partly" and "well after the fit" in str(v)


def _st(test_steps):
    cs = [
        dict(threshold=t, test_step=s, train_step=1, delay_ratio=s,
             test_loss_over_threshold=1.0 if s is not None else None)
        for t, s in zip((0.1, 0.01), test_steps, strict=True)
    ]  # fmt: skip
    steps = [s for s in test_steps if s is not None]
    spread = max(steps) / min(steps) if len(steps) == 2 else None
    return {
        "crossings": cs, "level": 0.9, "test_step_spread": spread, "initial_test_loss": 1,
        "final_test_loss": 0.001, "k0_test_mse": 0.5,
    }  # fmt: skip


def test_student_teacher(rep):
    assert rep.check_student_teacher(_st([10, 1000]))[1] == "yes"
    assert rep.check_student_teacher(_st([10, None]))[1] == "no"
