"""Token counting shared by the payload builder, the load engine and the emulator.

The default tokenizer ("simple") needs no model files: it counts each run of word characters and each
punctuation mark as one token. That keeps the product usable offline and makes the emulator and the
client agree exactly. A model's own tokenizer is named with ``hf:``: ``hf:MODEL_ID[@REVISION]`` loads the
model's ``tokenizer.json`` from the Hugging Face Hub, ``hf:PATH`` a local ``tokenizer.json`` or a folder
holding one, ``hf:s3://bucket/key`` one in S3 (a key not ending in ``.json`` is a folder). Bins, prompt
counts and synthetic prompt lengths are then in the model's tokens.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
HF_PREFIX = "hf:"
TOKENIZER_FILE = "tokenizer.json"
_HUB_MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(@[^\s@]+)?$")


class TokenizerError(ValueError):
    """A tokenizer named in a suite cannot be loaded."""


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of ``text``, in order."""
        ...

    def ids(self, text: str) -> list[Any]:
        """The tokens of ``text`` as values that compare equal exactly when the tokens are the same."""
        ...

    def words(self) -> list[str]:
        """Plain words of the tokenizer's vocabulary, to make synthetic text of."""
        ...


# A small vocabulary for synthetic text when the tokenizer has no word list of its own.
_WORDS_TEXT = """
able about above across after again against air all almost along also always among animal answer area
around ask away back ball base bear beauty became become been before began begin behind being below best
better between big bird black blue boat body book both bottom box boy bring brought build built busy
call came can car care carry case cat cause center certain change check child children city class clear
close cold color come common complete contain control cook cool copy corner correct cost could count
country course cover cross cry current cut dark day deep develop did direct discover distance does dog
door done down draw dream drive dry during each early earth east easy eat edge effect egg eight energy
enough enter even ever every example eye face fact fall family far farm fast father feel feet few field
figure fill final find fine fire first fish five floor flower fly follow food foot force forest form
found four free friend front full game garden gave general get girl give glass gold good got govern
grass great green ground group grow half hand happen happy hard have head hear heard heat heavy held
help here high hill hold home hope horse hot hour house however hundred idea inch island just keep kept
kind king knew know land language large last late laugh lead learn leave left less letter level light
like line list listen little live long look lost love low machine made main make many map mark market
matter mean measure meet metal middle might mile mind minute miss money moon more morning most mother
mountain move much music must name nation near need never new next night north note nothing notice
number object ocean off office often old once only open order other page paper part pass past pattern
people perhaps person picture piece place plain plan plant play point port pose power press problem
produce product pull push quick quiet rain ran reach read ready real record red region remember rest
result river road rock room round rule run safe said sail same sand save saw say school science sea
season second seed seem self sentence serve set several shape share ship shore short show side sign
simple since sing size sky sleep slow small snow soft soil some song soon sound south space speak
special spell spring square stand star start state stay step still stone stood stop store story street
strong study such summer sun sure surface system table tail take talk teach tell ten test than thing
think third though thought three through time tiny together told took tool top toward town travel tree
true try turn two under unit until upon usual valley very voice vowel wait walk wall warm watch water
wave weather week weight well went west wheel while white whole wide wild will wind window winter wish
with wonder wood word work world write year yellow young
"""
_FALLBACK_WORDS = tuple(_WORDS_TEXT.split())


class SimpleTokenizer:
    """Words and punctuation marks, one token each."""

    name = "simple"

    def count(self, text: str) -> int:
        return len(_TOKEN_PATTERN.findall(text))  # a third of the time of counting finditer's matches

    def split(self, text: str) -> list[str]:
        return _TOKEN_PATTERN.findall(text)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _TOKEN_PATTERN.finditer(text)]

    def ids(self, text: str) -> list[Any]:
        return list(_TOKEN_PATTERN.findall(text))

    def words(self) -> list[str]:
        return list(_FALLBACK_WORDS)


