"""Builds the CDK app from context so `app.py`, `cdk synth` and the tests all build the same thing."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.settings import FmbenchSettings
from infra.stack import FmbenchStack

CDK_JSON: Final = Path(__file__).resolve().parent.parent / "cdk.json"


@dataclass(frozen=True)
class BuiltApp:
    """Handles for entry points and tests, so nobody has to find the stack by walking the construct tree."""

    app: App
    stack: FmbenchStack
    settings: FmbenchSettings


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The `context` block of cdk.json.

    The CDK CLI passes cdk.json context to the app itself, but `python app.py` and the tests do not go
    through the CLI, so the defaults are read here to make every entry point see the same values.
    """
    context = json.loads(path.read_text(encoding="utf-8")).get("context", {})
    if not isinstance(context, dict):
        raise ValueError(f"{path}: 'context' must be an object")
    return context


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> BuiltApp:
    """Build the app with cdk.json's context overlaid by `context`.

    Context given to the CLI (`cdk synth -c key=value`) still wins over both: CDK ranks CLI context
    above the context passed to `App`.
    """
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    settings = FmbenchSettings.from_context(app.node.get_all_context())
    stack = FmbenchStack(app, settings.stack_name, settings=settings)
    # cdk-nag 3 is a policy-validation plugin, not an Aspect: any unacknowledged finding fails synthesis.
    # Acknowledge on the specific construct with the bare rule id,
    # `Validations.of(construct).acknowledge(Acknowledgment(id="AwsSolutions-S1", reason=...))`; the
    # `AwsSolutions::AwsSolutions-S1` form the CLI suggests passes synth but not the pack's own
    # `validate_scope`, which tests/infra runs to name findings.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return BuiltApp(app=app, stack=stack, settings=settings)
