"""halign's DPO loss math on hand-made tensors, against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from align.dpo_losses import (anchor_loss, conditional_image_loss, diff_segments, masked_mean, sigmoid_loss,
                              token_weights, weighted_sequence_logps)
from align.dpo_variants import check_loss_types, mdpo_crop, ref_columns_for
from reward.files import InputError

pytestmark = pytest.mark.unit


def softplus(x: float) -> float:   # -log sigmoid(-x) = log(1 + e^x), by hand
    return math.log(1.0 + math.exp(x))


def test_sigmoid_is_dpo():
    # beta 0.1, log-ratios chosen +2, rejected -3: -log s(0.1 * 5) = log(1 + e^-0.5)
    got = sigmoid_loss(0.1, torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 0.0]))
    assert got.tolist() == pytest.approx([softplus(-0.5), math.log(2.0)], rel=1e-6)


def test_conditional_preference_compares_real_and_corrupted_image():
    # the chosen text gains 1.5 nats over the reference with the real image and loses 0.5 with the corrupted
    # one: -log s(0.5 * (1.5 - (-0.5))) = log(1 + e^-1)
    got = conditional_image_loss(0.5, torch.tensor([1.5]), torch.tensor([-0.5]))
    assert got.item() == pytest.approx(softplus(-1.0), rel=1e-6)
    # the corrupted image explaining the text better is penalised more than the real one
    worse = conditional_image_loss(0.5, torch.tensor([-0.5]), torch.tensor([1.5]))
    assert worse.item() == pytest.approx(softplus(1.0), rel=1e-6)


def test_anchor_pushes_the_chosen_reward_above_delta():
    # beta 0.2, chosen log-ratio -1 (below the reference), delta 0.3: -log s(-0.2 - 0.3) = log(1 + e^0.5)
    assert anchor_loss(0.2, torch.tensor([-1.0]), 0.3).item() == pytest.approx(softplus(0.5), rel=1e-6)
    assert anchor_loss(0.2, torch.tensor([0.0])).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_dense_weighted_log_prob_is_rlhfv_mean():
    # tokens: unchanged -1, corrected -2 (gamma 5), unchanged -3, padding: (-1 - 5*2 - 3) / (1 + 5 + 1) = -2
    logps = torch.tensor([[-1.0, -2.0, -3.0, -9.0]])
    weights = torch.tensor([[1.0, 5.0, 1.0, 0.0]])
    assert weighted_sequence_logps(logps, weights).item() == pytest.approx(-2.0)
    # gamma 1 is the plain per-token mean over the completion: (-1 - 2 - 3) / 3
    assert weighted_sequence_logps(logps, torch.tensor([[1.0, 1.0, 1.0, 0.0]])).item() == pytest.approx(-2.0)
    assert weighted_sequence_logps(torch.tensor([[-1.0, -4.0]]), torch.tensor([[1.0, 2.0]])).item() == \
        pytest.approx(-3.0)


def test_sft_rows_weighs_every_chosen_response_the_same():
    # a caption of three tokens (-1, -3, -5) and a one-token answer (-4, then padding): per row 3 and 4,
    # their mean 3.5, where TRL's token mean gives the caption three votes: (1 + 3 + 5 + 4) / 4 = 3.25
    # (sft_rows is -weighted_sequence_logps with the completion mask as the weights, then the mean)
    logps = torch.tensor([[-1.0, -3.0, -5.0], [-4.0, -7.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert (-weighted_sequence_logps(logps, mask)).tolist() == pytest.approx([3.0, 4.0])
    assert (-weighted_sequence_logps(logps, mask)).mean().item() == pytest.approx(3.5)
    # a row without completion tokens counts 0, not NaN
    assert (-weighted_sequence_logps(logps, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))).tolist() == \
        pytest.approx([0.0, 4.0])


def test_masked_mean_skips_pairs_without_the_term_and_stays_differentiable():
    x = torch.tensor([1.0, 3.0, 10.0], requires_grad=True)
    assert masked_mean(x, torch.tensor([True, True, False])).item() == pytest.approx(2.0)
    zero = masked_mean(x, torch.tensor([False, False, False]))
    zero.backward()
    assert zero.item() == 0.0 and x.grad.tolist() == [0.0, 0.0, 0.0]


def test_diff_segments_marks_the_edited_words():
    chosen, rejected = "There is a red circle.", "There is a red circle and a yellow heart."
    c, r = diff_segments(chosen, rejected)
    assert c == []
    assert [rejected[s:e] for s, e in r] == ["and a yellow heart"]
    c, r = diff_segments("A blue square and a green triangle.", "A blue square and a green star.")
    assert [("A blue square and a green triangle."[s:e]) for s, e in c] == ["triangle"]
    assert [("A blue square and a green star."[s:e]) for s, e in r] == ["star"]


def test_token_weights_overlap_segments_shifted_by_the_text_start():
    # rendered completion "\nabc def ghi" with the message text starting at 1; segment "def" = [4, 7) of the text
    offsets = [(0, 1), (1, 4), (4, 8), (8, 12)]
    assert token_weights(offsets, 1, [[4, 7]], 5.0) == [1.0, 1.0, 5.0, 1.0]
    assert token_weights(offsets, 1, [], 5.0) == [1.0, 1.0, 1.0, 1.0]


def test_loss_type_checks_name_the_problem():
    check_loss_types(["sigmoid", "mdpo_conditional", "mdpo_anchor", "sft"])
    check_loss_types(["sigmoid", "sft_rows"])
    check_loss_types(["ipo"])
    with pytest.raises(InputError, match="unknown loss_type 'mdpo'"):
        check_loss_types(["sigmoid", "mdpo"])
    with pytest.raises(InputError, match="'ipo' cannot be combined"):
        check_loss_types(["ipo", "dense"])
    assert ref_columns_for(["sigmoid", "dense"]) == ["ref_chosen_logps", "ref_rejected_logps",
                                                     "ref_chosen_dense_logps", "ref_rejected_dense_logps"]


def test_mdpo_crop_keeps_size_and_is_deterministic():
    from PIL import Image

    image = Image.new("RGB", (40, 56))
    image.paste((255, 0, 0), (0, 0, 20, 28))
    a, b = mdpo_crop(image, "key"), mdpo_crop(image, "key")
    assert a.size == image.size and a.tobytes() == b.tobytes()


def test_image_pairs_under_a_loss_that_cannot_read_them_are_flagged(tmp_path, capsys):
    """`image`-strategy pairs differ only in the rejected image, which only mdpo_conditional reads: under TRL's
    losses both sides are the same text on the same image, so `halign dpo` says so (naming the file)."""
    from types import SimpleNamespace

    from align.dpo import load_dpo_dataset
    from tests.tiny_data import write_images_and_annotations, write_pairs

    write_images_and_annotations(tmp_path)
    pairs = write_pairs(tmp_path, strategies=("inject", "image"))
    capsys.readouterr()
    cfg = lambda loss: SimpleNamespace(dataset=str(pairs), images_dir=str(tmp_path), max_samples=None,  # noqa: E731
                                       loss_type=loss, check_image_tokens=False, max_length=None)
    ds = load_dpo_dataset(cfg(["sigmoid", "sft"]), processor=None)
    n_image = sum(1 for line in pairs.read_text().splitlines() if '"strategy": "image"' in line)
    assert n_image > 0
    err = capsys.readouterr().err
    assert f"{pairs}: {n_image} of {len(ds)} pairs are `image`-strategy pairs" in err
    assert "add mdpo_conditional (mDPO) to loss_type" in err
    load_dpo_dataset(cfg(["sigmoid", "mdpo_conditional", "mdpo_anchor"]), processor=None)
    assert "warning" not in capsys.readouterr().err
    write_pairs(tmp_path, strategies=("inject",))          # no image pairs: nothing to say
    capsys.readouterr()
    load_dpo_dataset(cfg(["sigmoid", "sft"]), processor=None)
    assert "warning" not in capsys.readouterr().err
