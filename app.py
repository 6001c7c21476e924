"""CDK entry point for FMBench Flow: builds the stack from cdk.json context and synthesizes it offline."""

from infra.app import build_app

if __name__ == "__main__":
    build_app().app.synth()
