"""``S3Storage``: the storage port on S3-compatible object storage, through boto3.

Configured by ``LIUDONG_S3_BUCKET`` (the bucket must exist), ``LIUDONG_S3_ENDPOINT_URL``
(empty → AWS; set for MinIO, Ceph, Tencent COS, Aliyun OSS and other compatible stores,
which are then addressed path-style: ``ENDPOINT/BUCKET/KEY``) and ``LIUDONG_S3_REGION``.
Credentials come from boto3's standard chain: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), a shared credentials file or an
instance role. Objects are written with their content type and the same immutable
``Cache-Control`` the API serves; reads go to clients as presigned GET URLs (signature v4)
that expire after ``LIUDONG_S3_PRESIGN_EXPIRY`` seconds.

A boto3 client is thread-safe; one is shared by the handler threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from api.adapters.media.errors import MediaStorageUnavailable

__all__ = ["IMMUTABLE", "S3Storage"]

IMMUTABLE = "public, max-age=31536000, immutable"
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_connections: int = 16,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.client = client or boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region or None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=max_connections,
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=IMMUTABLE,
            )
        except (BotoCoreError, ClientError) as exc:
            raise MediaStorageUnavailable(f"S3 put of {key} failed: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if _missing(exc):
                return None
            raise MediaStorageUnavailable(f"S3 get of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise MediaStorageUnavailable(f"S3 get of {key} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if _missing(exc):
                return False
            raise MediaStorageUnavailable(f"S3 head of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise MediaStorageUnavailable(f"S3 head of {key} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return
            raise MediaStorageUnavailable(f"S3 delete of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise MediaStorageUnavailable(f"S3 delete of {key} failed: {exc}") from exc

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=int(expires_in),
                )
            )
        except (BotoCoreError, ClientError) as exc:
            raise MediaStorageUnavailable(f"S3 presign of {key} failed: {exc}") from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def close(self) -> None:
        self.client.close()
