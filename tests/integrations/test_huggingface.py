"""LazyMeterCallback with a real transformers.Trainer on a tiny GPT-2 (built in code, CPU)."""

import copy
import json
import math
import shutil

import pytest
import torch

import lazymeter as lm

transformers = pytest.importorskip("transformers", reason="transformers is an optional dependency")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

from lazymeter.integrations.huggingface import (  # noqa: E402
    STATE_FILE,
    LazyMeterCallback,
    causal_lm_loss,
)
from lazymeter.threads import torch_threads  # noqa: E402

VOCAB, T, ALPHA = 50, 8, 2.0


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    config._attn_implementation = "eager"  # vmap (the meter's NTK) has no rule for SDPA on CPU
    return transformers.GPT2LMHeadModel(config)


class Tokens(torch.utils.data.Dataset):
    """Random token sequences whose last token is (first + second) mod 5 (a grokking-style
    answer, so the probe's labels repeat). The labels are the inputs (the model shifts them)
    with position 0, which nothing predicts, masked: every transformers version then counts
    the same number of labels for ``num_items_in_batch``."""

    def __init__(self, n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, T), generator=g)
        self.ids[:, -1] = (self.ids[:, 0] + self.ids[:, 1]) % 5

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        labels = self.ids[i].clone()
        labels[0] = -100
        return {"input_ids": self.ids[i], "labels": labels}


def callback():
    train, test = Tokens(8, seed=1).ids, Tokens(8, seed=2).ids
    probe = lm.ProbeSet((train, train), test=(test, test), max_points=8)
    return LazyMeterCallback(alpha=ALPHA, probe=probe, schedule=2)


def trainer(out, model, cb, max_steps=6):
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=8,
        learning_rate=cb.scaled_lr(1e-2), logging_steps=1, save_strategy="steps", save_steps=2,
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    return transformers.Trainer(
        model=cb.wrap(model), args=args, train_dataset=Tokens(), callbacks=[cb]
    )


def meter_steps(log_history):
    return [e["step"] for e in log_history if any(k.startswith("lazymeter/") for k in e)]


