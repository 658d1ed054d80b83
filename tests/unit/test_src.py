from __future__ import annotations

import pytest
import torch
from torch import nn

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.selection import round_half_up
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.src import low_rank_factors, src_rank
from model_owner_server.tiny_models import TINY_MODELS
from shared.blocks import find_block_stack
from shared.emulator_model import src_projections
from shared.low_rank import LowRankLinear
from shared.manifest import EmulatorOptions, LayerKind


@pytest.mark.parametrize(("out_f", "in_f", "beta", "rank"), [(64, 64, 0.5, 32), (16, 64, 0.25, 12), (64, 48, 0.99, 1)])
def test_rank_keeps_one_minus_beta_of_the_smaller_dimension(out_f: int, in_f: int, beta: float, rank: int) -> None:
    assert src_rank(out_f, in_f, beta) == rank


@pytest.mark.parametrize("rank", [1, 8, 24, 32])
def test_factors_are_the_optimal_truncation(rank: int) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(48, 32, bias=True)
    factors = low_rank_factors(linear, rank)
    assert factors["A"].shape == (rank, 48) and factors["B"].shape == (32, rank)
    approx = factors["B"] @ factors["A"]
    assert torch.linalg.matrix_rank(approx) == rank
    s = torch.linalg.svdvals(linear.weight.detach().double())
    expected = s[rank:].pow(2).sum().sqrt().item()  # Eckart-Young: error = discarded singular values
    error = torch.linalg.norm(linear.weight.detach() - approx).item()
    assert error == pytest.approx(expected, rel=1e-4, abs=1e-5)
    module = LowRankLinear(48, 32, rank, bias=True)
    module.load_state_dict(factors)
    x = torch.randn(3, 48)
    torch.testing.assert_close(module(x), x @ approx.T + linear.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_src_compresses_only_attention_of_kept_middle_blocks(name: str) -> None:
    base = load_base_model(name)
    spec = EmulatorSpec(base_model=name, method="uniform", alpha=0.5, beta=0.5, adapter_bottom=1, adapter_top=1)
    emulator, manifest = generate_emulator(base, spec, profile=None)
    blocks = find_block_stack(emulator).blocks
    for entry in manifest.layers:
        block = blocks[entry.emulator_index]
        low_rank = [n for n, m in block.named_modules() if isinstance(m, LowRankLinear)]
        if entry.kind == LayerKind.kept_src:
            assert sorted(low_rank) == sorted(entry.src_ranks)
            assert all(n.split(".")[0] in {"self_attn", "attn"} for n in low_rank)
            for n in low_rank:
                module = block.get_submodule(n)
                assert isinstance(module, LowRankLinear)
                assert (
                    module.rank
                    == entry.src_ranks[n]
                    == max(1, round_half_up(0.5 * min(module.in_features, module.out_features)))
                )
        else:
            assert entry.kind == LayerKind.adapter and not low_rank
    # beta = 0 or the SRC ablation switch: no compression anywhere
    for spec_off in (
        spec.model_copy(update={"beta": 0.0}),
        EmulatorSpec(
            base_model=name,
            method="scaleot",
            alpha=0.5,
            beta=0.5,
            adapter_bottom=1,
            adapter_top=1,
            options=EmulatorOptions(importance=False, src=False),
        ),
    ):
        _, m = generate_emulator(base, spec_off, profile=None)
        assert all(e.kind != LayerKind.kept_src for e in m.layers)


def test_src_reconstruction_error_of_real_projection_shapes_shrinks_with_rank() -> None:
    base = load_base_model("tiny-llama")
    block = find_block_stack(base.model).blocks[2]
    for name, module in src_projections(block).items():
        errors = []
        for beta in (0.75, 0.5, 0.25, 0.0):
            w = module.weight.detach()
            f = low_rank_factors(module, src_rank(w.shape[0], w.shape[1], beta))
            errors.append(torch.linalg.norm(w - f["B"] @ f["A"]).item() / torch.linalg.norm(w).item())
        assert errors == sorted(errors, reverse=True), name
        assert errors[-1] < 1e-5
