"""The structured engine covers every parameter of the transformers users bring (raw
parameters in einsums, ``nn.MultiheadAttention``'s packed ``in_proj_weight``, HuggingFace
GPT-2's ``Conv1D`` and tied embedding) and stays exact: float64 kernels equal the
per-sample autograd loop to 1e-8, traced and untraced."""

from __future__ import annotations

import pytest
import torch
from architectures import naive_ntk
from torch import nn
from zoo import FULLY_RULED

import lazymeter as lm
from lazymeter.ntk import coverage, explain


def _build(name):
    if name == "hf_gpt2":
        pytest.importorskip("transformers")
    model, x, _, output_fn = FULLY_RULED[name]()
    model = model.double().eval()
    return model, (x.double() if x.is_floating_point() else x), output_fn


@pytest.mark.parametrize("name", sorted(FULLY_RULED))
def test_every_parameter_is_ruled_and_the_kernel_is_exact(name):
    model, x, output_fn = _build(name)
    ex = explain(model, x, output_fn=output_fn)
    assert ex.covered == 1.0, str(ex)
    assert coverage(model, x, output_fn=output_fn) == 1.0
    assert lm.ntk.select_method(model, x, output_fn=output_fn) == "structured"
    x1, x2 = x[:5], x[5:8]
    for trace in (True, False):
        K = lm.empirical_ntk(model, x1, x2, output_fn=output_fn, trace_outputs=trace)
        ref = naive_ntk(model, x1, x2, output_fn, trace)
        assert float((K - ref).norm() / ref.norm()) <= 1e-8, (name, trace)


def test_routes_name_the_operations():
    model, x, output_fn = _build("mha_eval")
    ex = explain(model, x, output_fn=output_fn)
    assert ex["mha.in_proj_weight"].ops == ("linear",)
    assert ex["mha.out_proj.weight"].ops == ("linear",)  # out_proj never runs as a module
    # The traced forward runs anyway: the layers it covers take it too (one pass, not two).
    assert ex["head.weight"].route == "ops linear"
    model, x, output_fn = _build("gpt2_block")
    assert explain(model, x)["wpe.weight"].ops == ("embedding",)  # looked up without batch


def test_hf_gpt2_routes():
    pytest.importorskip("transformers")
    model, x, output_fn = _build("hf_gpt2")
    ex = explain(model, x, output_fn=output_fn)
    assert ex["transformer.wte.weight"].aliases == ("lm_head.weight",)
    assert set(ex["transformer.wte.weight"].ops) == {"embedding", "linear"}
    assert ex["transformer.h.0.attn.c_attn.weight"].ops == ("addmm",)
    assert ex["transformer.h.0.ln_1.weight"].route == "ops layer_norm"


def test_multihead_attention_sequence_first_and_cross_attention():
    torch.manual_seed(0)

    class Cross(nn.Module):
        def __init__(self, batch_first):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
            self.batch_first = batch_first

        def forward(self, x):
            q = x if self.batch_first else x.transpose(0, 1)
            out, _ = self.mha(q, torch.tanh(q), q, need_weights=False)
            return (out[:, -1] if self.batch_first else out[-1]).sum(-1, keepdim=True)

    x = torch.randn(6, 5, 8, dtype=torch.float64)
    for batch_first in (True, False):
        model = Cross(batch_first).double().eval()
        assert coverage(model, x) == 1.0
        K = lm.empirical_ntk(model, x)
        ref = naive_ntk(model, x)
        assert float((K - ref).norm() / ref.norm()) <= 1e-8


@pytest.mark.parametrize("name", ["hf_gpt2", "raw_transformer"])
def test_the_meter_on_operator_ruled_models(name, tmp_path):
    if name == "hf_gpt2":
        pytest.importorskip("transformers")
    model, x, y, output_fn = FULLY_RULED[name]()
    meter = lm.LazyMeter(
        model, alpha=2.0, probe=(x, y), output_fn=output_fn, schedule=1, log_dir=tmp_path
    )
    assert meter.ntk_engine == {
        "method": "auto", "engine": "structured", "outputs": "all", "coverage": 1.0
    }  # fmt: skip
    assert meter.measure()["ntk_drift"] <= 1e-6
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.1))
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(3):
        loss = ((meter(x).float() - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        row = meter.step(step, train_loss=loss.item())
    assert row["ntk_drift"] > 0 and row["param_movement"] > 0
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_hf_bert_with_an_unused_pooler_is_exact():
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    model = BertModel(config).double().eval()
    x = torch.randint(0, 50, (5, 6))
    first = lambda out: out.last_hidden_state[:, 0]  # noqa: E731
    # Including the key biases, whose gradient is zero up to round-off (softmax ignores
    # them): the guard judges them against the whole gradient's scale.
    assert coverage(model, x, output_fn=first) == 1.0
    K = lm.empirical_ntk(model, x, output_fn=first)
    ref = naive_ntk(model, x, output_fn=first)
    assert float((K - ref).norm() / ref.norm()) <= 1e-8
