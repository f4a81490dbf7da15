"""``media``: picture uploads through the live server, and what cleaning a picture costs.

Input: phone-like JPEGs made with Pillow: 4032×3024 (a 12 MP phone camera), smooth
gradients with grain, quality 85, ~1.9 MB each, with the EXIF a phone writes (Make, Model,
GPS coordinates, orientation 6: held upright) and an sRGB ICC profile. Every file has its
own random 64×64 patch, so each upload is a new picture (a repeat would store nothing).

- ``media.upload.mb_per_s`` / ``media.upload.files_per_s``: every file POSTed once to
  ``/v1/media`` as ``multipart/form-data`` exactly as ``wx.uploadFile`` sends it (part
  ``file``, field ``purpose``), by 4 concurrent clients with one upload in flight each;
  original megabytes (10^6 bytes) and files per wall-clock second, first request to last
  response. ``params``: latency percentiles, the server's CPU seconds per file, the cleaned
  size against the original.
- ``media.clean.ms_per_file``: ``api.adapters.media.images.clean`` (sniff, decode, EXIF
  orientation, ICC, re-encode, thumbnail) in this process, one file at a time, before the
  server starts; mean milliseconds per file, broken down by step in ``params``.

Baseline of all three: a plain copy of the same bytes to disk with the product's
``DiskStorage.put`` (write, fsync, rename into place: what storing an upload as it came
would cost), one file at a time, in the same run.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    ServerProcess,
    Skip,
    cpu_seconds,
    log,
    login,
    summary_ms,
    throwaway_database,
)

MB = 1e6


def phone_photos(count: int, width: int, height: int) -> list[bytes]:
    """``count`` distinct phone-like JPEGs (see the module's docstring)."""
    from PIL import ExifTags, Image, ImageCms

    grain = Image.effect_noise((width // 2, height // 2), 24).resize((width, height))
    gradient = Image.linear_gradient("L")
    base = Image.merge(
        "RGB",
        [
            gradient.resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
            gradient.rotate(90).resize((width, height)),
        ],
    )
    base = Image.blend(base, Image.merge("RGB", [grain] * 3), 0.3)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Liudong Phone"
    exif[ExifTags.Base.Model] = "LP-12"
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {1: "N", 2: (39.0, 54.0, 15.0), 3: "E", 4: (116.0, 23.0, 29.0), 6: 43.5}
    )
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photos = []
    for i in range(count):
        im = base.copy()
        patch = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
        im.paste(patch, ((i * 97) % (width - 64), (i * 61) % (height - 64)))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85, exif=exif, icc_profile=icc)
        photos.append(out.getvalue())
    return photos


def wx_upload_body(data: bytes, filename: str, purpose: str) -> tuple[bytes, str]:
    boundary = "----WxUploadBoundary" + uuid.uuid4().hex[:16]
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def copy_baseline(photos: list[bytes], root: Path) -> tuple[float, list[float]]:
    """Each photo written with ``DiskStorage.put``; returns (seconds in all, per-file)."""
    from api.adapters.media import DiskStorage

    storage = DiskStorage(root)
    times = []
    for i, data in enumerate(photos):
        t0 = time.perf_counter()
        storage.put(f"{i % 256:02x}/copy-{i}.jpg", data, "image/jpeg")
        times.append(time.perf_counter() - t0)
    return sum(times), times


def clean_cost(photos: list[bytes]) -> tuple[list[float], dict[str, float], float]:
    """``images.clean`` per photo (seconds), the mean of each step (ms), and the cleaned
    size over the original size."""
    from api.adapters.media import images

    limits = images.ImageLimits()
    totals: list[float] = []
    steps: dict[str, list[float]] = {}
    ratio = []

    def timed(name: str, step: Any, *args: Any) -> Any:
        t = time.perf_counter()
        result = step(*args)
        steps.setdefault(name, []).append(time.perf_counter() - t)
        return result

    for data in photos:
        t0 = time.perf_counter()
        cleaned = images.clean(data, limits)
        totals.append(time.perf_counter() - t0)
        ratio.append(cleaned.bytes / len(data))
        # the same steps one by one, for the breakdown
        timed("sniff", images.sniff, data)
        im = timed("decode", images._decode, data, "JPEG", limits.max_pixels)
        im = timed("orient", images._oriented, im)
        im = timed("colour", lambda im: images._output_mode(images._to_srgb(im), "jpeg"), im)
        im.info = {}
        timed("encode", images._encode, im, "jpeg", limits.quality)
        thumb = timed("thumbnail", images._thumbnail, im, limits.thumb_size)
        timed("thumb_encode", images._encode, thumb, "jpeg", limits.quality)
    breakdown = {name: round(statistics.mean(v) * 1000, 1) for name, v in steps.items()}
    return totals, breakdown, statistics.mean(ratio)


async def upload_all(
    base_url: str, token: str, photos: list[bytes], clients: int
) -> tuple[float, list[float], list[dict[str, Any]]]:
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in enumerate(photos):
        queue.put_nowait(item)
    latencies: list[float] = []
    answers: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as http:
            while not queue.empty():
                i, data = queue.get_nowait()
                body, content_type = wx_upload_body(data, f"tmp_{i:04d}.jpg", "cover")
                t0 = time.perf_counter()
                response = await http.post(
                    "/v1/media", content=body, headers={"Content-Type": content_type}
                )
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 201:
                    raise RuntimeError(f"upload {i}: {response.status_code} {response.text[:300]}")
                answers.append(response.json())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, answers


def check_served(base_url: str, answer: dict[str, Any]) -> None:
    """The served picture has no EXIF and stands upright (3024×4032)."""
    from PIL import Image

    served = httpx.get(base_url + f"/v1/media/{answer['id']}", timeout=60)
    served.raise_for_status()
    with Image.open(io.BytesIO(served.content)) as im:
        if im.getexif() or "exif" in im.info:
            raise RuntimeError("the served picture still has EXIF")
        if im.size != (answer["width"], answer["height"]) or im.width > im.height:
            raise RuntimeError(f"the served picture is {im.size}, not upright")


def run(ctx: Any) -> None:
    try:
        import api.adapters.media  # noqa: F401
    except ModuleNotFoundError as exc:
        raise Skip(f"no media adapter: {exc.name} does not exist yet") from None
    count = ctx.size(40, 4)
    width, height = ctx.size((4032, 3024), (1024, 768))
    clients = ctx.size(4, 2)
    t0 = time.perf_counter()
    photos = phone_photos(count, width, height)
    total_mb = sum(map(len, photos)) / MB
    log(
        f"media: {count} photos of {width}×{height}, {total_mb / count:.2f} MB each "
        f"(made in {time.perf_counter() - t0:.1f} s)"
    )

    copy_seconds, copy_times = copy_baseline(photos, ctx.work_dir / "media-copy")
    copy_ms = statistics.mean(copy_times) * 1000
    cleaned_sample = photos[: ctx.size(12, 4)]
    clean_times, breakdown, size_ratio = clean_cost(cleaned_sample)
    clean_ms = statistics.mean(clean_times) * 1000
    log(f"media: clean {clean_ms:.0f} ms/file, plain copy {copy_ms:.1f} ms/file")

    with throwaway_database(ctx.svc.server_url, "media") as url:
        server = ServerProcess(
            url,
            ctx.svc.nats_url,
            ctx.work_dir / "media-data",
            ctx.work_dir / "media-server.log",
            extra_env={"LIUDONG_MEDIA_SWEEP_INTERVAL": "0"},
        )
        with server:
            if "/v1/media" not in server.openapi_paths():
                raise Skip("the server has no /v1/media")
            token, _ = asyncio.run(login(server.url, f"bench-media-{uuid.uuid4().hex[:6]}"))
            cpu0 = cpu_seconds(server.pid)
            seconds, latencies, answers = asyncio.run(
                upload_all(server.url, token, photos, clients)
            )
            cpu = cpu_seconds(server.pid) - cpu0
            check_served(server.url, answers[0])
    if len({a["id"] for a in answers}) != count:
        raise RuntimeError("two photos got the same id")
    stored_mb = sum(a["bytes"] for a in answers) / MB
    mb_per_s = total_mb / seconds
    files_per_s = count / seconds
    log(f"media: uploads {mb_per_s:.1f} MB/s, {files_per_s:.2f} files/s ({clients} clients)")
    common = {
        "files": count,
        "size": f"{width}x{height}",
        "mb_per_file": round(total_mb / count, 2),
        "clients": clients,
    }
    copy_params = {
        "baseline": "DiskStorage.put of the same bytes (write, fsync, rename), one at a time",
        "copy_ms_per_file": round(copy_ms, 2),
    }
    ctx.emit(
        "media.upload.mb_per_s",
        mb_per_s,
        "MB/s",
        baseline=total_mb / copy_seconds,
        params={
            **common,
            **copy_params,
            "seconds": round(seconds, 2),
            "files_per_s": round(files_per_s, 2),
            "latency_ms": summary_ms(latencies),
            "server_cpu_s_per_file": round(cpu / count, 3),
            "stored_mb": round(stored_mb, 1),
            "cleaned_over_original": round(stored_mb / total_mb, 3),
            "request": "multipart/form-data as wx.uploadFile (file + purpose)",
        },
    )
    ctx.emit(
        "media.upload.files_per_s",
        files_per_s,
        "files/s",
        baseline=count / copy_seconds,
        params={**common, **copy_params, "seconds": round(seconds, 2)},
    )
    ctx.emit(
        "media.clean.ms_per_file",
        clean_ms,
        "ms",
        baseline=copy_ms,
        params={
            **common,
            **copy_params,
            "files": len(cleaned_sample),
            "steps_ms": breakdown,
            "clean_ms": summary_ms(clean_times),
            "cleaned_over_original": round(size_ratio, 3),
            "what": "images.clean: sniff, decode, orient, ICC, re-encode (q85), 320 px thumb",
        },
    )
