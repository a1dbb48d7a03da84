"""Models and inputs shared by the interop tests: one trained digits model (cached per session)
and random models over every layer kind, including the bound and tie edge cases."""

from __future__ import annotations

import torch
from bitswarm.golden.layer import LayerConfig
from bitswarm.golden.model import Model, ModelConfig, load_model
from bitswarm.train import TrainConfig, load_dataset, train

__all__ = ["CASES", "DIGITS_TRAIN", "digits", "edge_inputs", "inputs_for", "random_model",
           "tie_model", "trained_digits", "widest_model"]

#: The trained model of the whole-test-set checks: the golden rule, 10 epochs (about 2 s).
DIGITS_TRAIN = TrainConfig(dataset="digits", arch=(64, 64, 10), epochs=10)
_CACHE: dict = {}


def digits():
    if "ds" not in _CACHE:
        _CACHE["ds"] = load_dataset("digits")
    return _CACHE["ds"]


def trained_digits(tmp_path_factory) -> Model:
    """The golden rule's digits model of :data:`DIGITS_TRAIN`, trained once per session."""
    if "trained" not in _CACHE:
        d = tmp_path_factory.mktemp("interop_digits")
        train(DIGITS_TRAIN, out=d / "digits.bsm", run_dir=d / "run", quiet=True, plots=False)
        _CACHE["trained"] = load_model(d / "digits.bsm")
    return _CACHE["trained"]


#: name -> (input_shape, layers as (n_in, n_out, swarm, input_bits, weights)).
CASES = {
    "s1_bits8_digits": ((8, 8), [(64, 40, 1, 8, "binary"), (40, 10, 1, 1, "binary")]),
    "s4_bits8_ragged": ((8, 8), [(64, 45, 4, 8, "binary"), (45, 10, 4, 1, "binary")]),
    "s32_bits3": ((37,), [(37, 9, 32, 3, "binary"), (9, 3, 32, 1, "binary")]),
    "bits1_ragged": ((8, 8), [(64, 33, 1, 1, "binary"), (33, 7, 1, 1, "binary")]),
    "bits8_n100_deep": ((10, 10), [(100, 70, 2, 8, "binary"), (70, 31, 2, 1, "binary"),
                                   (31, 5, 2, 1, "binary")]),
    "ternary_bits8": ((8, 8), [(64, 45, 1, 8, "ternary"), (45, 20, 1, 1, "ternary"),
                               (20, 10, 4, 1, "binary")]),
    "ternary_bits1_out": ((50,), [(50, 33, 1, 1, "ternary"), (33, 4, 1, 1, "ternary")]),
    "single_layer_bits5": ((8, 8), [(64, 10, 2, 5, "binary")]),
    "wide_words": ((130,), [(130, 65, 1, 2, "binary"), (65, 64, 8, 1, "binary"),
                            (64, 6, 1, 1, "binary")]),
}


def _config(shape, layers) -> ModelConfig:
    lays = tuple(LayerConfig(n_in=a, n_out=b, swarm=s, input_bits=bits, weights=w,
                             output=i == len(layers) - 1)
                 for i, (a, b, s, bits, w) in enumerate(layers))
    return ModelConfig(input_shape=tuple(shape), layers=lays)


def random_model(name: str, seed: int = 0, thresholds: str = "spread") -> Model:
    """A random model of ``CASES[name]``.

    ``thresholds``: ``"spread"`` (uniform in ±z_bound/8, random invert bits), ``"extreme"``
    (each theta one of -z_bound, -z_bound+1, 0, z_bound-1, z_bound, random invert bits) or
    ``"boundary"`` (hidden thetas equal to the first input's z, so that z - theta = 0).
    """
    shape, layers = CASES[name]
    m = Model.random(_config(shape, layers), seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i, lay in enumerate(m.cfg.layers):
        zb = lay.z_bound
        if thresholds == "spread":
            sp = max(1, zb // 8)
            th = torch.randint(-sp, sp + 1, (lay.n_out,), generator=g)
        else:
            pick = torch.tensor([-zb, -zb + 1, 0, zb - 1, zb])
            th = pick[torch.randint(0, 5, (lay.n_out,), generator=g)]
        m.theta[i] = th.to(torch.int32)
        if not lay.output:
            m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    if thresholds == "boundary":  # layer by layer, theta = z of inputs_for(m)'s sample 0
        x = inputs_for(m, 1)
        for i in range(len(m.cfg.layers)):
            m.theta[i] = _preact(m, i, x).to(torch.int32)
    m.validate()
    return m


def _preact(m: Model, i: int, x) -> torch.Tensor:
    from bitswarm.golden.layer import preact
    from bitswarm.golden.model import quantize_input

    trace: list = []
    m.forward(x, trace=trace)
    h = quantize_input(m.cfg, x) if i == 0 else trace[i - 1]
    return preact(m.cfg.layers[i], h, m.weights[i])[0]


def tie_model() -> Model:
    """Digits-shaped model whose output rows are all equal: classes 0..2 score 5 less than
    classes 3..9, which tie, so golden's argmax is 3 for every input."""
    m = Model.random(_config((8, 8), [(64, 40, 1, 8, "binary"), (40, 10, 1, 1, "binary")]), 5)
    m.weights[1][:] = m.weights[1][:, :1]
    m.theta[1] = torch.tensor([5, 5, 5] + [0] * 7, dtype=torch.int32)
    m.theta[0] = torch.randint(-300, 300, (40,), generator=torch.Generator().manual_seed(2),
                               dtype=torch.int32)
    m.validate()
    return m


def widest_model() -> Model:
    """The largest legal layer (N = 65536, S = 32, B = 8; z_bound = 534,773,760) as the output
    layer: class 0 has all weight bits 1 and theta -z_bound, class 1 all 0 and theta +z_bound,
    so the all-255 input scores +-2 z_bound = +-1,069,547,520."""
    lay = LayerConfig(n_in=65536, n_out=2, swarm=32, input_bits=8, output=True)
    cfg = ModelConfig(input_shape=(256, 256), layers=(lay,))
    w = torch.zeros(lay.weight_shape(), dtype=torch.uint8)
    w[:, 0] = 1
    zb = lay.z_bound
    return Model(cfg, [w], [torch.tensor([-zb, zb], dtype=torch.int32)],
                 [torch.zeros(2, dtype=torch.uint8)])


def edge_inputs(n_in: int) -> torch.Tensor:
    """All-0, all-255, all-127, all-128 and alternating samples, ``[5, n_in]`` uint8."""
    rows = [torch.full((n_in,), v, dtype=torch.uint8) for v in (0, 255, 127, 128)]
    rows.append((torch.arange(n_in) % 2 * 255).to(torch.uint8))
    return torch.stack(rows)


def inputs_for(m: Model, n: int = 300, seed: int = 0) -> torch.Tensor:
    """``n`` random samples ``[n, *input_shape]`` then the :func:`edge_inputs`, uint8."""
    g = torch.Generator().manual_seed(seed + 100)
    n_in = m.cfg.layers[0].n_in
    x = torch.randint(0, 256, (n, n_in), generator=g, dtype=torch.uint8)
    return torch.cat([x, edge_inputs(n_in)]).reshape(-1, *m.cfg.input_shape)