def jsonl_steps(path):
    return [json.loads(line)["step"] for line in open(path)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny ops run fastest on one thread (oversubscribed threads on a loaded machine:
    10x slower); the count is restored after the module."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 steps, a measurement every 2, a checkpoint every 2; the model's initial copy."""
    out = tmp_path_factory.mktemp("hf") / "run"
    model = gpt2()
    model0 = copy.deepcopy(model)  # the initial model, independently of the meter
    cb = callback()
    tr = trainer(out, model, cb)
    tr.train()
    history = [dict(r) for r in cb.meter.history]  # before a resume rewrites the files
    return out, tr, cb, model, model0, history


def test_the_trainer_trains_alpha_times_f_minus_f0_with_the_models_own_loss(run):
    out, tr, cb, model, model0, _ = run
    # At step 1 (computed at initialisation) f - f0 = 0: the logits the loss sees are 0, so
    # the cross-entropy is exactly log(vocab); the Trainer logged it, then it went down.
    losses = {e["step"]: e["loss"] for e in tr.state.log_history if "loss" in e}
    assert list(losses) == [1, 2, 3, 4, 5, 6]
    assert losses[1] == pytest.approx(math.log(VOCAB), rel=1e-6)
    assert losses[6] < losses[1] - 0.05
    # After training, the Trainer's model outputs alpha * (f - f0), computed here from the
    # trained model (unchanged by the wrapper: it still returns f) and its initial copy.
    x = Tokens(4, seed=3).ids
    tr.model.eval()
    with torch.no_grad():
        scaled = tr.model(input_ids=x).logits
        expected = ALPHA * (model(x).logits - model0(x).logits)
    assert expected.abs().max() > 1e-2  # the weights moved
    assert torch.allclose(scaled, expected, atol=1e-5)


def test_rows_follow_the_trainers_steps_into_its_log_history_and_the_output_dir(run):
    out, tr, cb, _, _, history = run
    losses = {e["step"]: e["loss"] for e in tr.state.log_history if "loss" in e}
    # schedule=2 in Trainer steps: step 0 before any update, then after updates 2, 4, 6;
    # a row's train loss is the loss the Trainer logged for the same step.
    assert [r["step"] for r in history] == [0, 2, 4, 6]
    assert "train_loss" not in history[0] and history[0]["ntk_drift"] < 1e-6
    for r in history[1:]:
        assert r["train_loss"] == pytest.approx(losses[r["step"]], rel=1e-5)
        assert r["ntk_drift"] > 0.0
    assert meter_steps(tr.state.log_history) == [0, 2, 4, 6]
    last = [e for e in tr.state.log_history if "lazymeter/ntk/drift" in e][-1]
    assert last["lazymeter/ntk/drift"] == pytest.approx(history[-1]["ntk_drift"])
    # Files in args.output_dir; the meter's state and its rows so far in each checkpoint.
    assert jsonl_steps(out / "history.jsonl") == [0, 2, 4, 6]
    assert list(out.glob("events.out.tfevents*"))
    for step in (2, 4, 6):
        assert (out / f"checkpoint-{step}" / STATE_FILE).exists()
    state = json.load(open(out / "checkpoint-4" / "trainer_state.json"))
    assert meter_steps(state["log_history"]) == [0, 2, 4]


def test_resuming_from_a_checkpoint_continues_the_history_without_duplicates(run):
    out, _, cb, _, _, history = run
    # A fresh model (other weights), callback and Trainer, resumed from step 4 of 6: rows
    # 0-4 come back, row 6 is measured again (not twice), f0 is the first run's model.
    cb2 = callback()
    tr2 = trainer(out, gpt2(seed=1), cb2)
    tr2.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    resumed = cb2.meter.history
    assert [r["step"] for r in resumed] == [0, 2, 4, 6]
    assert resumed[:3] == history[:3]
    for k, v in history[3].items():  # the same training: the same numbers
        assert resumed[3][k] == pytest.approx(v, rel=1e-4, abs=1e-7, nan_ok=True), k
    for a, b in zip(cb2.meter.snapshot.buffers(), cb.meter.snapshot.buffers(), strict=True):
        assert torch.equal(a, b)
    assert jsonl_steps(out / "history.jsonl") == [0, 2, 4, 6]
    assert meter_steps(tr2.state.log_history) == [0, 2, 4, 6]


def test_resuming_without_the_meters_state_is_an_error_naming_the_file(run, tmp_path):
    out = run[0]
    moved = tmp_path / "elsewhere"
    shutil.copytree(out / "checkpoint-2", moved)
    (moved / STATE_FILE).unlink()
    with pytest.raises(ValueError, match=STATE_FILE):
        trainer(tmp_path / "out", gpt2(), callback()).train(resume_from_checkpoint=str(moved))


def test_a_trainer_given_the_unwrapped_model_is_an_error_naming_wrap(tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="wrap"):
        transformers.Trainer(model=gpt2(), args=args, callbacks=[callback()])


def test_causal_lm_loss_is_the_models_own_loss():
    model = gpt2()
    x = Tokens(4, seed=5).ids
    labels = x.clone()
    labels[1, 3] = -100
    with torch.no_grad():
        out = model(input_ids=x, labels=labels)
    assert float(causal_lm_loss(out.logits, labels)) == pytest.approx(float(out.loss), rel=1e-6)
    n = int((labels[:, 1:] != -100).sum())
    summed = causal_lm_loss(out.logits, labels, num_items_in_batch=2 * n)
    assert float(summed) == pytest.approx(float(out.loss) / 2, rel=1e-6)


def test_lazymeter_0_1_keywords_pass_through_to_the_meter_with_its_warning(tmp_path):
    from types import SimpleNamespace

    train, test = Tokens(8, seed=1).ids, Tokens(8, seed=2).ids
    cb = LazyMeterCallback(alpha=ALPHA, probe=(train, train), test_probe=(test, test), max_probe=5)
    model = cb.wrap(gpt2())
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(is_world_process_zero=True)
    with pytest.warns(lm.LazymeterDeprecationWarning, match="test_probe"):
        cb.on_init_end(args, state, None, model=model)
    assert cb.meter.probe_x.shape[0] == 5 and cb.meter.test_x.shape[0] == 5
    assert set(cb.meter.test_y.tolist()) <= set(test[:, -1].tolist())  # the last labels
    cb.meter.close()
