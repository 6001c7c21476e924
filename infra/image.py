"""The product image (runner_image/Dockerfile, repository root as context) for the runner and the Lambdas."""

from pathlib import Path
from typing import Final

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DOCKERFILE: Final = "runner_image/Dockerfile"
RUNNER_TARGET: Final = "runner"
LAMBDA_TARGET: Final = "lambda"

# `cdk synth` copies the build context into the cloud assembly and fingerprints every file in it. The
# repository's /.dockerignore (an allow-list, read by CDK as by `docker build`) keeps that to what the image
# needs; CDK re-includes only a Dockerfile at the context root, so the one in runner_image/ is let back in
# here, or the staged context would lack it when `cdk deploy` builds the image.
BUILD_CONTEXT_EXCLUDE: Final = [f"!{DOCKERFILE}"]


def build_image(scope: Construct, construct_id: str, *, target: str) -> ecr_assets.DockerImageAsset:
    """One stage of the product image as a CDK asset.

    Synth only stages the context; the image is built and pushed by `cdk deploy` (cdk-assets), so synth
    needs no Docker daemon. Both stages share one build context, so Docker's layer cache serves the second.
    """
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(REPO_ROOT),
        file=DOCKERFILE,
        target=target,
        exclude=BUILD_CONTEXT_EXCLUDE,
        ignore_mode=IgnoreMode.DOCKER,
        # Fargate and the Lambda functions below run on x86_64; building for it explicitly keeps an arm64
        # workstation from pushing an image neither can start.
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
