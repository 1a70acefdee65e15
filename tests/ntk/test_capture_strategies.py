"""The one capture's two ways to run the same rules: the batched forward (rules under one
``vmap`` after it, each operand sliced where one sample's shape says the samples are) and
the forward per sample under ``vmap``. Both exact; the batched one taken wherever it can
tell the samples apart, and no use of ``torch.func``'s ``vjp`` (which imports
``torch._dynamo`` on first use, ~0.6 s per process)."""

import subprocess
import sys

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk.cache import CACHE


def strategies(model):
    """The strategy each capture signature of ``model`` settled on (True: batched)."""
    table = CACHE.routes.get(model, {})
    return {
        v.batched for k, v in table.items() if isinstance(k, tuple) and k[:1] == ("operations",)
    }


def assert_exact(model, x, output_fn=None, trace=True, chunk_size=None):
    K = lm.empirical_ntk(
        model,
        x,
        output_fn=output_fn,
        method="structured",
        trace_outputs=trace,
        chunk_size=chunk_size,
    )
    ref = naive_ntk(model, x, None, output_fn, trace)
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))


class Flattened(nn.Module):
    """Samples merged with positions before a raw product, ``[c * T, d] @ W`` (outer
    layout ``(c, T)``)."""

    def __init__(self, d=5, T=3):
        super().__init__()
        self.W = nn.Parameter(torch.randn(d, 4) / d**0.5)
        self.b = nn.Parameter(torch.randn(4))
        self.T = T

    def forward(self, x):  # x [B, T, d]
        B = x.shape[0]
        h = torch.tanh(x.reshape(B * self.T, -1) @ self.W + self.b)
        return h.reshape(B, self.T, 4).sum(1)


class SharedPositions(nn.Module):
    """A position table looked up once for all samples: its output has no sample
    dimension, so this model takes the vmapped forward."""

    def __init__(self, T=4, d=6):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(T, d))
        self.lin = nn.Linear(d, 3)

    def forward(self, x):  # x [B, T, d]
        return self.lin(torch.tanh(x + self.pos[torch.arange(x.shape[1])])).sum(1)


CASES = {
    "mlp": (lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)), (7, 5), None),
    "cnn": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.GroupNorm(1, 3),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(3 * 5 * 5, 2),
        ),
        (6, 2, 5, 5),
        None,
    ),  # fmt: skip
    "encoder_layer": (  # nn.MultiheadAttention: samples merged with positions, (T, c)
        lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval(),
        (5, 3, 8),
        lambda y: y[:, -1, :3],
    ),
    "encoder_layer_seq_first": (
        lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).eval(),
        (3, 5, 8),  # [T, B, E]: the samples are dimension 1 everywhere
        None,
    ),
    "flattened": (Flattened, (6, 3, 5), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_batched_forward_is_taken_and_exact(name):
    make, shape, output_fn = CASES[name]
    torch.manual_seed(0)
    model = make().double()
    x = torch.randn(*shape, dtype=torch.float64)
    if name == "encoder_layer_seq_first":  # the model's batch is dimension 1: samples first
        model = SeqFirst(model)
        x = x.transpose(0, 1).contiguous()
    assert_exact(model, x, output_fn)
    assert_exact(model, x, output_fn, trace=False, chunk_size=2)  # blocks of 2 and 1
    assert strategies(model) == {True}


class SeqFirst(nn.Module):
    """A sequence-first layer given samples first."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x.transpose(0, 1))[-1, :, :3]


def test_an_output_shared_by_all_samples_takes_the_vmapped_forward():
    torch.manual_seed(0)
    model = SharedPositions().double()
    x = torch.randn(5, 4, 6, dtype=torch.float64)
    assert_exact(model, x)
    assert strategies(model) == {False}


def test_a_merged_layout_that_one_sample_cannot_settle_takes_the_vmapped_forward():
    # Identical samples: both layouts of [c * T, d] match the first sample's values.
    torch.manual_seed(0)
    model = Flattened().double()
    x = torch.randn(1, 3, 5, dtype=torch.float64).expand(4, 3, 5).contiguous()
    assert_exact(model, x)
    assert strategies(model) == {False}


def test_the_capture_does_not_import_torch_dynamo():
    code = (
        "import sys, torch, lazymeter as lm\n"
        "from torch import nn\n"
        "m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))\n"
        "lm.empirical_ntk(m, torch.randn(6, 4), method='structured')\n"
        "class P(nn.Module):\n"
        "    def __init__(s):\n"
        "        super().__init__()\n"
        "        s.pos, s.l = nn.Parameter(torch.randn(2, 4)), nn.Linear(4, 2)\n"
        "    def forward(s, x):\n"
        "        return s.l(x + s.pos[torch.arange(2)]).sum(1)\n"
        "lm.empirical_ntk(P(), torch.randn(6, 2, 4), method='structured')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
