"""EC2 on-demand prices of the instance types ec2 targets use, beside SageMaker's table (fmbench.pricing).

Linux, on-demand, US East (N. Virginia), USD per instance-hour, as listed on the Amazon EC2 On-Demand pricing
page (2025). EC2 bills per second from launch to termination (60 s minimum). Other regions and later
changes differ: override them in the suite under pricing.instance_price_per_hour_usd (keys without ml.).
"""

from __future__ import annotations

from typing import Final

EC2_ON_DEMAND_USD_PER_HOUR: Final[dict[str, float]] = {
    "g4dn.xlarge": 0.526,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048,
    "g6.12xlarge": 4.6016,
    "g6e.xlarge": 1.861,
    "g6e.12xlarge": 10.493,
    "inf2.xlarge": 0.7582,
    "inf2.8xlarge": 1.9679,
    "inf2.48xlarge": 12.9813,
    "m7i.2xlarge": 0.4032,
    "c7i.2xlarge": 0.357,
}
