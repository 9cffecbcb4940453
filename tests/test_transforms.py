"""The one preprocessing definition: what part of a photo the model sees, at what size, in training and serving."""

import numpy as np
import pytest
from PIL import Image
from transformers import BitImageProcessor, ViTImageProcessor

from parkclf.training import set_center_crop
from parkclf.transforms import draft_size, image_size, pixel_values, resize_size, visible_box


def framed(size=(64, 48), inner=0.5):
    """Red photo with a blue middle covering ``inner`` of each side."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (220, 30, 30)
    t, l = round(h * (1 - inner) / 2), round(w * (1 - inner) / 2)
    arr[t:h - t, l:w - l] = (30, 30, 220)
    return Image.fromarray(arr)


def red_share(x):
    """Share of red pixels (in normalised channels) of one image's pixel_values."""
    return (x[0, 0] > x[0, 2]).float().mean().item()


def test_a_center_crop_processor_shows_the_model_only_the_middle_of_the_photo():
    vit = ViTImageProcessor(size={"height": 32, "width": 32})
    crop = set_center_crop(vit, 0.5)
    assert image_size(crop) == (32, 32) and resize_size(crop) == (64, 64)
    assert draft_size(crop) == 96 and draft_size(vit) == 48  # JPEG drafts keep 1.5x the resize side
    photo = framed()
    assert visible_box(crop, *photo.size) == (16, 12, 48, 36) and visible_box(vit, *photo.size) == (0, 0, 64, 48)
    assert red_share(pixel_values([photo], vit)) > 0.5
    assert red_share(pixel_values([photo], crop)) < 0.05


def test_training_crops_are_only_normalised_not_resized_or_cropped_again():
    vit = ViTImageProcessor(size={"height": 32, "width": 32})
    crop = set_center_crop(vit, 0.5)
    already = framed((32, 32), inner=0.5)  # what RandomResizedCrop hands over: the model's input size
    np.testing.assert_allclose(pixel_values([already], crop, augmented=True), pixel_values([already], vit), atol=1e-6)
    assert red_share(pixel_values([already], crop, augmented=True)) > 0.5  # the red frame survives


def test_visible_box_of_a_shortest_edge_processor_like_dinov2s():
    bit = BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224})
    assert image_size(bit) == (224, 224)
    left, top, right, bottom = visible_box(bit, 400, 300)
    assert (right - left, bottom - top) == pytest.approx((262.5, 262.5))
    assert (left + right) / 2 == 200 and (top + bottom) / 2 == 150


def test_center_crop_out_of_range_or_on_a_shortest_edge_processor_names_the_fix():
    with pytest.raises(SystemExit, match="between 0.5 and 1"):
        set_center_crop(ViTImageProcessor(size={"height": 32, "width": 32}), 1.5)
    with pytest.raises(SystemExit, match="Leave --center-crop out"):
        set_center_crop(BitImageProcessor(size={"shortest_edge": 256}), 0.8)
