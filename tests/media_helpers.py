"""Pictures made with Pillow for the media tests, the multipart body ``wx.uploadFile`` sends,
and an S3-compatible server (moto's, a separate process on loopback)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageCms

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GPS = {1: "N", 2: (39.0, 54.0, 15.0), 3: "E", 4: (116.0, 23.0, 29.0), 6: 43.5}


def phone_jpeg(
    width: int = 640,
    height: int = 480,
    *,
    orientation: int = 6,
    gps: bool = True,
    noise: bool = False,
    quality: int = 90,
    trailing: bytes = b"",
) -> bytes:
    """A JPEG as a phone camera writes it: EXIF with Make/Model, the orientation tag and GPS
    coordinates, an sRGB ICC profile, a comment. The stored pixels are blue with a red
    square in the top-left corner (a quarter of the shorter side), so a test can tell how
    it was turned. ``noise`` makes it photo-like in size (~2 MB at 4032×3024)."""
    if noise:
        grain = Image.effect_noise((width, height), 64).convert("RGB")
        base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        im = Image.blend(base, grain, 0.35)
        im = Image.blend(im, Image.new("RGB", (width, height), BLUE), 0.3)
    else:
        im = Image.new("RGB", (width, height), BLUE)
    side = min(width, height) // 4
    im.paste(RED, (0, 0, side, side))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Liudong Phone"
    exif[ExifTags.Base.Model] = "LP-1"
    exif[ExifTags.Base.Orientation] = orientation
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(GPS)
    out = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(out, "JPEG", quality=quality, exif=exif, icc_profile=srgb, comment=b"shot at home")
    return out.getvalue() + trailing


def png(width: int = 64, height: int = 48, mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), (0, 200, 0, 128) if mode == "RGBA" else 0).save(out, "PNG")
    return out.getvalue()


def image_bytes(fmt: str, width: int = 60, height: int = 40, **save: object) -> bytes:
    out = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.new(mode, (width, height)).save(out, fmt, **save)
    return out.getvalue()


def swapped_primaries_icc() -> bytes:
    """A minimal ICC v2 RGB display profile whose red and green primaries are sRGB's swapped
    (gamma 2.2): a pixel (r, g, b) tagged with it looks like (g, r, b) in sRGB. Lets a test
    see that an embedded profile's colours are converted, not merely dropped."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    def curve(gamma: float) -> bytes:
        return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"

    name = b"Liudong swapped RGB"
    desc = (
        b"desc"
        + b"\0" * 4
        + struct.pack(">I", len(name) + 1)
        + name
        + b"\0"
        + b"\0" * 8
        + b"\0" * 3
        + b"\0" * 67
    )
    desc += b"\0" * (-len(desc) % 4)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),  # sRGB's green
        (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve(2.2)),
        (b"gTRC", curve(2.2)),
        (b"bTRC", curve(2.2)),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data


def unique_png(width: int = 48, height: int = 32) -> bytes:
    """A small PNG no other test uploads (random colours): content-addressed ids are shared
    by every test of a session's database."""
    noise = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    return out.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A 1-bit PNG of ``side``² pixels: ~50 KB compressed, 400 MP decoded."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG", optimize=True)
    return out.getvalue()


def fake_pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n"
        b"%%EOF\n"
    )


def wx_multipart(
    data: bytes,
    *,
    filename: str = "tmp_7f3a9c.jpg",
    part_type: str = "image/jpeg",
    purpose: str | None = "cover",
    extra: dict[str, str] | None = None,
) -> tuple[bytes, str]:
    """The body and ``Content-Type`` ``wx.uploadFile({name: "file", formData})`` sends:
    the form fields first, then the file part. Returns ``(body, content_type)``."""
    boundary = "----WxUploadBoundary" + uuid.uuid4().hex[:16]
    parts: list[bytes] = []
    fields = dict(extra or {})
    if purpose is not None:
        fields["purpose"] = purpose
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {part_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# -- an S3-compatible server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    endpoint_url: str
    region: str = "us-east-1"
    access_key: str = "liudong-test"
    secret_key: str = "liudong-test-secret"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@contextlib.contextmanager
def moto_s3_server(timeout: float = 30.0) -> Iterator[S3Server]:
    """moto's S3-compatible server (``python -m moto.server``) on a free loopback port, as
    a separate process, stopped at the end."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_PORT": str(port)},
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5),
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
