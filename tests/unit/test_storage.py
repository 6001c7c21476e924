"""Storage locations: the S3 endpoint and region the environment selects, URI checks, local whole-file I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs as pafs

from fmbench import storage
from fmbench.storage import S3Settings


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, S3Settings()),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, S3Settings(region="eu-west-1")),
        (
            {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"},
            S3Settings(region="eu-central-1"),
        ),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
            S3Settings(endpoint_override="127.0.0.1:5000", scheme="http"),
        ),
        (
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
                "AWS_ENDPOINT_URL_S3": "https://s3.vpce.example:8443/",
            },
            S3Settings(endpoint_override="s3.vpce.example:8443", scheme="https"),
        ),
        ({"AWS_ENDPOINT_URL_S3": "minio.local:9000"}, S3Settings(endpoint_override="minio.local:9000")),
        (
            {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:5000", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
            S3Settings(),
        ),
    ],
)
def test_region_and_endpoint_come_from_the_standard_variables(
    environ: dict[str, str], expected: S3Settings
) -> None:
    assert storage.s3_settings_from_env(environ) == expected


def test_an_endpoint_that_is_not_http_is_refused() -> None:
    with pytest.raises(storage.StorageUriError, match="'ftp://files' is not an http"):
        storage.s3_settings_from_env({"AWS_ENDPOINT_URL_S3": "ftp://files"})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/prefix/", ("bucket", "prefix")),
        ("s3://my.bucket-1/a/b", ("my.bucket-1", "a/b")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_s3_uris_split_into_bucket_and_prefix(uri: str, expected: tuple[str, str]) -> None:
    assert storage.split_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "must not be empty"),
        ("s3://", "valid bucket name"),
        ("s3://Upper_Case/x", "valid bucket name"),
        ("gs://bucket/x", "unsupported scheme gs://"),
    ],
)
def test_unsupported_locations_are_refused_with_a_reason(uri: str, message: str) -> None:
    with pytest.raises(storage.StorageUriError, match=message):
        storage.check_storage_uri(uri)


def test_local_paths_resolve_to_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    filesystem, path = storage.resolve_filesystem("results")
    assert isinstance(filesystem, pafs.LocalFileSystem)
    assert path == str(tmp_path / "results")


def test_s3_filesystems_write_no_directory_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    filesystem, path = storage.resolve_filesystem("s3://bucket/results/records")
    assert path == "bucket/results/records"
    filesystem.create_dir(path, recursive=True)  # no request at all: it would fail without an S3 to talk to


def test_local_writes_replace_the_whole_file_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "outcomes" / "x" / "outcome.json"
    storage.write_bytes(str(target), b'{"status": "failed"}')
    storage.write_bytes(str(target), b'{"status": "succeeded"}')
    assert storage.read_bytes(str(target)) == b'{"status": "succeeded"}'
    assert [p.name for p in target.parent.iterdir()] == ["outcome.json"]


def test_reading_a_missing_file_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(storage.StorageNotFoundError, match=r"cannot read .*missing\.json"):
        storage.read_bytes(str(tmp_path / "missing.json"))


def test_writing_under_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.StorageAccessError, match="cannot write"):
        storage.write_bytes(str(tmp_path / "file" / "outcome.json"), b"{}")
