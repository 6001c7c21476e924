"""FMBench Flow: benchmark foundation-model serving configurations for latency, throughput and price."""

__version__ = "0.1.0"
