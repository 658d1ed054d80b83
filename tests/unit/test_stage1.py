from __future__ import annotations

import itertools

import pytest
import torch

from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.policy import deployed_mask, sample_mask, scores_from_errors, served_sizes
from model_owner_server.emulators.profile import find_profile, profile_dir
from model_owner_server.emulators.stage1 import (
    Stage1Cancelled,
    Stage1Progress,
    run_stage1,
)
from tests.unit.helpers import TEXTS, tiny_config, tiny_profile


def test_mask_sampling_follows_the_policy() -> None:
    scores = torch.tensor([5.0, 5.0, -5.0, -5.0, 0, 0, 0, 0, 3.0, -3.0], requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(200):
        replaced, log_prob = sample_mask(scores, 3, gen)
        assert len(replaced) == 3 == len(set(replaced))
        assert log_prob.item() <= 0 and log_prob.requires_grad
        counts[replaced] += 1
    # low importance -> replaced more often
    assert counts[2] > 190 and counts[3] > 190 and counts[9] > 150 and counts[0] < 10 and counts[1] < 10


def test_deployed_masks_are_nested_and_match_stage_2() -> None:
    scores = [0.3, -1.0, 2.0, -1.0, 0.0, 1.5]
    assert deployed_mask(scores, 2) == [1, 3]  # ties broken by position
    masks = [set(deployed_mask(scores, k)) for k in (1, 2, 3, 4)]
    assert all(a <= b for a, b in itertools.pairwise(masks))
    assert served_sizes(26, [0.25, 0.5, 0.75]) == [7, 13, 20]
    assert served_sizes(2, [0.1]) == []


def test_initial_scores_rank_blocks_by_replacement_error() -> None:
    scores = scores_from_errors([0.01, 0.1, 0.001, 1.0], scale=2.0)
    assert deployed_mask(scores, 2) == [0, 2]
    assert abs(float(scores.mean())) < 1e-5 and torch.all(scores_from_errors([0.5, 0.5], 1.0) == 0)


def test_stage1_is_deterministic_given_the_seed() -> None:
    _, first = tiny_profile()
    # same config: the cached profile would be reused, so run again from scratch in a fresh cache dir
    base = load_base_model("tiny-llama")
    import shutil

    shutil.rmtree(profile_dir(first.meta.profile_id))
    second = run_stage1(base, tiny_config(), texts=TEXTS)
    assert first.meta.importance == second.meta.importance
    assert first.meta.curve == second.meta.curve
    for key, tensor in first.harmonizers.items():
        assert torch.equal(tensor, second.harmonizers[key]), key
    _, other_seed = tiny_profile(seed=1)
    assert other_seed.meta.importance != first.meta.importance


def test_stage1_trains_harmonizers_and_reports_progress() -> None:
    seen: list[Stage1Progress] = []
    base = load_base_model("tiny-gpt2")
    profile = run_stage1(base, tiny_config(steps=6), texts=TEXTS, on_progress=seen.append)
    # the initialisation is announced as its own phase before the first step (a job names it in its status)
    assert [(p.step, p.phase) for p in seen] == [(0, "initialisation"), *((s, "training steps") for s in range(1, 7))]
    assert all(p.total == 6 for p in seen)
    assert len(profile.meta.curve) == 6 and profile.meta.importance != [0.0] * 6
    init = profile.meta.init
    assert init is not None and len(init.influence) == len(init.fit_error) == len(init.importance) == 6
    assert all(0 <= e < 1 for e in init.fit_error)  # the regression beat the identity on held-out text
    ups = [v for k, v in profile.harmonizers.items() if k.endswith("up.weight")]
    assert len(ups) == 6 and all(v.abs().sum() > 0 for v in ups)  # left the zero init
    # originals were frozen and restored
    assert all(not p.requires_grad for p in base.model.parameters())
    assert type(base.model.transformer.h[3]).__name__ == "GPT2Block"


def test_stage1_resumes_from_a_checkpoint_to_the_same_result() -> None:
    base = load_base_model("tiny-llama")
    config = tiny_config(steps=6, checkpoint_every=2)
    calls = {"n": 0}

    def stop_at_step_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    with pytest.raises(Stage1Cancelled, match="step 3"):
        run_stage1(base, config, texts=TEXTS, should_stop=stop_at_step_3)
    assert find_profile(_pid(base, config)) is None  # nothing half-written in the cache
    resumed = run_stage1(load_base_model("tiny-llama"), config, texts=TEXTS)
    import shutil

    shutil.rmtree(profile_dir(resumed.meta.profile_id))
    straight = run_stage1(load_base_model("tiny-llama"), config, texts=TEXTS)
    assert resumed.meta.importance == straight.meta.importance
    assert [p.step for p in resumed.meta.curve] == list(range(1, 7))
    for key, tensor in straight.harmonizers.items():
        torch.testing.assert_close(resumed.harmonizers[key], tensor, rtol=0, atol=0)


def _pid(base: object, config: object) -> str:
    from model_owner_server.emulators.profile import corpus_tag, profile_id

    return profile_id(base.weights_sha256, config, corpus_tag(TEXTS))  # type: ignore[attr-defined,arg-type]


def test_logit_kd_term_trains_toward_the_full_models_predictions() -> None:
    from model_owner_server.emulators.profile import Stage1Config, profile_id
    from model_owner_server.emulators.stage1 import MixedNetwork, Targets, new_harmonizers

    # off (the default) leaves the ids of profiles made before the term existed (pinned from that code)
    assert profile_id("ab" * 32, Stage1Config()) == "prof-99b5811946787ffdac5d"
    assert profile_id("ab" * 32, Stage1Config(logit_kd_weight=1.0)) != "prof-99b5811946787ffdac5d"

    base, plain = tiny_profile(steps=3)
    _, with_kl = tiny_profile(steps=3, logit_kd_weight=1.0)
    assert with_kl.meta.profile_id != plain.meta.profile_id
    assert with_kl.meta.curve[0].loss > plain.meta.curve[0].loss  # the KL term is in the loss
    assert any(not torch.equal(t, plain.harmonizers[k]) for k, t in with_kl.harmonizers.items())

    # the term is KL(full || mixed): zero when nothing is replaced, positive when blocks are
    config = tiny_config(logit_kd_weight=1.0)
    harmonizers = {int(k.split(".")[0]) for k in with_kl.harmonizers}
    net = MixedNetwork(base, config, new_harmonizers(base, config, sorted(harmonizers)))
    try:
        batch = torch.randint(0, 64, (2, 16))
        targets = net.original_outputs(batch)
        assert isinstance(targets, Targets) and targets.log_probs is not None
        with torch.no_grad():
            same = net.loss(batch, set(), targets)
            replaced = net.loss(batch, set(sorted(harmonizers)[:2]), targets)
        assert abs(float(same["loss"] - same["ce"] - config.kd_weight * same["nmse"])) < 1e-4
        assert float(replaced["loss"] - replaced["ce"] - config.kd_weight * replaced["nmse"]) > 1e-4
    finally:
        net.restore()
