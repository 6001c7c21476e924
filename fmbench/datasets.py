"""Dataset files into records: JSONL, JSON, CSV and Parquet; local, in S3 or on the Hugging Face Hub.

Every record keeps where it came from (file and line, item or row), so that a row that cannot be used is
named in the error or in the count of rows left out, never dropped without a word.
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import hashlib
import io
import json
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fmbench.config import BUILTIN_DATASET_PREFIX, DATASET_FORMATS, HUB_DATASET_PREFIX, DatasetSpec

BUILTIN_DATASETS = {"synthetic-qa": "synthetic-qa.jsonl"}
DEFAULT_HUB_SPLIT = "train"
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


class DatasetError(ValueError):
    """A dataset that cannot be read or does not fit the workload; ``path`` is the suite field to blame."""

    def __init__(self, message: str, path: str = "workload.dataset.source") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class Row:
    """One record and where it is: ``"data.jsonl, line 7"``."""

    record: dict[str, Any]
    where: str


@dataclass(frozen=True, slots=True)
class MalformedRow:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class LoadedDataset:
    """The records of a dataset and what is known about where they came from."""

    source: str
    rows: list[Row]
    malformed: list[MalformedRow] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    revision: str | None = None  # the commit of a Hub dataset
    content_sha256: str = ""  # of the bytes of every file read, in order


def file_format(name: str, given: str | None, shown: str | None = None) -> tuple[str, bool]:
    """(format, gzipped) of a file, from ``given`` or its name; ``shown`` names it in an error."""
    lowered = name.lower()
    gzipped = lowered.endswith(".gz")
    if gzipped:
        lowered = lowered[:-3]
    if given is not None:
        return given, gzipped
    for suffix, fmt in _SUFFIX_FORMATS.items():
        if lowered.endswith(suffix):
            return fmt, gzipped
    raise DatasetError(
        f"cannot tell the format of {shown or name} from its name: set workload.dataset.format "
        f"({', '.join(DATASET_FORMATS)})",
        "workload.dataset.format",
    )


def parse_rows(
    data: bytes, origin: str, fmt: str, records_key: str | None = None
) -> Iterator[Row | MalformedRow]:
    """Rows of one file; a row that is not an object comes back as a ``MalformedRow``.

    A file that cannot be parsed at all raises ``DatasetError``.
    """
    if fmt == "parquet":
        yield from _parquet_rows(data, origin)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    if fmt == "jsonl":
        yield from _jsonl_rows(text, origin)
    elif fmt == "json":
        yield from _json_rows(text, origin, records_key)
    elif fmt == "csv":
        yield from _csv_rows(text, origin)
    else:  # pragma: no cover - the suite model allows only the formats above
        raise DatasetError(f"unknown format {fmt}", "workload.dataset.format")


def _jsonl_rows(text: str, origin: str) -> Iterator[Row | MalformedRow]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{origin}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield MalformedRow(where, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield MalformedRow(where, "each line must be a JSON object")
            continue
        yield Row(record, where)


def _json_rows(text: str, origin: str, records_key: str | None) -> Iterator[Row | MalformedRow]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{origin}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"
        ) from None
    if isinstance(document, dict):
        if records_key is not None:
            if not isinstance(document.get(records_key), list):
                raise DatasetError(
                    f"{origin}: has no list under {records_key!r}; keys: {', '.join(map(str, document))}",
                    "workload.dataset.records_key",
                )
            document = document[records_key]
        else:
            lists = [key for key, value in document.items() if isinstance(value, list)]
            if len(lists) != 1:
                raise DatasetError(
                    f"{origin}: a JSON object must hold exactly one list of records, it holds "
                    f"{len(lists)} ({', '.join(lists) or 'none'}): set workload.dataset.records_key",
                    "workload.dataset.records_key",
                )
            document = document[lists[0]]
    elif records_key is not None:
        raise DatasetError(
            f"{origin}: records_key applies to a JSON object, this is a list", "workload.dataset.records_key"
        )
    if not isinstance(document, list):
        raise DatasetError(f"{origin}: must be a list of objects or an object holding one")
    for index, record in enumerate(document, start=1):
        where = f"{origin}, item {index}"
        if isinstance(record, dict):
            yield Row(record, where)
        else:
            yield MalformedRow(where, f"must be a JSON object, is {type(record).__name__}")


def _csv_rows(text: str, origin: str) -> Iterator[Row | MalformedRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DatasetError(f"{origin}, line 1: not a CSV header ({exc})") from None
    start_line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield MalformedRow(f"{origin}, line {start_line}", f"not valid CSV ({exc})")
            start_line = reader.line_num + 1
            continue
        where = f"{origin}, line {start_line}"
        start_line = reader.line_num + 1
        if not values:
            continue
        if len(values) != len(header):
            yield MalformedRow(where, f"has {len(values)} values, the header names {len(header)}")
            continue
        yield Row(dict(zip(header, values, strict=True)), where)


def _parquet_rows(data: bytes, origin: str) -> Iterator[Row | MalformedRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{origin}: not a readable Parquet file ({exc})") from None
    for index, record in enumerate(table.to_pylist(), start=1):
        yield Row(record, f"{origin}, row {index}")


# ------------------------------------------------------------------------------------------- sources


def read_dataset(spec: DatasetSpec, base_dir: Path | None = None, token: str | None = None) -> LoadedDataset:
    """Every record of the dataset a suite names (up to ``max_records``), with its malformed rows.

    ``token`` is a Hugging Face token for a gated or private Hub dataset (the cloud passes the one its
    Secrets Manager reference holds); without it ``HF_TOKEN`` is used.
    """
    source = spec.source
    loaded = LoadedDataset(source=source, rows=[])
    digest = hashlib.sha256()
    for name, data, fmt_name in _source_files(spec, base_dir, token, loaded):
        digest.update(data)
        loaded.files.append(name)
        fmt, gzipped = file_format(fmt_name, spec.format, name)
        if gzipped:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{name}: not a readable gzip file ({exc})") from None
        for item in parse_rows(data, name, fmt, spec.records_key):
            if isinstance(item, MalformedRow):
                loaded.malformed.append(item)
                continue
            loaded.rows.append(item)
            if spec.max_records is not None and len(loaded.rows) >= spec.max_records:
                break
        if spec.max_records is not None and len(loaded.rows) >= spec.max_records:
            break
    loaded.content_sha256 = digest.hexdigest()
    if not loaded.rows:
        detail = (
            f"; {len(loaded.malformed)} malformed row(s), first: {loaded.malformed[0]}"
            if loaded.malformed
            else ""
        )
        raise DatasetError(f"dataset {source} has no records{detail}")
    return loaded


def _source_files(
    spec: DatasetSpec, base_dir: Path | None, token: str | None, loaded: LoadedDataset
) -> Iterator[tuple[str, bytes, str]]:
    """(name to show, bytes, name to tell the format by) of each file of the dataset, in order."""
    source = spec.source
    if source.startswith(BUILTIN_DATASET_PREFIX):
        name = source[len(BUILTIN_DATASET_PREFIX) :]
        if name not in BUILTIN_DATASETS:
            raise DatasetError(
                f"unknown built-in dataset {name!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}"
            )
        data = resources.files("fmbench.data").joinpath(BUILTIN_DATASETS[name]).read_bytes()
        yield source, data, BUILTIN_DATASETS[name]
    elif source.startswith(HUB_DATASET_PREFIX):
        yield from _hub_files(spec, token, loaded)
    elif source.startswith("s3://"):
        from fmbench import storage

        try:
            data = storage.read_bytes(source)
        except storage.StorageNotFoundError:
            raise DatasetError(f"dataset file not found: {source}") from None
        except (storage.StorageAccessError, storage.StorageUriError) as exc:
            raise DatasetError(str(exc)) from None
        yield source, data, source
    else:
        path = Path(source.removeprefix("file://")).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        yield str(path), _read_local_file(path), path.name


# A dataset is read whole into memory; past this size a path is far more likely a wrong one than a dataset.
MAX_DATASET_FILE_BYTES = 2 * 1024**3


def _read_local_file(path: Path) -> bytes:
    """The bytes of a local dataset file, refusing what is not a regular file (a folder; a device such as
    /dev/zero, which would be read forever) and what is larger than ``MAX_DATASET_FILE_BYTES``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise DatasetError(f"{path} is a folder, not a dataset file")
    if not stat.S_ISREG(mode):
        raise DatasetError(f"{path} is not a regular file (a device, pipe or socket)")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DATASET_FILE_BYTES + 1)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_DATASET_FILE_BYTES:
        raise DatasetError(f"{path} is larger than {MAX_DATASET_FILE_BYTES:,} bytes")
    return data


