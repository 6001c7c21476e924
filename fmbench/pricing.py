"""Instance prices: the suite's overrides, else an emulator profile's price, else the bundled table."""

from __future__ import annotations

from fmbench.ec2_prices import EC2_ON_DEMAND_USD_PER_HOUR

# SageMaker real-time inference, on-demand, US East (N. Virginia), USD per instance-hour, as listed on the
# Amazon SageMaker pricing page (2024-2025). Regions and later price changes differ: override them in the
# suite under pricing.instance_price_per_hour_usd.
SAGEMAKER_ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.24xlarge": 10.18,
    "ml.g5.48xlarge": 20.36,
    "ml.g6.xlarge": 1.0064,
    "ml.g6.2xlarge": 1.222,
    "ml.g6.12xlarge": 5.752,
    "ml.g6.48xlarge": 16.5536,
    "ml.inf2.xlarge": 0.99,
    "ml.inf2.8xlarge": 2.36,
    "ml.inf2.24xlarge": 7.79,
    "ml.inf2.48xlarge": 15.58,
    "ml.p4d.24xlarge": 37.688,
    "ml.p5.48xlarge": 113.068,
}


def instance_price_per_hour_usd(
    instance_type: str | None,
    overrides: dict[str, float] | None = None,
    profile_price_usd: float | None = None,
) -> float | None:
    """The hourly price to charge a branch, or None when it is unknown (costs are then left blank)."""
    if instance_type is not None and overrides and instance_type in overrides:
        return overrides[instance_type]
    if profile_price_usd is not None:
        return profile_price_usd
    if instance_type is None:
        return None
    if not instance_type.startswith("ml."):
        return EC2_ON_DEMAND_USD_PER_HOUR.get(instance_type)  # an ec2 target's type
    return SAGEMAKER_ON_DEMAND_USD_PER_HOUR.get(instance_type)
