"""The AWS side of a run: SageMaker endpoints, the workflow's steps and their contracts, S3 and clients."""
