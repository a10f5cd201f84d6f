"""Box supervision targets for the tiny tower's pretraining, computed by hand on a 2x2 grid."""
import pytest

from align.pretrain import box_targets
from reward.files import InputError

COCO = {
    "images": [{"id": 1, "width": 64, "height": 64}],
    "categories": [{"id": 7, "name": "star"}, {"id": 9, "name": "moon"}],
    "annotations": [
        # covers all of the top-left 32x32 patch and a 12x32 strip (37.5 %) of the top-right one
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 44, 32], "colour": "red"},
        # covers 20x20 = 39 % of the bottom-right patch, and 4x20 (8 %, below a quarter) of bottom-left
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [28, 40, 24, 20], "colour": "blue"},
    ],
}


@pytest.mark.unit
def test_patches_take_the_object_covering_at_least_a_quarter():
    kinds, cols, present = box_targets(COCO, 2, ["blue", "red"], "colour", "x.json")
    # patch order: top-left, top-right, bottom-left, bottom-right; 0 = background, k + 1 = category k
    assert kinds[1] == [1, 1, 0, 2]
    assert cols[1] == [2, 2, 0, 1]          # colour ids: blue 1, red 2
    assert present[1] == [1.0, 1.0]


@pytest.mark.unit
def test_annotation_on_unknown_image_is_named():
    bad = dict(COCO, annotations=[{"id": 5, "image_id": 2, "category_id": 7, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(InputError, match="annotation 5"):
        box_targets(bad, 2, [], "colour", "x.json")
