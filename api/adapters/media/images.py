"""Checking and cleaning an uploaded picture (Pillow), in memory, with no I/O.

``sniff(data)`` names the format from the bytes' magic numbers, never from a filename or a
``Content-Type`` header: JPEG (``FF D8 FF``), PNG (``89 'PNG' 0D 0A 1A 0A``), GIF
(``'GIF87a'``/``'GIF89a'``) and WebP (``'RIFF' size 'WEBP'``); anything else raises
``UnsupportedMediaType``.

``clean(data, limits)`` then:

1. opens the bytes with the sniffed format's decoder only, and refuses more than
   ``limits.max_pixels`` pixels from the header, before anything is decoded
   (``ImageTooLarge``; Pillow's own ``DecompressionBombError`` maps there too);
2. decodes the first frame (animated GIF, WebP and APNG, and the JPEG of an MPO, are
   flattened to their first frame: bounded work per upload, and the app's pictures are
   covers, avatars and photos); a truncated or corrupt file raises ``InvalidImage``;
3. applies the EXIF orientation (``ImageOps.exif_transpose``);
4. converts an embedded ICC profile's colours to sRGB (LittleCMS), then drops the profile;
5. re-encodes from pixels alone: no EXIF (GPS included), XMP, ICC profile, comment,
   text chunk or trailing bytes survive. JPEG stays JPEG and WebP stays WebP (lossy, at
   ``limits.quality``), PNG stays PNG (lossless), GIF stays GIF (one frame, its palette and
   transparency kept);
6. makes a JPEG thumbnail, at most ``limits.thumb_size`` pixels on its longer side
   (transparency flattened onto white; never enlarged).

The result is deterministic for a given Pillow build: the same input bytes always give the
same output bytes (so the same content hash, ``api.adapters.media.store``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from api.adapters.media.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

__all__ = [
    "CleanedImage",
    "ImageLimits",
    "OUTPUT_TYPES",
    "THUMB_CONTENT_TYPE",
    "clean",
    "sniff",
]


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000
    quality: int = 85  # JPEG and WebP (and the JPEG thumbnail)
    thumb_size: int = 320  # longer side of the thumbnail, pixels


@dataclass(frozen=True)
class CleanedImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    thumb: bytes
    thumb_width: int
    thumb_height: int

    @property
    def bytes(self) -> int:
        return len(self.data)


# sniffed kind → (Pillow decoder, output content type, file extension)
OUTPUT_TYPES: dict[str, tuple[str, str, str]] = {
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
    "gif": ("GIF", "image/gif", "gif"),
}
THUMB_CONTENT_TYPE = "image/jpeg"

# Kinds we recognise only to say what they are in the 415's detail.
_NOT_SUPPORTED = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"<svg", "an SVG document"),
    (b"<?xml", "an XML document"),
)


def sniff(data: bytes) -> str:
    """``"jpeg"``, ``"png"``, ``"webp"`` or ``"gif"`` from the first bytes of ``data``.

    Raises ``UnsupportedMediaType`` for anything else (the message names what it looks like
    when we recognise it: PDF, HEIC/AVIF, BMP, TIFF, SVG, ZIP)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    what = "this file"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        what = f"an ISO media file ({data[8:12].decode('latin-1')!r}: HEIC, AVIF or video)"
    else:
        head = data[:16].lstrip()
        for magic, name in _NOT_SUPPORTED:
            if head.startswith(magic):
                what = name
                break
    raise UnsupportedMediaType(f"{what} is not a JPEG, PNG, WebP or GIF picture")


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def clean(data: bytes, limits: ImageLimits | None = None) -> CleanedImage:
    """Check and re-encode ``data`` (see the module's docstring). Raises
    ``UnsupportedMediaType``, ``ImageTooLarge`` or ``InvalidImage``."""
    limits = limits or ImageLimits()
    if not data:
        raise InvalidImage("the file is empty")
    kind = sniff(data)
    decoder, content_type, extension = OUTPUT_TYPES[kind]
    im = _decode(data, decoder, limits.max_pixels)
    try:
        im = _oriented(im)
        im = _to_srgb(im)
        im = _output_mode(im, kind)
        # Only what the encoder needs: the savers fall back on ``im.info`` for ICC
        # profiles (PNG), comments (JPEG, GIF) and more.
        transparency = im.info.get("transparency")
        im.info = {} if transparency is None else {"transparency": transparency}
        main = _encode(im, kind, limits.quality)
        thumb = _thumbnail(im, limits.thumb_size)
        thumb_data = _encode(thumb, "jpeg", limits.quality)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(f"the picture could not be decoded: {exc}") from exc
    return CleanedImage(
        data=main,
        content_type=content_type,
        extension=extension,
        width=im.width,
        height=im.height,
        thumb=thumb_data,
        thumb_width=thumb.width,
        thumb_height=thumb.height,
    )


def _decode(data: bytes, decoder: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own limit is lower than Pillow's warning threshold; no warning noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[decoder])
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the picture has too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the picture could not be read: {exc}") from exc
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InvalidImage("the picture has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}×{height} is {width * height:,} pixels; at most {max_pixels:,} are accepted"
        )
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the picture has too many pixels: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(f"the picture could not be decoded: {exc}") from exc
    return im


def _oriented(im: Image.Image) -> Image.Image:
    """``im`` turned upright per its EXIF orientation; unchanged when it has none or its
    EXIF cannot be parsed (the EXIF is dropped at encoding either way)."""
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError, IndexError):
        ImageOps.exif_transpose(im, in_place=True)
    return im


def _to_srgb(im: Image.Image) -> Image.Image:
    """Colours converted from an embedded ICC profile to sRGB (so dropping the profile does
    not change how the picture looks); a profile that cannot be parsed is ignored."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(source).lower():
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im
    return converted if converted is not None else im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _output_mode(im: Image.Image, kind: str) -> Image.Image:
    mode = im.mode
    if kind == "jpeg":
        return im if mode in ("RGB", "L") else im.convert("RGB")
    if kind == "png":
        if mode in ("1", "L", "LA", "P", "RGB", "RGBA"):
            return im
        return im.convert("RGBA" if _has_alpha(im) else "RGB")
    if kind == "webp":
        if mode in ("RGB", "RGBA"):
            return im
        return im.convert("RGBA" if _has_alpha(im) else "RGB")
    # gif
    return im if mode in ("P", "L") else im.convert("P")


def _encode(im: Image.Image, kind: str, quality: int) -> bytes:
    out = io.BytesIO()
    if kind == "jpeg":
        im.save(out, "JPEG", quality=quality)
    elif kind == "png":
        im.save(out, "PNG")
    elif kind == "webp":
        im.save(out, "WEBP", quality=quality, method=4)
    else:
        im.save(out, "GIF")
    return out.getvalue()


def _thumbnail(im: Image.Image, size: int) -> Image.Image:
    """An RGB (or L) copy of ``im`` fitting in ``size``×``size``, never enlarged;
    transparency flattened onto white."""
    if im.mode in ("P", "1", "I", "I;16", "F") or (im.mode in ("L", "RGB") and _has_alpha(im)):
        im = im.convert("RGBA")
    scale = min(1.0, size / max(im.width, im.height))
    box = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    thumb = im if box == im.size else im.resize(box, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if thumb.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGB", thumb.size, (255, 255, 255))
        background.paste(thumb.convert("RGBA"), mask=thumb.convert("RGBA").getchannel("A"))
        thumb = background
    elif thumb.mode not in ("RGB", "L"):
        thumb = thumb.convert("RGB")
    thumb.info = {}
    return thumb
