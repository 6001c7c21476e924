"""Shared infra-tier fixtures: the app is built and synthesized once per session, since synth is slow."""

import os

# Set before aws_cdk is imported: the jsii runtime reads it when it starts its Node process.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import pytest
from aws_cdk.assertions import Template

from infra.app import BuiltApp, build_app


@pytest.fixture(scope="session")
def built() -> BuiltApp:
    """The app exactly as `python app.py` builds it: cdk.json context, cdk-nag plugin registered."""
    return build_app()


@pytest.fixture(scope="session")
def template(built: BuiltApp) -> Template:
    # Synthesizes the app, so this also runs the cdk-nag plugin and fails on any unacknowledged finding.
    return Template.from_stack(built.stack)
