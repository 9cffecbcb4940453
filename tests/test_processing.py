"""The one preprocessing definition: what part of a photo the model sees, at what size, in training and serving."""

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor, BitImageProcessor, ConvNextImageProcessor, ViTImageProcessor

from parkclf.errors import UsageError
from parkclf.processing import Preprocessor, draft_size, image_size, resize_size, visible_box
from parkclf.training.surgery import preprocessor, set_center_crop


def framed(size=(64, 48), inner=0.5):
    """Red photo with a blue middle covering ``inner`` of each side."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (220, 30, 30)
    top, left = round(h * (1 - inner) / 2), round(w * (1 - inner) / 2)
    arr[top:h - top, left:w - left] = (30, 30, 220)
    return Image.fromarray(arr)


def red_share(x):
    """Share of red pixels (in normalised channels) of one image's pixel_values."""
    return float((x[0, 0] > x[0, 2]).mean())


VIT = ViTImageProcessor(size={"height": 32, "width": 32})


def test_a_center_crop_processor_shows_the_model_only_the_middle_of_the_photo():
    crop = preprocessor(set_center_crop(VIT, 0.5))
    vit = preprocessor(VIT)
    assert image_size(crop) == (32, 32) and resize_size(crop) == (64, 64)
    assert draft_size(crop) == 96 and draft_size(vit) == 48  # JPEG drafts keep 1.5x the resize side
    photo = framed()
    assert visible_box(crop, *photo.size) == (16, 12, 48, 36) and visible_box(vit, *photo.size) == (0, 0, 64, 48)
    assert red_share(vit([photo])) > 0.5
    assert red_share(crop([photo])) < 0.05


def test_training_crops_are_only_normalised_not_resized_or_cropped_again():
    crop = preprocessor(set_center_crop(VIT, 0.5))
    already = framed((32, 32), inner=0.5)  # what RandomResizedCrop hands over: the model's input size
    np.testing.assert_allclose(crop([already], augmented=True), preprocessor(VIT)([already]), atol=1e-6)
    assert red_share(crop([already], augmented=True)) > 0.5  # the red frame survives


def test_visible_box_of_a_shortest_edge_processor_like_dinov2s():
    bit = preprocessor(BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}))
    assert image_size(bit) == (224, 224)
    left, top, right, bottom = visible_box(bit, 400, 300)
    assert (right - left, bottom - top) == pytest.approx((262.5, 262.5))
    assert (left + right) / 2 == 200 and (top + bottom) / 2 == 150


def test_center_crop_out_of_range_or_on_a_shortest_edge_processor_names_the_fix():
    with pytest.raises(UsageError, match="between 0.5 and 1"):
        set_center_crop(VIT, 1.5)
    with pytest.raises(UsageError, match="Leave --center-crop out"):
        set_center_crop(BitImageProcessor(size={"shortest_edge": 256}), 0.8)


PROCESSORS = {
    "vit": VIT,
    "deit-crop": set_center_crop(ViTImageProcessor(size={"height": 56, "width": 56}), 0.8),
    "dinov2-shortest-edge": BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                              image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
    "convnext-crop-pct": ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.875),
}


@pytest.mark.parametrize("name", PROCESSORS)
def test_the_same_pixels_as_transformers_pil_image_processors(name, tmp_path):
    """Served without transformers, the checkpoint still sees exactly what transformers' own (PIL-backend)
    processor of the saved config gives, for odd sizes, portrait, landscape and photos smaller than the crop."""
    PROCESSORS[name].save_pretrained(tmp_path)
    reference = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    ours = Preprocessor.from_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    for w, h in [(97, 61), (61, 97), (640, 480), (20, 13), (32, 32)]:
        photo = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = reference(images=[photo], return_tensors="np")["pixel_values"]
        got = ours([photo])
        assert got.dtype == np.float32 and got.shape == expected.shape, (name, w, h)
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} at {w}x{h}")


def test_a_processor_that_pads_is_refused_with_the_reason():
    with pytest.raises(UsageError, match="pads images"):
        Preprocessor.from_dict({"size": {"height": 32, "width": 32}, "do_pad": True})
    with pytest.raises(UsageError, match="height"):
        Preprocessor.from_dict({"size": {"longest_edge": 32}})
