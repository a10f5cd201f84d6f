"""PPO arithmetic on hand-made tensors. Every expected value is worked out by hand in the comments."""
import math

import pytest
import torch

from align.ppo import batch_indices, response_mask, select_rows
from align.ppo_math import (KLController, gae, kl_per_token, masked_mean, masked_whiten, policy_loss,
                            token_rewards, value_loss)

pytestmark = pytest.mark.unit


def close(actual, expected, tol=1e-5):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=tol), (actual, expected)


def test_masked_mean_ignores_padding():
    # (1 + 3) / 2 = 2; the 100 is padding
    close(masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])), 2.0)


def test_whitening_uses_unbiased_variance_over_unmasked_entries():
    x = torch.tensor([[1.0, 3.0, 5.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 3; squared deviations 4, 0, 4 -> unbiased variance 8 / 2 = 4 -> std 2
    close(masked_whiten(x, mask), [[-1.0, 0.0, 1.0, 0.0]])
    # shift_mean=False adds the mean back: rewards keep their average sign
    close(masked_whiten(x, mask, shift_mean=False), [[2.0, 3.0, 4.0, 0.0]])


def test_whitening_refuses_a_single_value():
    with pytest.raises(ValueError, match="at least two"):
        masked_whiten(torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 0]]))


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    # log ratio 0.5: k1 = 0.5, k2 = 0.5^2 / 2 = 0.125, k3 = e^-0.5 - 1 + 0.5 = 0.60653 - 0.5 = 0.10653
    close(kl_per_token(logp, ref, "k1"), [0.5])
    close(kl_per_token(logp, ref, "k2"), [0.125])
    close(kl_per_token(logp, ref, "k3"), [math.exp(-0.5) - 0.5])
    with pytest.raises(ValueError):
        kl_per_token(logp, ref, "k4")


def test_token_rewards_put_the_score_on_the_last_response_token():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # row 0: -0.5 * [0.1, 0.2, 0.3] with +2 on the third token; row 1: one token, -0.2 - 1, padding 0
    close(token_rewards(scores, kl, mask, kl_coef=0.5), [[-0.05, -0.1, 1.85], [-1.2, 0.0, 0.0]])


def test_gae_by_hand():
    rewards = torch.tensor([[0.5, 1.0, 7.0]])
    values = torch.tensor([[0.2, 0.4, 0.9]])
    mask = torch.tensor([[1, 1, 0]])      # the third position is padding: its reward and value are ignored
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=1: delta = 1.0 + 0.9 * 0 - 0.4 = 0.6;  A1 = 0.6
    # t=0: delta = 0.5 + 0.9 * 0.4 - 0.2 = 0.66;  A0 = 0.66 + 0.9 * 0.5 * 0.6 = 0.93
    close(advantages, [[0.93, 0.6, 0.0]])
    close(returns, [[1.13, 1.0, 0.0]])       # A + V


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    advantages, _ = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    # reward-to-go 6, 5, 3 minus 0.5 each
    close(advantages, [[5.5, 4.5, 2.5]])


def test_policy_loss_clips_by_hand():
    logp_new = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    logp_old = torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 2.0])
    loss, stats = policy_loss(logp_new, logp_old, adv, torch.ones(3), cliprange=0.2)
    # token 0: r=1.5, A=1:  -1.5 vs -1.2 (clipped)  -> -1.2, clipped
    # token 1: r=0.5, A=-1:  0.5 vs  0.8 (clipped)  ->  0.8, clipped
    # token 2: r=1.1, A=2:  -2.2 vs -2.2            -> -2.2
    close(loss, (-1.2 + 0.8 - 2.2) / 3)
    close(stats["clipfrac"], 2 / 3)
    # approx KL = 0.5 * mean(log r ^ 2) = 0.5 * (0.164402 + 0.480453 + 0.009085) / 3
    close(stats["approxkl"], 0.5 * (0.164402 + 0.480453 + 0.009085) / 3)


def test_policy_loss_gradient_raises_the_probability_of_positive_advantage_tokens():
    logp = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2), cliprange=0.2)
    loss.backward()
    # d/dlogp of -A * exp(logp - old) at ratio 1 = -A / 2 (mean over two tokens)
    close(logp.grad, [-0.5, 0.5])


def test_policy_loss_ignores_masked_tokens():
    loss, _ = policy_loss(torch.tensor([0.0, 5.0]), torch.zeros(2), torch.tensor([1.0, 100.0]),
                          torch.tensor([1, 0]), cliprange=0.2)
    close(loss, -1.0)


def test_value_loss_clips_by_hand():
    values = torch.tensor([1.0, 0.0])
    old = torch.tensor([0.5, 0.5])
    returns = torch.tensor([2.0, 0.0])
    loss, stats = value_loss(values, old, returns, torch.ones(2), cliprange_value=0.2)
    # pos 0: clipped value 0.7; (1 - 2)^2 = 1 vs (0.7 - 2)^2 = 1.69 -> 1.69
    # pos 1: clipped value 0.3; (0 - 0)^2 = 0 vs 0.09 -> 0.09;  0.5 * (1.69 + 0.09) / 2 = 0.445
    close(loss, 0.445)
    close(stats["clipfrac"], 1.0)


def test_adaptive_kl_controller():
    ctl = KLController(0.1, target=6.0, horizon=1000)
    ctl.update(9.0, n_samples=100)     # error min(9/6 - 1, 0.2) = 0.2 -> x (1 + 0.2 * 0.1) = 0.102
    close(ctl.value, 0.102)
    ctl.update(5.4, n_samples=100)     # error -0.1 -> x 0.99 = 0.10098
    close(ctl.value, 0.10098)
    fixed = KLController(0.1)
    fixed.update(100.0, n_samples=100)
    close(fixed.value, 0.1)
    restored = KLController(1.0)
    restored.load_state_dict(ctl.state_dict())
    close(restored.value, 0.10098)


def test_response_mask_keeps_the_stop_token_and_drops_what_follows():
    responses = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    close(response_mask(responses, [2]), [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


def test_batch_indices_walk_through_shuffled_epochs():
    steps = [batch_indices(5, s, 3, seed=0) for s in range(5)]
    flat = [i for s in steps for i in s]
    assert all(len(s) == 3 for s in steps)
    # 15 draws over 5 rows = 3 epochs, each a permutation of the rows
    for epoch in range(3):
        assert sorted(flat[epoch * 5:(epoch + 1) * 5]) == [0, 1, 2, 3, 4]
    assert batch_indices(5, 3, 3, seed=0) == steps[3]                  # a step's rows depend on nothing else
    assert flat[:5] != flat[5:10] or flat[5:10] != flat[10:15]          # epochs are reshuffled


def test_select_rows_splits_flattened_patches_per_image():
    # Qwen2-VL layout: pixel_values (patches, dim) for all images; image_grid_thw gives 2, 3, 5 patches
    pixel_values = torch.arange(10).float().unsqueeze(1)
    inputs = {"input_ids": torch.tensor([[1], [2], [3]]), "pixel_values": pixel_values,
              "image_grid_thw": torch.tensor([[1, 1, 2], [1, 1, 3], [1, 1, 5]])}
    out = select_rows(inputs, torch.tensor([2, 0]))
    close(out["input_ids"], [[3], [1]])
    close(out["pixel_values"].squeeze(1), [5, 6, 7, 8, 9, 0, 1])
    close(out["image_grid_thw"], [[1, 1, 5], [1, 1, 2]])
    # LLaVA layout: one pixel tensor per row
    llava = select_rows({"pixel_values": torch.arange(3).float()}, torch.tensor([1]))
    close(llava["pixel_values"], [1.0])
