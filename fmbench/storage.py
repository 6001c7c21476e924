"""Where results live: a local folder or ``s3://bucket/prefix``, as pyarrow filesystems and whole objects."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyarrow import NativeFile
from pyarrow import fs as pafs

S3_PREFIX = "s3://"
FILE_PREFIX = "file://"
# The variables botocore reads too, in its order: the S3-specific one wins over the general one.
ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
IGNORE_ENDPOINT_ENV_VAR = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"
REGION_ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
_BUCKET_PATTERN_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


class StorageUriError(ValueError):
    """A storage location that is neither a local path nor an ``s3://bucket/prefix`` URI."""


class StorageAccessError(OSError):
    """Reading or writing a storage location failed; the message names the location and the cause."""

    def __init__(self, uri: str, action: str, cause: BaseException) -> None:
        self.uri = uri
        self.action = action
        super().__init__(f"cannot {action} {uri}: {cause}")


class StorageNotFoundError(StorageAccessError):
    """The object or file to read does not exist."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3. ``endpoint_override`` is ``host[:port]`` (pyarrow's form), the scheme apart."""

    region: str | None = None
    endpoint_override: str | None = None
    scheme: str = "https"


def s3_settings_from_env(environ: Mapping[str, str] | None = None) -> S3Settings:
    """Region and endpoint from the standard AWS variables.

    pyarrow's ``S3FileSystem`` constructor ignores ``AWS_ENDPOINT_URL(_S3)`` (only ``FileSystem.from_uri``
    reads them, and it also looks up the bucket's region with a request the runner's role may not be
    allowed to make), so the endpoint is read here and passed explicitly. This is how tests reach a moto
    server and how users reach S3 through an interface VPC endpoint.
    """
    env = os.environ if environ is None else environ
    region = next((env[name] for name in REGION_ENV_VARS if env.get(name)), None)
    if env.get(IGNORE_ENDPOINT_ENV_VAR, "").lower() == "true":
        return S3Settings(region=region)
    endpoint_url = next((env[name] for name in ENDPOINT_ENV_VARS if env.get(name)), None)
    if endpoint_url is None:
        return S3Settings(region=region)
    parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StorageUriError(f"S3 endpoint {endpoint_url!r} is not an http:// or https:// URL")
    return S3Settings(
        region=region, endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://bucket/prefix``; the prefix may be empty."""
    if not uri.startswith(S3_PREFIX):
        raise StorageUriError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(S3_PREFIX) :].partition("/")
    if not (3 <= len(bucket) <= 63) or not set(bucket) <= _BUCKET_PATTERN_CHARS:
        raise StorageUriError(f"{uri!r} does not start with a valid bucket name (s3://bucket/prefix)")
    return bucket, key.strip("/")


def check_storage_uri(uri: str) -> None:
    """Raise ``StorageUriError`` unless ``uri`` is a local path, a ``file://`` URI or ``s3://bucket/prefix``."""
    if not uri.strip():
        raise StorageUriError("must not be empty")
    if uri.startswith(S3_PREFIX):
        split_s3_uri(uri)
    elif "://" in uri and not uri.startswith(FILE_PREFIX):
        scheme = uri.split("://", 1)[0]
        raise StorageUriError(f"unsupported scheme {scheme}://; give a local path or s3://bucket/prefix")


class _S3WithoutDirectoryMarkers(pafs.FileSystemHandler):
    """S3 as pyarrow sees it, except that creating a directory does nothing.

    S3 has no directories: Arrow's ``create_dir`` writes an empty ``.../`` object per level, and Athena
    reads every object under a table's location (it cannot skip empty ones), so the record writer's
    ``create_dir`` must not leave such objects in ``records/``. Everything else is passed through.
    """

    def __init__(self, s3: pafs.S3FileSystem) -> None:
        self.s3 = s3

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _S3WithoutDirectoryMarkers) and self.s3.equals(other.s3)

    def __hash__(self) -> int:
        return id(self.s3)

    def get_type_name(self) -> str:
        return "s3-without-directory-markers"

    def normalize_path(self, path: str) -> str:
        return self.s3.normalize_path(path)

    def get_file_info(self, paths: str | list[str]) -> list[pafs.FileInfo]:
        return self.s3.get_file_info([paths] if isinstance(paths, str) else paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.s3.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        return None

    def delete_dir(self, path: str) -> None:
        self.s3.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.s3.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of every bucket")

    def delete_file(self, path: str) -> None:
        self.s3.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.s3.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.s3.copy_file(src, dest)

    def open_input_stream(self, path: str) -> NativeFile:
        return self.s3.open_input_stream(path)

    def open_input_file(self, path: str) -> NativeFile:
        return self.s3.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> NativeFile:
        return self.s3.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> NativeFile:
        return self.s3.open_append_stream(path, metadata=metadata)


def s3_filesystem(settings: S3Settings | None = None) -> pafs.FileSystem:
    """An S3 filesystem (region and endpoint from the environment unless given) that writes no markers."""
    settings = settings or s3_settings_from_env()
    options: dict[str, Any] = {"scheme": settings.scheme}
    if settings.region:
        options["region"] = settings.region
    if settings.endpoint_override:
        options["endpoint_override"] = settings.endpoint_override
    return pafs.PyFileSystem(_S3WithoutDirectoryMarkers(pafs.S3FileSystem(**options)))


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for a local path, ``file://`` URI or ``s3://bucket/prefix``, and the path in it.

    Local paths come back absolute, so a later change of working directory cannot move the results.
    """
    check_storage_uri(uri)
    if uri.startswith(S3_PREFIX):
        bucket, key = split_s3_uri(uri)
        return s3_filesystem(), posixpath.join(bucket, key) if key else bucket
    if uri.startswith(FILE_PREFIX):
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def read_bytes(uri: str) -> bytes:
    """The whole object or file; ``StorageNotFoundError`` if it is not there."""
    filesystem, path = resolve_filesystem(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError as exc:
        raise StorageNotFoundError(uri, "read", exc) from exc
    except OSError as exc:
        raise StorageAccessError(uri, "read", exc) from exc


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write a whole object or file so that a reader sees the old content or the new, never a part.

    S3 makes a completed upload visible at once; locally the data goes to a temporary file first and is
    then renamed over the target.
    """
    filesystem, path = resolve_filesystem(uri)
    try:
        if uri.startswith(S3_PREFIX):
            with filesystem.open_output_stream(path, metadata={"Content-Type": content_type}) as stream:
                stream.write(data)
            return
        filesystem.create_dir(posixpath.dirname(path), recursive=True)
        temporary = f"{path}.tmp-{os.getpid()}"
        try:
            with filesystem.open_output_stream(temporary) as stream:
                stream.write(data)
            filesystem.move(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk must not also keep the half-written copy
                filesystem.delete_file(temporary)
            raise
    except OSError as exc:
        raise StorageAccessError(uri, "write", exc) from exc


def overwrite_in_place(uri: str, data: bytes) -> bool:
    """Write ``data`` over an existing local file's first bytes, padded with spaces to its size: no new
    block is needed, so this works on a full disk. For whitespace-tolerant text (JSON) only. False when
    the file is not local, missing, or smaller than ``data``."""
    if "://" in uri and not uri.startswith(FILE_PREFIX):
        return False
    _, path = resolve_filesystem(uri)
    try:
        with Path(path).open("r+b") as file:
            size = file.seek(0, os.SEEK_END)
            if size < len(data):
                return False
            file.seek(0)
            file.write(data + b" " * (size - len(data)))
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        return False
    return True
