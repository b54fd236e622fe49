"""Soul ID photo checks (apps/characters/photo_checks.py) on photos derived from a real portrait.

The photos come from fixtures/photos/make_photos.py (generated here, from the committed astronaut.png).
Pure tests: no database, no services.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import ExifTags, Image

from apps.characters.photo_checks import (
    REASON_MESSAGES,
    PhotoRules,
    Reason,
    check_photo,
    check_photo_set,
    hash_distance,
    reason_message,
)

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("make_photos", ROOT / "fixtures" / "photos" / "make_photos.py")
make_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_photos)

ACCEPTED = make_photos.accepted_photos()
REJECTED = make_photos.rejected_photos()


@functools.cache
def verdict(name: str):
    return check_photo(ACCEPTED[name])


@functools.cache
def shot_verdicts() -> tuple:
    return tuple(check_photo(data, outputs=False) for data in make_photos.distinct_shots())


def _jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG's header segments, up to the start of the scan."""
    assert data[:2] == b"\xff\xd8"
    markers, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        markers.append(marker)
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return markers


def _assert_no_metadata(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert len(image.getexif()) == 0
        assert not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert not {"exif", "icc_profile", "xmp", "comment", "photoshop"} & set(image.info)
    # Only JFIF's APP0 among the application segments, and no comment segment
    markers = _jpeg_segments(data)
    assert [m for m in markers if 0xE0 <= m <= 0xEF or m == 0xFE] == [0xE0]
    for needle in (b"Exif\x00\x00", make_photos.MAKER_NOTE, b"iPhone", b"Apple", b"secret", b"xmpmeta"):
        assert needle not in data


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


# --- Accepted photos ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_variants_of_the_portrait_are_accepted(name):
    result = verdict(name)

    assert result.accepted, result
    assert result.reasons == []
    assert result.face_count == 1
    with Image.open(io.BytesIO(ACCEPTED[name])) as original:
        assert (result.width, result.height) in (original.size, original.size[::-1])
    box = result.face_box
    assert box.x >= 0 and box.x + box.width <= result.width
    assert box.y >= 0 and box.y + box.height <= result.height
    assert result.face_fraction >= 0.10
    assert result.sharpness >= 0.10
    assert 45 <= result.brightness <= 210
    assert len(result.face_hash) == len(result.face_hash_mirrored) == 16

    # The clean photo: upright, at most 2048 px on its long side, same aspect ratio
    with Image.open(io.BytesIO(result.clean_jpeg)) as clean:
        assert clean.format == "JPEG" and clean.mode == "RGB"
        assert clean.size == result.clean_size
        assert max(clean.size) <= 2048
        assert abs(clean.width / clean.height - result.width / result.height) < 0.01

    # The training crop: square, 512 px, and the face is in its middle (checked by checking the crop)
    with Image.open(io.BytesIO(result.face_crop_jpeg)) as crop:
        assert crop.size == (512, 512)
    assert result.crop_box.width == result.crop_box.height
    crop_result = check_photo(result.face_crop_jpeg, outputs=False)
    assert crop_result.accepted, crop_result
    centre_x = crop_result.face_box.x + crop_result.face_box.width / 2
    centre_y = crop_result.face_box.y + crop_result.face_box.height / 2
    assert abs(centre_x - 256) < 40 and abs(centre_y - 256) < 40


def test_face_is_found_where_it_is_in_the_portrait():
    result = verdict("original_png")
    x, y, w, _ = make_photos.ASTRONAUT_FACE
    assert abs(result.face_box.x - x) <= 8 and abs(result.face_box.y - y) <= 8
    assert abs(result.face_box.width - w) <= 10
    assert result.face_box.width == result.face_box.height


@pytest.mark.parametrize("megapixels", [1, 3, 6, 12])
def test_large_photos_are_scaled_down_to_at_most_2048_px(megapixels):
    result = verdict(f"{megapixels}mp_jpeg")
    width = {1: 1152, 3: 2000, 6: 2832, 12: 4000}[megapixels]
    assert (result.width, result.height) == (width, width * 3 // 4)
    long_side = max(result.clean_size)
    if width <= 2048:
        assert long_side == width
    else:
        assert 1536 <= long_side <= 2048
    # The face box is reported in the original's pixels whatever size was analysed
    assert result.face_fraction == pytest.approx(verdict("1mp_jpeg").face_fraction, abs=0.02)
    assert result.face_box.width / width == pytest.approx(verdict("1mp_jpeg").face_box.width / 1152, rel=0.08)


# --- Rejected photos ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_each_reject_gets_exactly_its_reason(name):
    data, reason = REJECTED[name]

    result = check_photo(data)

    assert result.accepted is False
    assert result.reasons == [reason]
    assert result.clean_jpeg is None and result.face_crop_jpeg is None


def test_measurements_explain_the_rejections():
    def check(name):
        return check_photo(REJECTED[name][0])

    assert check("blurry").sharpness < 0.10 < verdict("original_png").sharpness
    assert check("dark").brightness < 45
    overexposed = check("overexposed")
    assert overexposed.brightness > 210 or overexposed.clipped > 0.25
    tiny = check("tiny_face")
    assert tiny.face_fraction < 0.10 and tiny.face_box.width < 80
    assert check("two_faces").face_count == 2
    assert check("no_face").face_count == 0
    cut = check("face_cut_off")
    assert cut.face_box.x < 0.2 * cut.face_box.width


def test_a_badge_the_cascades_take_for_a_face_is_not_a_second_face():
    # Narrowed and tilted, the name badge on the suit scores as a (small, weak) face
    result = check_photo(make_photos.posed_jpeg(0.65, 14), outputs=False)
    assert result.accepted, result
    assert result.face_count == 1


@pytest.mark.parametrize(("second", "reasons"), [(0.45, []), (0.55, [Reason.MULTIPLE_FACES])])
def test_a_second_face_counts_from_half_the_width_of_the_first(second, reasons):
    # The first face is about 72 px where the cascades look, so a second one of half its width is under
    # the 48 px at which the scan for large faces stops: it is found by the scan for smaller ones.
    result = check_photo(make_photos.two_heads_jpeg(second), outputs=False)
    assert result.reasons == reasons
    assert result.face_count == (2 if reasons else 1)


def test_a_completely_dark_photo_without_a_face_says_both():
    data = make_photos.encode(make_photos.scaled_light(make_photos.landscape(), 0.12))
    assert check_photo(data).reasons == [Reason.NO_FACE, Reason.TOO_DARK]


def test_size_limits_come_from_the_rules():
    data = ACCEPTED["cropped_jpeg"]
    assert check_photo(data, rules=PhotoRules(max_bytes=len(data))).accepted
    assert check_photo(data, rules=PhotoRules(max_bytes=len(data) - 1)).reasons == [Reason.TOO_LARGE]
    assert check_photo(data, rules=PhotoRules(max_pixels=640 * 640 - 1)).reasons == [Reason.TOO_LARGE]
    assert check_photo(data, rules=PhotoRules(min_short_side=641)).reasons == [Reason.TOO_SMALL]


def test_face_rules_come_from_the_rules():
    data = ACCEPTED["original_png"]  # face box 96 px, 19% of the short side, sharpness about 0.8
    assert check_photo(data, rules=PhotoRules(min_face_fraction=0.3)).reasons == [Reason.FACE_TOO_SMALL]
    assert check_photo(data, rules=PhotoRules(min_face_side=120)).reasons == [Reason.FACE_TOO_SMALL]
    assert check_photo(data, rules=PhotoRules(min_sharpness=0.95)).reasons == [Reason.BLURRY]
    assert check_photo(data, rules=PhotoRules(min_brightness=170)).reasons == [Reason.TOO_DARK]
    assert check_photo(data, rules=PhotoRules(max_brightness=140)).reasons == [Reason.TOO_BRIGHT]


def test_declared_content_type_must_match_the_bytes():
    data = ACCEPTED["cropped_jpeg"]
    assert check_photo(data, declared_content_type="image/jpeg").accepted
    assert check_photo(data, declared_content_type="image/png").reasons == [Reason.UNSUPPORTED_FORMAT]


def test_an_animated_image_is_refused():
    frames = [make_photos.astronaut(), make_photos.scaled_light(make_photos.astronaut(), 0.8)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    assert check_photo(buffer.getvalue()).reasons == [Reason.UNSUPPORTED_FORMAT]


# --- Metadata and orientation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gps_heic", "gps_jpeg", "rotated_jpeg"])
def test_clean_outputs_carry_no_metadata(name):
    # The input really carries GPS and a maker note
    with Image.open(io.BytesIO(ACCEPTED[name])) as original:
        exif = original.getexif()
        assert dict(exif.get_ifd(ExifTags.IFD.GPSInfo)) == make_photos.GPS
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.MakerNote] == make_photos.MAKER_NOTE

    result = verdict(name)

    assert result.accepted
    _assert_no_metadata(result.clean_jpeg)
    _assert_no_metadata(result.face_crop_jpeg)


@pytest.mark.parametrize(
    ("width", "image_format"),
    [(1024, "JPEG"), (3200, "JPEG"), (1024, "PNG"), (1024, "WEBP"), (1024, "HEIF")],
    ids=["jpeg", "jpeg-reduced-decode", "png", "webp", "heic"],
)
def test_exif_rotated_photo_comes_out_upright(width, image_format):
    data = make_photos.rotated_photo(width, image_format)
    upright = make_photos.upright_reference(width)
    with Image.open(io.BytesIO(data)) as stored:
        if image_format != "HEIF":  # pillow-heif moves the rotation into the container (irot)
            assert stored.size == (width * 3 // 4, width)
            assert stored.getexif()[ExifTags.Base.Orientation] == 6

    result = check_photo(data)

    assert result.accepted, result
    assert (result.width, result.height) == upright.size
    with Image.open(io.BytesIO(result.clean_jpeg)) as clean:
        clean.load()
    assert clean.width > clean.height
    reference = upright.resize(clean.size, Image.Resampling.BILINEAR)
    assert _mean_difference(clean, reference) < 4
    assert _mean_difference(clean, reference.transpose(Image.Transpose.ROTATE_180)) > 20
    # The face is where it is in the upright picture
    expected = check_photo(make_photos.encode(upright), outputs=False).face_box
    assert abs(result.face_box.x - expected.x) <= width * 0.01
    assert abs(result.face_box.y - expected.y) <= width * 0.01


def _sixteen_bit_grey(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)


@pytest.mark.parametrize(
    ("make", "image_format"),
    [
        (lambda image: image.convert("L"), "JPEG"),
        (lambda image: image.convert("CMYK"), "JPEG"),
        (lambda image: image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        (lambda image: image.convert("LA"), "PNG"),
        (_sixteen_bit_grey, "PNG"),
    ],
    ids=["grey-jpeg", "cmyk-jpeg", "palette-png", "grey-alpha-png", "16-bit-png"],
)
def test_other_pixel_modes_are_checked_like_rgb(make, image_format):
    result = check_photo(make_photos.encode(make(make_photos.astronaut()), image_format))

    assert result.accepted, result
    assert result.brightness == pytest.approx(verdict("original_png").brightness, abs=4)
    with Image.open(io.BytesIO(result.clean_jpeg)) as clean:
        assert clean.mode == "RGB" and clean.size == (512, 512)


def test_large_palette_png_is_reduced_after_conversion():
    image = make_photos.upright_reference(3200).convert("P", palette=Image.Palette.ADAPTIVE)
    result = check_photo(make_photos.encode(image, "PNG"))
    assert result.accepted, result
    assert result.clean_size == (1600, 1200)


def test_progressive_12mp_jpeg_is_decoded_reduced():
    result = check_photo(make_photos.encode(make_photos.upright_reference(4000), progressive=True))
    assert result.accepted
    assert result.clean_size == (2000, 1500)  # JPEG's DCT scaling at 1/2


def _count_decodes(monkeypatch) -> list[tuple[str, tuple[int, int]]]:
    """A spy on Pillow's decoders: (format, decoded size) per file actually decoded. pillow-heif decodes
    in `HeifImage.data`; Pillow's own formats in `ImageFile.load` when tiles are left to decode."""
    import pillow_heif.heif
    from PIL import ImageFile

    decodes: list[tuple[str, tuple[int, int]]] = []
    heif_data = pillow_heif.heif.HeifImage.data
    file_load = ImageFile.ImageFile.load

    def data(self):
        decodes.append(("HEIF", self.size))
        return heif_data.fget(self)

    def load(self):
        if self.tile:
            decodes.append((self.format, self.size))
        return file_load(self)

    monkeypatch.setattr(pillow_heif.heif.HeifImage, "data", property(data))
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decodes


def test_heic_is_decoded_once(monkeypatch):
    decodes = _count_decodes(monkeypatch)
    result = check_photo(ACCEPTED["brighter_heic"])
    assert result.accepted, result
    assert [image_format for image_format, _ in decodes] == ["HEIF"]


def test_a_12mp_jpeg_is_decoded_once_at_a_reduced_scale(monkeypatch):
    decodes = _count_decodes(monkeypatch)
    result = check_photo(ACCEPTED["12mp_jpeg"])
    assert result.accepted, result
    assert (result.width, result.height) == (4000, 3000)
    assert decodes == [("JPEG", (2000, 1500))]  # DCT scaling at 1/2, never the full 12 MP


def test_a_truncated_jpeg_is_refused_by_the_reduced_decode_too():
    data = make_photos.encode(make_photos.upright_reference(4000))
    result = check_photo(data[: len(data) // 2])
    assert result.reasons == ["UNREADABLE"]


def test_transparent_png_is_flattened_on_white():
    image = make_photos.astronaut().convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    alpha.paste(0, (0, 448, 512, 512))  # the bottom strip transparent
    image.putalpha(alpha)

    result = check_photo(make_photos.encode(image, "PNG"))

    assert result.accepted
    with Image.open(io.BytesIO(result.clean_jpeg)) as clean:
        bottom = np.asarray(clean)[460:, :, :]
    assert bottom.mean() > 245


# --- Determinism and threads ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["12mp_jpeg", "brighter_heic", "flipped_webp"])
def test_verdicts_are_deterministic(name):
    first = check_photo(ACCEPTED[name])
    second = check_photo(ACCEPTED[name])
    assert first == second
    assert first.clean_jpeg == second.clean_jpeg and first.face_crop_jpeg == second.face_crop_jpeg


def test_rejections_are_deterministic():
    for data, _ in REJECTED.values():
        assert check_photo(data) == check_photo(data)


def test_threads_get_the_same_verdicts_as_one_thread():
    names = ["original_png", "darker_jpeg", "portrait_jpeg", "gamma_png"]
    expected = {name: check_photo(ACCEPTED[name], outputs=False) for name in names}
    results: dict[str, object] = {}

    def work(name: str) -> None:
        results[name] = check_photo(ACCEPTED[name], outputs=False)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


# --- The set --------------------------------------------------------------------------------------


def test_near_identical_photos_are_flagged_as_duplicates_of_the_first():
    # Crops, flips, light changes, re-encodes, sizes and formats of one shot
    names = ["original_png", "cropped_jpeg", "flipped_webp", "darker_jpeg", "brighter_heic", "12mp_jpeg"]
    verdicts = [verdict(name) for name in names]

    result = check_photo_set(verdicts)

    assert result.usable == [0]
    assert result.duplicates == {i: 0 for i in range(1, len(names))}
    assert result.photo_reasons == [[]] + [["DUPLICATE"]] * (len(names) - 1)
    assert result.reasons == ["NOT_ENOUGH_PHOTOS"] and result.ready is False


def test_ten_distinct_photos_are_ready():
    shots = shot_verdicts()
    assert all(v.accepted for v in shots)

    result = check_photo_set(shots[:10])

    assert result.ready is True
    assert result.reasons == []
    assert result.usable == list(range(10))
    assert result.duplicates == {}
    assert result.photo_reasons == [[]] * 10


def test_distinct_photos_are_far_apart_and_copies_are_close():
    shots = shot_verdicts()
    for i, a in enumerate(shots):
        for b in shots[i + 1 :]:
            assert hash_distance(a.face_hash, b.face_hash) > 8
    original = verdict("original_png")
    flipped = verdict("flipped_webp")
    assert hash_distance(original.face_hash, verdict("cropped_jpeg").face_hash) <= 8
    assert hash_distance(original.face_hash, flipped.face_hash) > 8  # a mirror image differs...
    assert hash_distance(original.face_hash, flipped.face_hash_mirrored) <= 8  # ...until mirrored back


def test_nine_distinct_photos_are_not_enough_and_a_duplicate_does_not_count():
    shots = list(shot_verdicts()[:9])
    copy = check_photo(
        make_photos.encode(make_photos.scaled_light(make_photos.astronaut(), 0.8)), outputs=False
    )

    result = check_photo_set([*shots, copy])

    assert result.ready is False
    assert result.reasons == ["NOT_ENOUGH_PHOTOS"]
    assert result.usable == list(range(9))
    assert result.duplicates == {9: 0}  # the first shot is the unchanged portrait
    assert result.photo_reasons[9] == ["DUPLICATE"]


def test_rejected_photos_neither_count_nor_make_duplicates():
    rejected = [check_photo(REJECTED[name][0]) for name in ("blurry", "dark", "two_faces", "truncated")]
    shots = list(shot_verdicts()[:10])

    result = check_photo_set([*rejected, *shots])

    assert result.ready is True
    assert result.usable == list(range(4, 14))
    assert result.duplicates == {}
    assert result.photo_reasons[:4] == [["BLURRY"], ["TOO_DARK"], ["MULTIPLE_FACES"], ["UNREADABLE"]]


def test_too_many_photos():
    shots = shot_verdicts()
    assert len(shots) == 14

    assert check_photo_set(shots, max_photos=13).reasons == ["TOO_MANY_PHOTOS"]
    assert check_photo_set(shots, max_photos=14).ready is True
    assert check_photo_set(shots).ready is True  # 14 is within 10-20


def test_the_set_works_on_stored_rows():
    shots = shot_verdicts()[:10]
    rows = [
        SimpleNamespace(
            accepted=v.accepted,
            reasons=list(v.reasons),
            face_hash=v.face_hash,
            face_hash_mirrored=v.face_hash_mirrored,
        )
        for v in [*shots, verdict("flipped_webp")]
    ]

    result = check_photo_set(rows)

    assert result.usable == list(range(10)) and result.duplicates == {10: 0} and result.ready


# --- Messages -------------------------------------------------------------------------------------


def test_every_reason_has_a_message():
    assert set(REASON_MESSAGES) == set(Reason)
    for reason in Reason:
        message = reason_message(reason.value)
        assert message and "%(" not in message
    assert "512" in reason_message("TOO_SMALL")
    assert "10" in reason_message("NOT_ENOUGH_PHOTOS")
    assert "640" in reason_message("TOO_SMALL", rules=PhotoRules(min_short_side=640))