def _hub_files(
    spec: DatasetSpec, token: str | None, loaded: LoadedDataset
) -> Iterator[tuple[str, bytes, str]]:
    from fmbench.hub import HubError, dataset_listing, download

    repo_id = spec.source[len(HUB_DATASET_PREFIX) :]
    try:
        listing = dataset_listing(repo_id, spec.revision, token)
    except HubError as exc:
        raise DatasetError(str(exc)) from None
    loaded.revision = listing.commit
    names = hub_data_files(listing.files, listing.card_configs, spec.config, spec.split, spec.format)
    for name in names:
        try:
            path = download(
                repo_id,
                name,
                repo_type="dataset",
                revision=listing.commit,
                token=token,
                asked_revision=spec.revision or "",
            )
        except HubError as exc:
            raise DatasetError(str(exc)) from None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from None
        yield f"{spec.source}/{name}@{listing.commit[:12]}", data, name


def _is_data_file(name: str, fmt: str | None) -> bool:
    lowered = name.lower().removesuffix(".gz")
    if fmt is not None:
        return any(lowered.endswith(s) for s, f in _SUFFIX_FORMATS.items() if f == fmt)
    return any(lowered.endswith(suffix) for suffix in _SUFFIX_FORMATS)


def _in_split(name: str, split: str) -> bool:
    """The Hub's naming conventions: ``test/...``, ``data/test-0000-of-0001.parquet``, ``test.jsonl``."""
    *folders, file_name = name.split("/")
    if split in folders:
        return True
    stem = file_name.split(".", 1)[0]
    return stem == split or stem.startswith((f"{split}-", f"{split}_"))


