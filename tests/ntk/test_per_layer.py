"""Per-layer kernels (``empirical_ntk(..., per_layer=True)``): the groups sum to the total
kernel, and each group's kernel equals ``J_g J_g^T`` with ``J_g`` the Jacobian w.r.t. that
group's parameters alone (``torch.func.jacrev``), on every test architecture, float64."""

from __future__ import annotations

import copy

import pytest
import torch
from architectures import ARCHITECTURES, INTEGRITY_ARCHITECTURES, mlp
from models.zoo import ZOO, hf_gpt2, raw_transformer
from torch import nn
from torch.func import functional_call, jacrev

import lazymeter as lm
from lazymeter.ntk import parameter_groups


def _float64(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The model in float64 and eval mode (a per-sample kernel needs no dropout and no
    batch statistics), floating inputs cast alike."""
    model = model.double().eval()
    return model, (x.double() if x.is_floating_point() else x)


def _zoo(name):
    model, x, _, output_fn = ZOO[name]()
    model, x = _float64(model, x)
    return model, x[:5], x[5:8], output_fn


def _hf_gpt2():
    pytest.importorskip("transformers")
    model, x, _, output_fn = hf_gpt2(n_layer=1, vocab=6, d=8)
    return model.double().eval(), x[:3], x[3:5], output_fn


def _raw_transformer():
    model, x, _, output_fn = raw_transformer()
    return model.double().eval(), x[:5], x[5:8], output_fn


#: Every test architecture: tests/architectures.py (float64 already) and the zoo of
#: tests/models/zoo.py (cast to float64, eval mode), with its two optional models.
CASES = {
    **{name: f for name, f in INTEGRITY_ARCHITECTURES.items()},
    **{f"zoo_{name}": (lambda name=name: _zoo(name)) for name in ZOO},
    "zoo_hf_gpt2": _hf_gpt2,
    "zoo_raw_transformer": _raw_transformer,
}


def naive_group_kernel(model, x1, x2, output_fn, names, trace=True):
    """``K_g = J_g(x1) J_g(x2)^T`` from ``jacrev`` of the batched output w.r.t. the
    parameters ``names`` only (torch's ``functional_call`` on a copy of the model: it
    replaces every tied alias too). Samples are independent in eval mode, so row ``i`` of
    the batched Jacobian ``[P, O, *shape]`` is sample ``i``'s: ``J_g`` is ``[P, O, n_g]``."""
    # tensors a weight-norm hook left on a module are graph outputs, which deepcopy refuses
    memo = {
        id(v): v.detach().clone()
        for m in model.modules()
        for v in m.__dict__.values()
        if isinstance(v, torch.Tensor) and not v.is_leaf
    }
    model = copy.deepcopy(model, memo)
    params = dict(model.named_parameters())

    def f(p, x):
        out = functional_call(model, p, (x,))
        out = output_fn(out) if output_fn is not None else out
        return out.reshape(out.shape[0], -1)

    def jac(x):
        J = jacrev(f)({n: params[n].detach() for n in names}, x)
        P = x.shape[0]
        return torch.cat([J[n].reshape(P, -1, params[n].numel()) for n in names], -1)

    J1 = jac(x1)
    J2 = J1 if x2 is None else jac(x2)
    if trace:
        return torch.einsum("ion,jon->ij", J1, J2)
    return torch.einsum("ion,jqn->ijoq", J1, J2)


def _rel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(scale.norm()), 1e-300))


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_layer_kernels_sum_to_the_total_and_match_naive_group_kernels(name):
    model, x1, x2, output_fn = CASES[name]()
    total = lm.empirical_ntk(model, x1, x2, output_fn=output_fn)
    parts = lm.empirical_ntk(model, x1, x2, output_fn=output_fn, per_layer=True)
    groups = parameter_groups(model)
    assert list(parts) == list(groups)
    assert _rel(sum(parts.values()), total, total) <= 1e-10
    for g, names in groups.items():
        ref = naive_group_kernel(model, x1, x2, output_fn, names)
        assert parts[g].shape == total.shape
        # relative to the group's own kernel; an all-zero group (a parameter that does not
        # reach these outputs) against the total's scale
        scale = ref if float(ref.norm()) > 0 else total
        assert _rel(parts[g], ref, scale) <= 1e-10, g


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp", "loop"])
@pytest.mark.parametrize("name", ["cnn", "attention"])
def test_every_engine_splits_its_kernel_exactly(name, method):
    """The symmetric traced kernel and the cross untraced one, in blocks of two samples
    (the blocked assembly mirrors and symmetrises each group's blocks)."""
    model, x1, x2, output_fn = ARCHITECTURES[name]()
    for other, trace in ((None, True), (x2[:2], False)):
        kw = dict(output_fn=output_fn, method=method, trace_outputs=trace, chunk_size=2)
        total = lm.empirical_ntk(model, x1[:3], other, **kw)
        parts = lm.empirical_ntk(model, x1[:3], other, per_layer=True, **kw)
        assert all(K.shape == total.shape for K in parts.values())
        assert _rel(sum(parts.values()), total, total) <= 1e-10
        if other is None:  # each group's symmetric kernel is exactly symmetric
            assert all(torch.equal(K, K.T) for K in parts.values())


def test_untraced_group_kernels_match_naive_ones():
    model, x1, x2, output_fn = ARCHITECTURES["attention"]()
    parts = lm.empirical_ntk(
        model, x1, x2, output_fn=output_fn, per_layer=True, trace_outputs=False
    )
    for g, names in parameter_groups(model).items():
        ref = naive_group_kernel(model, x1, x2, output_fn, names, trace=False)
        assert _rel(parts[g], ref, ref) <= 1e-10, g


def test_groups_are_owning_modules_named_like_named_modules():
    model, *_ = mlp()
    assert parameter_groups(model) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"],
                                       "4": ["4.weight", "4.bias"]}  # fmt: skip


def test_raw_parameters_of_the_root_are_groups_of_their_own_and_submodules_keep_theirs():
    model, *_ = ARCHITECTURES["attention"]()
    groups = parameter_groups(model)
    assert groups["Wq"] == ["Wq"] and groups["pos"] == ["pos"]
    assert groups["embed"] == ["embed.weight"]


def test_a_parametrised_weight_belongs_to_its_module():
    model, *_ = INTEGRITY_ARCHITECTURES["weight_norm_parametrized"]()
    assert parameter_groups(model)["0"] == [
        "0.bias",
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
    ]


def test_frozen_parameters_form_no_group():
    model, x1, _, _ = mlp()
    model[2].requires_grad_(False)
    parts = lm.empirical_ntk(model, x1, per_layer=True)
    assert list(parts) == ["0", "4"]
    torch.testing.assert_close(sum(parts.values()), lm.empirical_ntk(model, x1), rtol=1e-12, atol=0)


def test_a_sketched_kernel_cannot_be_split():
    model, x1, _, _ = mlp()
    with pytest.raises(ValueError, match="per_layer"):
        lm.empirical_ntk(model, x1, per_layer=True, outputs=lm.ntk.Sketch(8))


def test_per_layer_must_be_a_bool():
    model, x1, _, _ = mlp()
    with pytest.raises(TypeError, match="per_layer"):
        lm.empirical_ntk(model, x1, per_layer="yes")


def test_float32_models_split_in_the_requested_dtype():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    parts = lm.empirical_ntk(model, x, per_layer=True, dtype=torch.float64)
    assert all(K.dtype == torch.float64 for K in parts.values())
    total = lm.empirical_ntk(model, x, dtype=torch.float64)
    assert _rel(sum(parts.values()), total, total) <= 1e-12
