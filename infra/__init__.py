"""AWS CDK constructs for FMBench Flow: one module per concern, composed by `stack.FmbenchStack`."""