def hub_data_files(
    files: tuple[str, ...],
    card_configs: tuple[dict[str, Any], ...],
    config: str | None,
    split: str | None,
    fmt: str | None = None,
) -> list[str]:
    """The data files of one config and split of a Hub dataset repository.

    The dataset card's ``configs`` (``data_files`` per split, glob patterns allowed) decide when present;
    otherwise the file names do: the config is a folder, the split a folder or the start of a file name.
    """
    wanted_split = split or DEFAULT_HUB_SPLIT
    if card_configs:
        names = [str(c.get("config_name", "default")) for c in card_configs]
        if config is None:
            chosen = [c for c in card_configs if c.get("default")] or [
                c for c in card_configs if c.get("config_name", "default") == "default"
            ]
            if not chosen and len(card_configs) == 1:
                chosen = list(card_configs)
            if not chosen:
                raise DatasetError(
                    f"the dataset has configs {', '.join(names)}: name one", "workload.dataset.config"
                )
        else:
            chosen = [c for c in card_configs if c.get("config_name", "default") == config]
            if not chosen:
                raise DatasetError(
                    f"no config {config!r}; the dataset has {', '.join(names)}", "workload.dataset.config"
                )
        patterns = _split_patterns(chosen[0].get("data_files"), wanted_split)
        if patterns is None:
            raise DatasetError(
                f"no split {wanted_split!r} in config {chosen[0].get('config_name', 'default')!r}; it has "
                f"{', '.join(_card_splits(chosen[0].get('data_files')))}",
                "workload.dataset.split",
            )
        selected = [
            n for n in files if any(fnmatch.fnmatchcase(n, p) for p in patterns) and _is_data_file(n, fmt)
        ]
    else:
        candidates = [n for n in files if _is_data_file(n, fmt)]
        if config is not None:
            candidates = [n for n in candidates if n.startswith(f"{config}/")]
            if not candidates:
                folders = sorted({posixpath.dirname(n).split("/")[0] for n in files if "/" in n})
                raise DatasetError(
                    f"no data files under a folder {config!r}; folders: {', '.join(folders) or 'none'}",
                    "workload.dataset.config",
                )
        selected = [n for n in candidates if _in_split(n, wanted_split)]
    if not selected:
        shown = ", ".join(files[:20]) + (", ..." if len(files) > 20 else "")
        raise DatasetError(
            f"no JSONL, JSON, CSV or Parquet files for split {wanted_split!r}"
            + (f" of config {config!r}" if config else "")
            + f"; the repository has: {shown or 'no files'}",
            "workload.dataset.split",
        )
    return sorted(selected)


def _split_patterns(data_files: Any, split: str) -> list[str] | None:
    if isinstance(data_files, str):
        return [data_files] if split == DEFAULT_HUB_SPLIT else None
    if isinstance(data_files, list) and all(isinstance(p, str) for p in data_files):
        return list(data_files) if split == DEFAULT_HUB_SPLIT else None
    if isinstance(data_files, list):
        for entry in data_files:
            if isinstance(entry, dict) and entry.get("split") == split:
                paths = entry.get("path")
                return [paths] if isinstance(paths, str) else [str(p) for p in paths or []]
    return None


def _card_splits(data_files: Any) -> list[str]:
    if isinstance(data_files, list) and data_files and all(isinstance(e, dict) for e in data_files):
        return [str(e.get("split")) for e in data_files]
    return [DEFAULT_HUB_SPLIT]
