"""Shared infra-tier fixtures: each app is built and synthesized once per session, since synth is slow."""

import os
from typing import Any

# Set before aws_cdk is imported: the jsii runtime reads it when it starts its Node process.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import pytest
from aws_cdk.assertions import Template
from custom_context import CUSTOM_CONTEXT

from infra.app import BuiltApp, build_app


@pytest.fixture(scope="session")
def built() -> BuiltApp:
    """The app exactly as `python app.py` builds it: cdk.json context, cdk-nag plugin registered."""
    return build_app()


@pytest.fixture(scope="session")
def template(built: BuiltApp) -> Template:
    # Synthesizes the app, so this also runs the cdk-nag plugin and fails on any unacknowledged finding.
    return Template.from_stack(built.stack)


@pytest.fixture(scope="session")
def template_json(template: Template) -> dict[str, Any]:
    as_json: dict[str, Any] = template.to_json()
    return as_json


@pytest.fixture(scope="session")
def custom() -> BuiltApp:
    """An app with every optional setting used (an existing VPC among them)."""
    return build_app(CUSTOM_CONTEXT)


@pytest.fixture(scope="session")
def custom_template_json(custom: BuiltApp) -> dict[str, Any]:
    as_json: dict[str, Any] = Template.from_stack(custom.stack).to_json()
    return as_json
