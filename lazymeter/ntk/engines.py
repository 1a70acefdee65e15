"""The engine protocol, the engine registry, and the two generic engines.

An engine is an :class:`Engine`: it says whether it applies to a model and inputs
(:meth:`~Engine.applicable`), estimates its cost (:meth:`~Engine.cost`), sizes its blocks
to a memory budget (:meth:`~Engine.plan_chunk`) and computes the kernel
(:meth:`~Engine.compute`). Engines are registered in :data:`ENGINES` under their method
name by :func:`register_engine`; ``method="auto"`` (:func:`choose_engine`) takes the
applicable engine with the lowest estimated cost, whatever its name. Engines see a
:class:`~lazymeter.ntk.functional.FunctionalModel`, never a meter. ``x2 is None`` asks
for the symmetric kernel of ``x1`` with itself.

Shapes: ``K`` is ``[P1, P2]`` when ``trace`` (outputs summed), else
``[P1, P2, O, O]``; ``K[i, j, o, q] = <J_o(x_i), J_q(x_j)>``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from .blocks import blocked_kernel, contract, contract_groups, jacobian_rows
from .functional import FunctionalModel, num_samples

# Live copies per Jacobian entry: the two blocks being contracted plus the
# cotangent/gradient buffers of the vmapped backward pass.
_COPIES = 3


def auto_chunk_size(n_samples: int, n_out: int, n_params: int, itemsize: int, budget: int) -> int:
    """Largest chunk whose ``[chunk, O, n_params]`` Jacobian blocks fit in ``budget`` bytes
    (three live copies: two blocks being contracted and the backward buffers)."""
    per_sample = _COPIES * n_out * n_params * itemsize
    return int(max(1, min(n_samples, budget // max(per_sample, 1))))


class Engine:
    """One way of computing the empirical NTK; subclass it and register an instance.

    The four methods are the whole contract between an engine and
    :func:`~lazymeter.empirical_ntk`:

    * :meth:`applicable` -- None when the engine can compute this kernel, else the reason
      it cannot (``method="auto"`` skips it; asking for it by name is not refused here);
    * :meth:`cost` -- estimated FLOPs of the whole kernel (``method="auto"`` takes the
      applicable engine with the lowest; ties go to the engine registered first);
    * :meth:`plan_chunk` -- samples per block when ``chunk_size=None``, sized to the
      memory budget;
    * :meth:`compute` -- the kernel, ``[P1, P2]`` traced or ``[P1, P2, O, O]``.

    Optional: :meth:`peak_bytes` (the memory model behind :meth:`plan_chunk`, reported by
    :func:`~lazymeter.ntk.kernel_plan`) and a ``groups`` keyword of :meth:`compute` (the
    per-layer split in one pass; without it the split takes one call per group).

    The defaults: always applicable, cost unknown (``inf``: auto takes the engine only
    when nothing with an estimate applies), blocks sized for ``[c, O, n_params]`` Jacobians.
    Calling an engine calls :meth:`compute` (through :func:`engine_kernel`).
    """

    #: The method name it is registered under (set by :func:`register_engine`).
    name: str = ""

    def applicable(self, fm: FunctionalModel, x1: tuple[Tensor, ...], n_out: int) -> str | None:
        """None if this engine computes the kernel of ``fm`` on inputs like ``x1``, else why not."""
        return None

    def cost(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        n_out: int,
        trace: bool,
    ) -> float:
        """Estimated FLOPs of the kernel between ``x1`` and ``n2`` samples (``None``: the
        symmetric kernel of ``x1``) with ``n_out`` outputs."""
        return math.inf

    def plan_chunk(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        *,
        n_out: int,
        trace: bool,
        budget: int,
        n_samples: int,
    ) -> int:
        """Samples per block such that one call's working memory fits ``budget`` bytes;
        ``n_samples`` is the larger of the two input sets."""
        return auto_chunk_size(n_samples, n_out, fm.n_params, fm.dtype.itemsize, budget)

    def peak_bytes(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
    ) -> int:
        """Predicted peak bytes of one call's blocks, the returned kernel excluded. The
        default models ``[c, O, n]`` Jacobian blocks: every column block kept when they all
        fit ``budget`` (``P2 O n`` entries, plus the production of one more block), else
        :data:`_COPIES` blocks live at once."""
        per_sample = n_out * fm.n_params * fm.dtype.itemsize
        c = min(chunk_size, max(num_samples(x1), n2 or 0))
        n_cols = num_samples(x1) if n2 is None else n2
        if n_cols * per_sample <= budget:
            return (n_cols + (_COPIES - 1) * c) * per_sample
        return _COPIES * c * per_sample

    def compute(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """The kernel: ``[P1, P2]`` when ``trace``, else ``[P1, P2, O, O]``.

        With ``groups`` (lists of names of ``fm.params``, each parameter in one group) the
        kernel split by group, ``[G, P1, P2]`` (``[G, P1, P2, O, O]``): ``K_g`` is the
        kernel over the parameters ``groups[g]`` alone, so ``sum_g K_g = K``. An engine
        whose ``compute`` takes no ``groups`` is still asked for the split
        (:func:`engine_kernel`): once per group, on ``fm`` restricted to that group.
        """
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """``engine(fm, x1, x2, *, n_out, trace, chunk_size, budget, groups=None)``:
        :func:`engine_kernel`."""
        return engine_kernel(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def takes_groups(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a ``groups`` keyword (an engine written before it did not)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "groups" or p.kind is p.VAR_KEYWORD for p in params)


def engine_kernel(
    engine: Engine,
    fm: FunctionalModel,
    x1: tuple[Tensor, ...],
    x2: tuple[Tensor, ...] | None,
    *,
    groups: Sequence[Sequence[str]] | None = None,
    **kw: Any,
) -> Tensor:
    """``engine.compute(fm, x1, x2, **kw, groups=groups)``, for every engine.

    An engine whose ``compute`` takes no ``groups`` gives the per-group split by one
    call per group on ``fm`` restricted to the group (``G`` calls: each costs about what
    the whole kernel does for engines dominated by forward and backward passes); the
    built-in engines keep the split in one pass. An engine written for the former
    protocol, with a separate ``compute_groups(fm, x1, x2, *, groups, ...)``, gets that."""
    legacy = getattr(engine, "compute_groups", None)
    if groups is not None and legacy is not None and not takes_groups(engine.compute):
        return legacy(fm, x1, x2, groups=groups, **kw)
    return grouped_call(engine.compute, fm, x1, x2, groups, kw)


def grouped_call(
    compute: Callable[..., Tensor],
    fm: FunctionalModel,
    x1: tuple[Tensor, ...],
    x2: tuple[Tensor, ...] | None,
    groups: Sequence[Sequence[str]] | None,
    kw: dict[str, Any],
) -> Tensor:
    """``compute(fm, x1, x2, **kw)``, split by ``groups``: passed on when ``compute``
    takes them, else one call per group on ``fm`` restricted to it, stacked."""
    if groups is None:
        return compute(fm, x1, x2, **kw)
    if takes_groups(compute):
        return compute(fm, x1, x2, groups=groups, **kw)
    only = [FunctionalModel(fm.model, fm.output_fn, only=names) for names in groups]
    return torch.stack([compute(part, x1, x2, **kw) for part in only])


class FunctionEngine(Engine):
    """An engine given as a plain function ``fn(fm, x1, x2, *, n_out, trace, chunk_size,
    budget[, groups]) -> K``, with the :class:`Engine` defaults for everything else (a
    function without ``groups`` gives the per-layer split one group at a time)."""

    def __init__(self, fn: Callable[..., Tensor], name: str = "") -> None:
        self.fn = fn
        self.name = name
        self.__doc__ = fn.__doc__

    def compute(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """``fn(fm, x1, x2, ...)`` (once per group when ``fn`` takes no ``groups``)."""
        kw = dict(n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget)
        return grouped_call(self.fn, fm, x1, x2, groups, kw)


#: Method name -> engine; ``empirical_ntk(method=name)`` uses it, ``method="auto"`` chooses
#: among all of them (:func:`choose_engine`).
ENGINES: dict[str, Engine] = {}

_T = TypeVar("_T")


def as_engine(obj: Any, name: str = "") -> Engine:
    """``obj`` as an :class:`Engine`: itself, or a plain engine function wrapped."""
    if isinstance(obj, Engine):
        return obj
    if callable(obj):
        return FunctionEngine(obj, name)
    raise TypeError(f"engine: expected an Engine or a function, got {type(obj).__name__}")


def register_engine(name: str, engine: Any = None) -> Any:
    """Add an engine to :data:`ENGINES` under ``name``.

    ``register_engine(name, MyEngine())`` registers an :class:`Engine` instance;
    ``@register_engine(name)`` decorates an :class:`Engine` subclass instance or a plain
    function ``fn(fm, x1, x2, *, n_out, trace, chunk_size, budget) -> K`` (wrapped with the
    :class:`Engine` defaults). Returns what it was given. ``method="auto"`` considers every
    registered engine; :func:`unregister_engine` removes one.
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"register_engine: expected a method name other than 'auto', got {name!r}")

    def add(obj: _T) -> _T:
        eng = as_engine(obj, name)
        if not eng.name:
            eng.name = name
        ENGINES[name] = eng
        return obj

    return add if engine is None else add(engine)


