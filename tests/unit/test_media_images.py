"""Sniffing and cleaning pictures in memory (``api.adapters.media.images``)."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from api.adapters.media import (
    ImageLimits,
    ImageTooLarge,
    InvalidImage,
    UnsupportedMediaType,
    clean,
    sniff,
)
from tests.media_helpers import (
    BLUE,
    RED,
    bomb_png,
    fake_pdf,
    image_bytes,
    phone_jpeg,
    swapped_primaries_icc,
)


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# -- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (image_bytes("JPEG"), "jpeg"),
        (image_bytes("PNG"), "png"),
        (image_bytes("WEBP"), "webp"),
        (image_bytes("GIF"), "gif"),
        (b"GIF87a" + b"\x00" * 10, "gif"),
    ],
)
def test_sniff_names_the_four_formats_from_their_bytes(data: bytes, kind: str) -> None:
    assert sniff(data) == kind


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (fake_pdf(), "PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (image_bytes("BMP"), "BMP"),
        (image_bytes("TIFF"), "TIFF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"PK\x03\x04rest", "ZIP"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "this file"),
        (b"hello", "this file"),
        (b"\xff\xd8", "this file"),  # too short for a JPEG marker
    ],
)
def test_sniff_refuses_everything_else(data: bytes, named: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=named):
        sniff(data)


def test_the_name_and_header_are_never_consulted() -> None:
    # a PDF whose first bytes are not an image's is refused whatever it is called
    with pytest.raises(UnsupportedMediaType):
        clean(fake_pdf())


# -- cleaning ---------------------------------------------------------------------------------


def test_a_phone_jpeg_loses_exif_gps_icc_comment_and_trailing_bytes() -> None:
    original = phone_jpeg(400, 300, orientation=1, trailing=b"--appended-zip-or-whatever--")
    source = opened(original)
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert {"exif", "icc_profile", "comment"} <= set(source.info)
    cleaned = clean(original)
    assert cleaned.content_type == "image/jpeg" and cleaned.extension == "jpg"
    out = opened(cleaned.data)
    assert out.format == "JPEG"
    assert not out.getexif()
    assert not out.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert not {"exif", "icc_profile", "comment", "xmp"} & set(out.info)
    assert b"--appended" not in cleaned.data and b"Liudong Phone" not in cleaned.data
    assert cleaned.data.endswith(b"\xff\xd9")  # nothing after the end-of-image marker
    assert (cleaned.width, cleaned.height) == (400, 300) == out.size


# Where the red square (stored top-left) is once the picture is upright, per orientation.
# Orientation n: how to turn the stored pixels (EXIF 2.32, table of tag 0x0112).
UPRIGHT_CORNER = {
    1: "top-left",
    2: "top-right",  # mirrored
    3: "bottom-right",  # 180°
    4: "bottom-left",  # flipped
    5: "top-left",  # transposed
    6: "top-right",  # 90° clockwise
    7: "bottom-right",  # transversed
    8: "bottom-left",  # 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT_CORNER))
def test_the_orientation_is_applied(orientation: int) -> None:
    cleaned = clean(phone_jpeg(400, 300, orientation=orientation))
    turned = orientation >= 5
    width, height = (300, 400) if turned else (400, 300)
    assert (cleaned.width, cleaned.height) == (width, height)
    im = opened(cleaned.data).convert("RGB")
    assert im.size == (width, height)
    corners = {
        "top-left": (10, 10),
        "top-right": (width - 10, 10),
        "bottom-left": (10, height - 10),
        "bottom-right": (width - 10, height - 10),
    }
    for corner, xy in corners.items():
        expected = RED if corner == UPRIGHT_CORNER[orientation] else BLUE
        assert near(im.getpixel(xy), expected), (orientation, corner, im.getpixel(xy))
    # the thumbnail is upright too
    assert (cleaned.thumb_width > cleaned.thumb_height) == (not turned)


def test_cleaning_is_deterministic() -> None:
    data = phone_jpeg(200, 100)
    assert clean(data).data == clean(data).data
    # the same pixels with other metadata clean to the same bytes (one id)
    assert clean(data).data == clean(phone_jpeg(200, 100, gps=False)).data


def test_png_stays_lossless_png_without_text_chunks_or_profile() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at 39.9N 116.4E")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    pixels = Image.frombytes("RGBA", (16, 8), bytes(range(256)) * 2)
    out = io.BytesIO()
    odd_icc = b"not an icc profile at all"
    pixels.save(out, "PNG", pnginfo=info, icc_profile=odd_icc)
    assert opened(out.getvalue()).info.get("icc_profile") == odd_icc
    cleaned = clean(out.getvalue())
    assert cleaned.content_type == "image/png"
    result = opened(cleaned.data)
    assert result.mode == "RGBA"
    assert result.tobytes() == pixels.tobytes()
    assert not {"Comment", "XML:com.adobe.xmp", "icc_profile", "exif"} & set(result.info)
    assert b"39.9N" not in cleaned.data


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_icc_profile_is_converted_to_srgb_and_dropped(mode: str) -> None:
    icc = swapped_primaries_icc()  # red and green primaries swapped
    out = io.BytesIO()
    colour = (200, 30, 40, 100)[: len(mode)]
    Image.new(mode, (20, 20), colour).save(out, "PNG", icc_profile=icc)
    result = opened(clean(out.getvalue()).data)
    assert "icc_profile" not in result.info
    pixel = result.getpixel((10, 10))
    assert near(pixel, (30, 200, 40), 12), pixel  # what the profile meant, in sRGB
    if mode == "RGBA":
        assert pixel[3] == 100


def test_an_srgb_profile_is_dropped_without_changing_colours() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 40)).save(out, "PNG", icc_profile=srgb)
    result = opened(clean(out.getvalue()).data)
    assert "icc_profile" not in result.info
    assert result.getpixel((10, 10)) == (200, 30, 40)


def test_webp_stays_webp_without_exif() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Liudong Phone"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[1] = "N"
    data = image_bytes("WEBP", 50, 30, exif=exif, quality=90)
    assert opened(data).getexif()
    cleaned = clean(data)
    assert cleaned.content_type == "image/webp"
    result = opened(cleaned.data)
    assert result.format == "WEBP"
    assert not result.getexif() and "exif" not in result.info


def test_an_animated_gif_keeps_its_first_frame_and_loses_its_comment() -> None:
    frames = [Image.new("P", (40, 30), i) for i in (1, 2, 3)]
    for i, frame in enumerate(frames):
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        frame.paste(i + 1, (0, 0, 40, 30))
    out = io.BytesIO()
    frames[0].save(
        out, "GIF", save_all=True, append_images=frames[1:], duration=100, comment=b"secret"
    )
    assert opened(out.getvalue()).n_frames == 3
    cleaned = clean(out.getvalue())
    result = opened(cleaned.data)
    assert cleaned.content_type == "image/gif"
    assert getattr(result, "n_frames", 1) == 1
    assert "comment" not in result.info
    assert near(result.convert("RGB").getpixel((5, 5)), (255, 0, 0), 0)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("CMYK", "JPEG"), ("L", "JPEG"), ("P", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("RGBA", "WEBP")],
)
def test_other_modes_clean_and_thumbnail(mode: str, fmt: str) -> None:
    out = io.BytesIO()
    Image.new(mode, (500, 250)).save(out, fmt)
    cleaned = clean(out.getvalue())
    assert (cleaned.width, cleaned.height) == (500, 250)
    thumb = opened(cleaned.thumb)
    assert thumb.format == "JPEG" and thumb.mode in ("RGB", "L")
    assert thumb.size == (320, 160) == (cleaned.thumb_width, cleaned.thumb_height)
    if mode == "CMYK":
        assert opened(cleaned.data).mode == "RGB"


def test_a_transparent_png_thumbnail_is_flattened_on_white() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(out, "PNG")
    thumb = opened(clean(out.getvalue()).thumb)
    assert thumb.size == (40, 40)  # never enlarged
    assert near(thumb.getpixel((20, 20)), (255, 255, 255), 2)


def test_the_thumbnail_size_and_quality_are_limits() -> None:
    data = phone_jpeg(1200, 900, orientation=1, noise=True)
    small = clean(data, ImageLimits(thumb_size=100, quality=30))
    large = clean(data, ImageLimits(thumb_size=600, quality=95))
    assert (small.thumb_width, small.thumb_height) == (100, 75)
    assert (large.thumb_width, large.thumb_height) == (600, 450)
    assert small.bytes < large.bytes


def test_more_pixels_than_the_limit_are_refused_before_decoding() -> None:
    data = image_bytes("PNG", 300, 200)
    assert clean(data, ImageLimits(max_pixels=60_000)).width == 300
    with pytest.raises(ImageTooLarge, match="60,300 pixels"):
        clean(image_bytes("PNG", 300, 201), ImageLimits(max_pixels=60_000))


def test_a_decompression_bomb_is_refused() -> None:
    with pytest.raises(ImageTooLarge):
        clean(bomb_png(20_000))  # 400 MP: over Pillow's own bomb threshold as well
    with pytest.raises(ImageTooLarge):
        clean(bomb_png(7_000))  # 49 MP: over our 40 MP limit only


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(phone_jpeg(200, 150)[:700], id="truncated-jpeg"),
        pytest.param(image_bytes("PNG", 200, 150)[:80], id="truncated-png"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png-magic-only"),
        pytest.param(b"GIF89a" + b"\xff" * 40, id="gif-garbage"),
        pytest.param(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20, id="webp-garbage"),
    ],
)
def test_undecodable_pictures_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        clean(data)
