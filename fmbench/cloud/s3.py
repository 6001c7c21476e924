"""Whole-object S3 reads and writes through boto3, for the workflow's small documents and report files."""

from __future__ import annotations

import json
import mimetypes
import posixpath
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from fmbench.cloud.aws import error_code
from fmbench.storage import split_s3_uri

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Types the report's readers open in a browser from the console; everything else is a download.
_CONTENT_TYPES = {
    ".md": "text/markdown; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".parquet": "application/vnd.apache.parquet",
}


def s3_uri(bucket: str, *parts: str) -> str:
    key = posixpath.join(*(part.strip("/") for part in parts if part.strip("/"))) if parts else ""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def content_type_for(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def put_bytes(s3: Any, uri: str, data: bytes, content_type: str | None = None) -> None:
    bucket, key = split_s3_uri(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type or content_type_for(key))


def put_json(s3: Any, uri: str, document: Any) -> None:
    put_bytes(s3, uri, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(), "application/json")


def get_bytes(s3: Any, uri: str) -> bytes | None:
    """The object's content, or None when there is no such object (a branch that never wrote one)."""
    bucket, key = split_s3_uri(uri)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND_CODES:
            return None
        raise
    return bytes(response["Body"].read())


def list_keys(s3: Any, prefix_uri: str) -> list[str]:
    """Every key under ``prefix_uri`` (a folder-like prefix), in S3's order."""
    bucket, prefix = split_s3_uri(prefix_uri)
    prefix = f"{prefix}/" if prefix else ""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def upload_folder(s3: Any, folder: Path, prefix_uri: str) -> list[str]:
    """Upload the files directly in ``folder`` under ``prefix_uri``; returns their URIs."""
    uploaded = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        uri = f"{prefix_uri.rstrip('/')}/{path.name}"
        put_bytes(s3, uri, path.read_bytes())
        uploaded.append(uri)
    return uploaded


def download_prefix(s3: Any, prefix_uri: str, folder: Path) -> list[Path]:
    """Download every object under ``prefix_uri`` into ``folder``, keeping paths below the prefix."""
    bucket, prefix = split_s3_uri(prefix_uri)
    written = []
    for key in list_keys(s3, prefix_uri):
        relative = key[len(prefix) :].lstrip("/") if prefix else key
        if not relative or relative.endswith("/"):
            continue
        target = folder.joinpath(*relative.split("/"))
        if folder.resolve() not in target.resolve().parents:
            continue  # a key with '..' must not write outside the folder
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        written.append(target)
    return written