class HuggingFaceTokenizer:
    """A ``tokenizer.json`` (the format of the ``tokenizers`` package), counted without special tokens.

    Special tokens (BOS, chat-template markers) are the server's to add; the counts here are those of
    the text sent, which is what bins and synthetic prompt lengths are about.
    """

    def __init__(self, tokenizer_json: str, name: str) -> None:
        from tokenizers import Tokenizer as _HFTokenizer

        try:
            self._tokenizer = _HFTokenizer.from_str(tokenizer_json)
        except Exception as exc:  # noqa: BLE001 - the Rust parser raises plain Exceptions for every bad file
            raise TokenizerError(f"{name}: not a valid tokenizer.json ({exc})") from None
        self.name = name
        self._words: list[str] | None = None

    @classmethod
    def from_file(cls, path: Path, name: str | None = None) -> HuggingFaceTokenizer:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"cannot read {path}: {exc}") from None
        return cls(text, name or f"hf:{path}")

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def ids(self, text: str) -> list[Any]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def words(self) -> list[str]:
        """Vocabulary entries that decode to a plain word of 2-12 ASCII letters, in id order."""
        if self._words is None:
            vocabulary = self._tokenizer.get_vocab(with_added_tokens=False)
            found: dict[str, None] = {}
            for token_id in sorted(vocabulary.values()):
                word = self._tokenizer.decode([token_id]).strip()
                if 2 <= len(word) <= 12 and word.isascii() and word.isalpha():
                    found.setdefault(word, None)
            self._words = list(found) if len(found) >= 50 else list(_FALLBACK_WORDS)
        return self._words


def check_tokenizer_spec(spec: str) -> str:
    """Validate a tokenizer name without loading it; returns the spec."""
    if spec == "simple":
        return spec
    if spec.startswith(HF_PREFIX) and len(spec) > len(HF_PREFIX):
        rest = spec[len(HF_PREFIX) :]
        if rest.startswith("s3://"):
            from fmbench.storage import StorageUriError, split_s3_uri

            try:
                _bucket, key = split_s3_uri(rest)
            except StorageUriError as exc:
                raise TokenizerError(str(exc)) from None
            if not key:
                raise TokenizerError("hf:s3://... needs a key: s3://bucket/path/tokenizer.json or a folder")
            return spec
        if _is_local_path(rest) or _HUB_MODEL_PATTERN.match(rest):
            return spec
        raise TokenizerError(
            f"{rest!r} is neither a Hub model id (OWNER/NAME[@REVISION]) nor a path (./, /, ~ or *.json)"
        )
    raise TokenizerError(
        "must be 'simple', 'hf:MODEL_ID[@REVISION]', 'hf:/path/to/tokenizer.json' (or a folder) or "
        "'hf:s3://bucket/key'"
    )


def _is_local_path(rest: str) -> bool:
    return rest.startswith(("/", "./", "../", "~")) or rest.endswith(".json") or rest in (".", "..")


def load_tokenizer(spec: str, *, base_dir: Path | None = None, token: str | None = None) -> Tokenizer:
    """The tokenizer a suite names; ``TokenizerError`` saying why when it cannot be had.

    A relative path is relative to ``base_dir`` (the suite's folder) when given. ``token`` is for gated or
    private Hub models; without it ``HF_TOKEN`` is used.
    """
    check_tokenizer_spec(spec)
    if spec == "simple":
        return SimpleTokenizer()
    rest = spec[len(HF_PREFIX) :]
    if rest.startswith("s3://"):
        return _from_s3(rest, spec)
    if _is_local_path(rest):
        path = Path(rest).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        return HuggingFaceTokenizer.from_file(path, spec)
    from fmbench.hub import HubError, download

    repo_id, _, revision = rest.partition("@")
    try:
        path = download(repo_id, TOKENIZER_FILE, repo_type="model", revision=revision or None, token=token)
    except HubError as exc:
        raise TokenizerError(str(exc)) from None
    return HuggingFaceTokenizer.from_file(path, spec)


def _from_s3(uri: str, spec: str) -> HuggingFaceTokenizer:
    from fmbench import storage

    if not uri.endswith(".json"):
        uri = f"{uri.rstrip('/')}/{TOKENIZER_FILE}"
    try:
        data = storage.read_bytes(uri)
    except storage.StorageNotFoundError:
        raise TokenizerError(f"tokenizer file not found: {uri}") from None
    except (storage.StorageAccessError, storage.StorageUriError) as exc:
        raise TokenizerError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenizerError(f"{uri}: not a valid tokenizer.json (not UTF-8 text)") from None
    return HuggingFaceTokenizer(text, spec)


@lru_cache(maxsize=8)
def get_tokenizer(spec: str = "simple", base_dir: Path | None = None) -> Tokenizer:
    """``load_tokenizer`` once per spec and folder: the load engine counts every answer with it."""
    return load_tokenizer(spec, base_dir=base_dir)
