import pytest
from PIL import Image

from parkclf.images import ImageError, load_image

from hostile import cases, exif_oriented

CASES = cases()


@pytest.mark.parametrize("name,data,filename,expected", CASES, ids=[c[0] for c in CASES])
def test_every_hostile_input_is_read_or_cleanly_refused(name, data, filename, expected, tmp_path):
    path = tmp_path / filename
    path.write_bytes(data)
    if expected == "refuse":
        with pytest.raises(ImageError) as e:
            load_image(path)
        assert "Traceback" not in str(e.value) and len(str(e.value)) > 10
    else:
        img = load_image(path, draft_size=224)
        assert img.mode == "RGB" and img.width >= 1 and img.height >= 1


def test_suite_has_at_least_25_kinds():
    assert len({c[0] for c in CASES}) >= 25


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    img = load_image(exif_oriented(orientation))
    assert img.size == ((32, 64) if orientation >= 5 else (64, 32))


def test_alpha_is_composited_on_white_not_black():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert load_image(_bytes(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_is_scaled_not_clipped():
    deep = Image.new("I;16", (4, 4), 32768)
    r, g, b = load_image(_bytes(deep, "PNG")).getpixel((0, 0))
    assert 120 <= r <= 135 and r == g == b


def test_draft_decoding_keeps_the_requested_side():
    big = Image.new("RGB", (4032, 3024), (10, 120, 200))
    img = load_image(_bytes(big, "JPEG"), draft_size=224)
    assert min(img.size) >= 224 and img.size == (504, 378)  # 1/8 scale, the smallest that keeps 224


def test_bytes_paths_and_pil_images_give_the_same_pixels(tmp_path):
    data = exif_oriented(6)
    (tmp_path / "x.jpg").write_bytes(data)
    a, b = load_image(data), load_image(tmp_path / "x.jpg")
    assert a.tobytes() == b.tobytes()


def _bytes(img, fmt):
    import io

    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()