def unregister_engine(name: str) -> Engine | None:
    """Remove the engine registered under ``name`` (returned; None if there was none)."""
    return ENGINES.pop(name, None)


def ranked_engines(
    fm: FunctionalModel, x1: tuple[Tensor, ...], n2: int | None, n_out: int, trace: bool
):
    """Yield ``(name, reason)`` for every registered engine, cheapest estimated cost first
    (ties: registration order); ``reason`` is None when it applies. Applicability is asked
    lazily, so an expensive test runs only when its engine is next in line."""
    ranked = []
    for order, (name, obj) in enumerate(ENGINES.items()):
        eng = as_engine(obj, name)
        c = float(eng.cost(fm, x1, n2, n_out, trace))
        ranked.append((math.inf if math.isnan(c) else c, order, name, eng))
    ranked.sort(key=lambda r: (r[0], r[1]))
    for _, _, name, eng in ranked:
        yield name, eng.applicable(fm, x1, n_out)


def choose_engine(
    fm: FunctionalModel, x1: tuple[Tensor, ...], n2: int | None, n_out: int, trace: bool
) -> str:
    """``method="auto"``: the name of the applicable engine with the lowest estimated cost.

    Every registered engine's :meth:`~Engine.cost` is evaluated (ties go to the engine
    registered first); then engines are asked, cheapest first, whether they apply, and
    the first that does is taken (so an expensive applicability test runs only when its
    engine would win).
    """
    reasons = []
    for name, why in ranked_engines(fm, x1, n2, n_out, trace):
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    raise ValueError("method='auto': no registered engine applies (" + "; ".join(reasons) + ")")


