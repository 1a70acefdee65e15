"""The NTK engines' memo tables belong to one object, ``lazymeter.ntk.CACHE``, and
``lazymeter.ntk.clear_caches()`` empties them without changing any kernel."""

import gc

import torch
from architectures import ARCHITECTURES
from torch import nn

import lazymeter as lm
from lazymeter.ntk import CACHE, NTKCache, clear_caches


def _fill(model, x):
    K = lm.empirical_ntk(model, x, chunk_size=None)  # auto: FLOPs, route, plan
    lm.empirical_ntk(model, x, dtype=torch.float32)  # a float32 cast copy
    return K


def test_clear_caches_empties_every_table_and_kernels_do_not_change():
    assert isinstance(CACHE, NTKCache)
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    x = torch.cat([x1] * 8)  # > 32 samples: the structured engine plans its blocks
    K1 = _fill(model, x)
    assert model in CACHE.routes and model in CACHE.flops and model in CACHE.casts
    assert model in CACHE.plans and model in CACHE.costs
    clear_caches()
    assert len(CACHE) == 0
    assert all(len(t) == 0 for t in CACHE.tables().values())
    K2 = _fill(model, x)
    assert torch.equal(K1, K2)
    assert model in CACHE.routes and model in CACHE.plans


def test_clear_caches_for_one_model_keeps_the_others():
    a, xa, _, _ = ARCHITECTURES["mlp"]()
    b, xb, _, _ = ARCHITECTURES["cnn"]()
    lm.empirical_ntk(a, xa)
    lm.empirical_ntk(b, xb)
    clear_caches(a)
    assert a not in CACHE.routes and b in CACHE.routes
    clear_caches()


def test_entries_go_with_their_model():
    clear_caches()
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    lm.empirical_ntk(model, torch.randn(4, 3))
    assert len(CACHE) > 0
    del model
    gc.collect()
    assert len(CACHE) == 0
