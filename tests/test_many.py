"""The zip reader the Many-photos and Teach-it tabs share: caps hold whatever a zip's headers claim, and a zip made
to escape its folder is refused whole."""

import io
import zipfile

import pytest

from parkclf.app import many

from conftest import make_photo


def jpeg(seed=0) -> bytes:
    buf = io.BytesIO()
    make_photo((200, 40, 40), seed=seed).save(buf, "JPEG")
    return buf.getvalue()


def write_zip(path, entries: dict) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return str(path)


@pytest.mark.parametrize("entry", ["../evil.jpg", "red/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg",
                                   "..\\evil.jpg"])
def test_a_zip_with_an_entry_outside_its_folder_is_refused_whole(tmp_path, entry):
    path = write_zip(tmp_path / "photos.zip", {"red/a.jpg": jpeg(), entry: jpeg(1)})
    with pytest.raises(many.TooMuch, match=r"photos.zip holds an entry outside its folders .*no '\.\.' or absolute"):
        many.expand([path], ["photos.zip"], many.ManyLimits())


def test_names_that_only_look_like_climbing_are_fine():
    assert not any(many.unsafe_entry(n) for n in ["red/a..b.jpg", "..red/a.jpg", "red/.../a.jpg", "ab:c/d.jpg"])


def test_a_zip_bomb_is_stopped_at_the_bytes_cap_not_at_its_header(tmp_path):
    """64 MB of zeros squeeze into 64 KB: the reader stops at the cap + 1 byte, whatever the entry claims."""
    zeros = b"\0" * (64 * 2**20)
    path = write_zip(tmp_path / "bomb.zip", {"red/a.jpg": jpeg(), "red/bomb.jpg": zeros, "red/b.jpg": jpeg(1)})
    assert (tmp_path / "bomb.zip").stat().st_size < 2**20
    items = many.expand([path], ["bomb.zip"], many.ManyLimits())
    assert [i.error for i in items] == ["", "The file is over 50 MB.", ""]
    assert [i.entry for i in items] == ["red/a.jpg", "red/bomb.jpg", "red/b.jpg"]
    with pytest.raises(many.TooMuch, match="more than 8 MB of photos; send fewer"):
        many.expand([path], ["bomb.zip"], many.ManyLimits(zip_bytes=8 * 2**20))


def test_a_zip_listing_too_many_entries_is_refused_before_any_is_read(tmp_path):
    path = write_zip(tmp_path / "many.zip", {f"red/{i}.jpg": b"x" for i in range(30)})
    with pytest.raises(many.TooMuch, match="many.zip lists 30 entries; a zip may hold at most 20"):
        many.expand([path], ["many.zip"], many.ManyLimits(zip_entries=20))


def test_litter_and_non_images_in_a_zip(tmp_path):
    path = write_zip(tmp_path / "p.zip", {"__MACOSX/red/._a.jpg": b"x", "red/.DS_Store": b"x", "red/notes.txt": b"x",
                                          "red/a.jpg": jpeg()})
    items = many.expand([path], ["p.zip"], many.ManyLimits())
    assert [(i.entry, i.error) for i in items] == [("red/notes.txt", "Not an image file (skipped)."),
                                                   ("red/a.jpg", "")]
