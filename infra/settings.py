"""Typed, validated view of the `fmbench:*` CDK context the app is built from."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

STACK_NAME_KEY: Final = "fmbench:stackName"
RECORDS_RETENTION_DAYS_KEY: Final = "fmbench:recordsRetentionDays"
MAX_CONCURRENT_BRANCHES_KEY: Final = "fmbench:maxConcurrentBranches"
ATHENA_BYTES_SCANNED_CUTOFF_KEY: Final = "fmbench:athenaBytesScannedCutoff"

# Athena refuses a per-query data usage control below 10 MB.
ATHENA_MIN_BYTES_SCANNED_CUTOFF: Final = 10_000_000
# CloudFormation stack names: a letter, then letters, digits and hyphens, at most 128 characters.
_STACK_NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")


class ContextError(ValueError):
    """A context value is missing or out of range; the message names the context key."""


@dataclass(frozen=True, kw_only=True)
class FmbenchSettings:
    """Parsed once at the app's edge so constructs receive plain, checked values and never read context."""

    stack_name: str
    records_retention_days: int
    max_concurrent_branches: int
    athena_bytes_scanned_cutoff: int

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> "FmbenchSettings":
        """Build from a context lookup such as `app.node.try_get_context`.

        Values given on the command line (`cdk synth -c key=value`) arrive as strings, so numbers are
        accepted as int or as a decimal string.
        """
        stack_name = get(STACK_NAME_KEY)
        if not isinstance(stack_name, str) or not _STACK_NAME_PATTERN.fullmatch(stack_name):
            raise ContextError(
                f"{STACK_NAME_KEY}: must be a CloudFormation stack name "
                f"(letter, then letters, digits, hyphens; at most 128), got {stack_name!r}"
            )
        return cls(
            stack_name=stack_name,
            records_retention_days=_int_at_least(get, RECORDS_RETENTION_DAYS_KEY, 1),
            max_concurrent_branches=_int_at_least(get, MAX_CONCURRENT_BRANCHES_KEY, 1),
            athena_bytes_scanned_cutoff=_int_at_least(
                get, ATHENA_BYTES_SCANNED_CUTOFF_KEY, ATHENA_MIN_BYTES_SCANNED_CUTOFF
            ),
        )


def _int_at_least(get: Callable[[str], Any], key: str, minimum: int) -> int:
    raw = get(key)
    # bool is an int subclass; `true` for a day count is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {raw!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {value}")
    return value