def owners_of(names: Sequence[str], groups: Sequence[Sequence[str]]) -> list[int]:
    """The index in ``groups`` of each parameter of ``names`` (each in exactly one group)."""
    index = {n: g for g, members in enumerate(groups) for n in members}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"groups: parameters {missing} are in no group")
    return [index[n] for n in names]


def recurrent_layers(fm: FunctionalModel) -> str | None:
    """Why ``torch.func.vmap`` cannot run this model per sample, or None: recurrent layers
    (``nn.RNN``/``nn.GRU``/``nn.LSTM``) make their hidden state inside ``forward`` and
    update it in place, which vmap cannot batch."""
    for name, m in fm.model.named_modules():
        if isinstance(m, torch.nn.RNNBase):
            return (
                f"the recurrent layer {name!r} ({type(m).__name__}) builds its hidden state "
                "inside forward, which torch.func.vmap cannot batch; method='loop' computes "
                "its kernel (method='auto' picks it)"
            )
    return None


def refuse_recurrent(fm: FunctionalModel, method: str) -> None:
    """A clear ``ValueError`` instead of torch's vmap error deep inside a recurrent layer."""
    why = recurrent_layers(fm)
    if why is not None:
        raise ValueError(f"method={method!r}: {why}")


class ContractionEngine(Engine):
    """``K = J(x1) J(x2)^T`` block by block, from per-parameter Jacobian blocks
    ``rows(fm, xs, n_out)`` (one ``[c, O, n_p]`` tensor per parameter of ``fm.params``):
    the one implementation of ``"jacobian"`` and ``"loop"``, which differ in their rows.

    Memory: two ``[chunk, O, n]`` Jacobian blocks, or all of them when they fit in
    ``budget`` bytes (the symmetric kernel then computes every Jacobian exactly once).
    With ``groups``, each parameter's contraction goes to its group's kernel
    (:func:`~lazymeter.ntk.blocks.contract_groups`): one pass, the cost of the whole.
    """

    #: ``rows(fm, xs, n_out) -> [J_p [c, O, n_p], ...]`` in ``fm.params`` order.
    rows: Callable[[FunctionalModel, tuple[Tensor, ...], int], list[Tensor]]
    #: Whether ``rows`` runs under ``vmap`` (then recurrent layers are refused).
    vmapped: bool = True

    def compute(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """See the class docstring."""
        if self.vmapped:
            refuse_recurrent(fm, self.name)
        total = num_samples(x1 if x2 is None else x2) * n_out * fm.n_params * fm.dtype.itemsize
        rows = lambda xs: self.rows(fm, xs, n_out)  # noqa: E731
        if groups is None:
            pair_fn = lambda a, b: contract(a, b, trace)  # noqa: E731
        else:
            owners = owners_of(list(fm.params), groups)
            pair_fn = lambda a, b: contract_groups(a, b, trace, owners, len(groups))  # noqa: E731
        return blocked_kernel(
            x1,
            x2,
            chunk_size,
            trace=trace,
            n_out=n_out,
            like=next(iter(fm.params.values())),
            row_fn=rows,
            col_fn=rows,
            pair_fn=pair_fn,
            cache_cols=total <= budget,
            groups=0 if groups is None else len(groups),
        )


class JacobianEngine(ContractionEngine):
    """Jacobian contraction: ``K = J(x1) J(x2)^T`` block by block.

    Cost: ``O (P1 + P2)`` backward passes plus ``P1 P2 O n`` (traced) or
    ``P1 P2 O^2 n`` (untraced) multiply-adds. Memory: two ``[chunk, O, n]``
    Jacobian blocks, or all of them when they fit in ``budget`` bytes. Applies to every model
    ``torch.func.vmap`` can run per sample (not recurrent layers: see ``"loop"``).
    """

    rows = staticmethod(jacobian_rows)

    def applicable(self, fm: FunctionalModel, x1: tuple[Tensor, ...], n_out: int) -> str | None:
        """Not for recurrent layers (vmap cannot batch their hidden state)."""
        return recurrent_layers(fm)

    def cost(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        n_out: int,
        trace: bool,
    ) -> float:
        """With ``F`` the forward FLOPs of one sample and ``n`` the parameter count:
        ``3 F O (P1 + P2) + 2 P1 P2 O n`` (``O^2 n`` untraced; ``P2`` term dropped for the
        symmetric kernel, whose Jacobians are computed once)."""
        F = max(fm.forward_flops(x1), 0.0)
        p1 = num_samples(x1)
        p2 = p1 if n2 is None else n2
        contraction = 2.0 * p1 * p2 * fm.n_params * n_out * (1 if trace else n_out)
        return 3.0 * F * n_out * (p1 + (0 if n2 is None else p2)) + contraction


class NTVPEngine(Engine):
    """NTK-vector products: ``K[:, j] = J(x1) . (J(x2_j)^T e)`` via ``vjp`` then ``jvp``.

    Each row Jacobian (from ``vjp``) is pushed forward through the model at the
    column samples with ``jvp``, so the column Jacobians are never formed.
    Cost: ``O P1`` backward passes plus ``O P1`` batched forward-mode passes
    over ``P2`` samples; it wins when a forward pass costs less than the
    parameter count (weight sharing: convolutions, long sequences). Applies only where
    every operation has forward-mode AD.
    """

    def applicable(self, fm: FunctionalModel, x1: tuple[Tensor, ...], n_out: int) -> str | None:
        """Not where an operation lacks forward-mode AD (``parametrizations.weight_norm``),
        nor for recurrent layers (vmap cannot batch their hidden state)."""
        why = recurrent_layers(fm)
        if why is not None:
            return why
        if fm.supports_forward_ad(x1):
            return None
        return "an operation of the model has no forward-mode AD formula (torch.func.jvp)"

    def cost(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        n_out: int,
        trace: bool,
    ) -> float:
        """``3 F O P1 (1 + P2)`` with ``F`` the forward FLOPs of one sample; ``inf`` when
        ``F`` cannot be counted (no estimate)."""
        F = fm.forward_flops(x1)
        if F <= 0:
            return math.inf
        p1 = num_samples(x1)
        p2 = p1 if n2 is None else n2
        return 3.0 * F * n_out * p1 * (1 + p2)

    def plan_chunk(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        *,
        n_out: int,
        trace: bool,
        budget: int,
        n_samples: int,
    ) -> int:
        """The Jacobian block size, further capped so that pushing ``c O`` tangents through
        ``c`` samples (``c^2 O`` activations and tangents) fits ``budget``."""
        chunk = auto_chunk_size(n_samples, n_out, fm.n_params, fm.dtype.itemsize, budget)
        per_pair = 4 * n_out * max(fm.activation_bytes(x1), 1)
        return max(1, min(chunk, math.isqrt(budget // per_pair)))

    def compute(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
    ) -> Tensor:
        """See the class docstring."""
        refuse_recurrent(fm, "ntvp")
        params = fm.params

        def rows(xs: tuple[Tensor, ...]) -> dict[str, Tensor]:
            def one(*x: Tensor) -> dict[str, Tensor]:
                out, pullback = vjp(lambda p: fm.single(p, *x), params)
                basis = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)
                return vmap(pullback)(basis)[0]

            tangents = vmap(one, randomness="different")(*xs)  # {name: [c, O, *shape]}
            return {k: v.flatten(0, 1) for k, v in tangents.items()}  # [c*O, *shape]

        def pair(tangents: dict[str, Tensor], xs: tuple[Tensor, ...]) -> Tensor:
            def push(t: dict[str, Tensor]) -> Tensor:
                return jvp(lambda p: fm.batched(p, xs), (params,), (t,))[1]  # [c2, O]

            out = vmap(push, randomness="different")(tangents)  # [c1*O, c2, O]
            c2 = out.shape[1]
            out = out.reshape(-1, n_out, c2, n_out).permute(0, 2, 1, 3)  # [c1, c2, O, O]
            return out.diagonal(dim1=2, dim2=3).sum(-1) if trace else out

        try:
            return blocked_kernel(
                x1,
                x2,
                chunk_size,
                trace=trace,
                n_out=n_out,
                like=next(iter(params.values())),
                row_fn=rows,
                col_fn=lambda xs: xs,
                pair_fn=pair,
                cache_cols=False,
            )
        except NotImplementedError as e:
            if "forward AD" not in str(e):
                raise
            raise NotImplementedError(
                "method='ntvp': the model uses an operation without forward-mode AD ("
                + str(e).splitlines()[0]
                + "); use method='jacobian' or 'structured' (method='auto' does so itself)"
            ) from e


class LoopEngine(ContractionEngine):
    """Per-sample autograd loop: each sample's forward on a batch of one (no ``vmap``),
    then one backward pass per output, ``J[i, o] = d f_o(x_i) / d theta``; contracted as in
    ``"jacobian"``. Exact for every model whose forward runs on one sample, recurrent
    layers included. Cost: ``P`` forward and ``P O`` backward passes of one sample, in
    Python (the slowest engine: ``method="auto"`` takes it only when no faster engine
    applies or the faster ones fail). Memory: as ``"jacobian"``.
    """

    def cost(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        n_out: int,
        trace: bool,
    ) -> float:
        """``inf``: the last resort."""
        return math.inf

    vmapped = False

    @staticmethod
    def rows(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[Tensor]:
        """:func:`loop_rows`."""
        return loop_rows(fm, xs, n_out)


def loop_rows(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[Tensor]:
    """Per-sample Jacobians of a block by a Python loop of autograd calls, one
    ``[c, O, n_p]`` tensor per parameter (in ``fm.params`` order)."""
    per_param: list[list[Tensor]] = [[] for _ in fm.params]
    with torch.enable_grad():
        for i in range(num_samples(xs)):
            leaves = {k: v.detach().requires_grad_(True) for k, v in fm.params.items()}
            out = fm.batched(leaves, tuple(t[i : i + 1] for t in xs))[0]  # [O]
            grads = [
                torch.autograd.grad(
                    out[o], list(leaves.values()), retain_graph=True, allow_unused=True
                )
                for o in range(n_out)
            ]
            for k, leaf in enumerate(leaves.values()):
                per_param[k].append(
                    torch.stack(
                        [
                            (torch.zeros_like(leaf) if g[k] is None else g[k]).reshape(-1)
                            for g in grads
                        ]
                    )
                )
    return [torch.stack(r) for r in per_param]  # [c, O, n_p] per parameter


#: The generic engines, registered as ``"jacobian"``, ``"ntvp"`` and ``"loop"``.
jacobian_contraction = register_engine("jacobian", JacobianEngine())
ntk_vector_products = register_engine("ntvp", NTVPEngine())
autograd_loop = register_engine("loop", LoopEngine())
