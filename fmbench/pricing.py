"""Prices: the suite's overrides, else an emulator profile's price, else the price table.

The price table (``fmbench/data/prices.json``, or a file ``fmbench prices update`` wrote) holds on-demand
prices per region: SageMaker real-time inference instances (``ml.*`` GPU, Inferentia and Trainium types,
USD per instance-hour), EC2 Linux shared-tenancy instances (USD per hour) and Bedrock on-demand tokens (USD
per million input and output tokens, per model). This module is pure: it parses the AWS Price List API's
GetProducts entries into the table (``table_from_price_lists``) and reads the table; the API calls are in
``fmbench.cloud.pricing``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_REGION: Final = "us-east-1"
PRICING_API_REGION: Final = "us-east-1"  # the Price List API's endpoint serving every commercial region
SAGEMAKER_SERVICE: Final = "AmazonSageMaker"
EC2_SERVICE: Final = "AmazonEC2"
BEDROCK_SERVICE: Final = "AmazonBedrock"
TOKENS_PER_MILLION: Final = 1_000_000

# Accelerated SageMaker families the table keeps (GPU, Inferentia, Trainium): ml.g4dn, ml.g5, ml.p5en, ...
_ACCELERATED_ML_TYPE = re.compile(r"^ml\.(g\d+[a-z]*|p\d+[a-z]*(-[a-z0-9]+)?|inf\d+[a-z]*|trn\d+[a-z]*)\.")
# A Bedrock model id, inference profile id or ARN -> the foundation model id (anthropic.claude-...).
_PROFILE_PREFIX = re.compile(r"^(us|eu|apac|us-gov|ca|jp|au|global)\.")


class TokenPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m_usd: float = Field(ge=0, description="USD per million input tokens.")
    output_per_1m_usd: float = Field(ge=0, description="USD per million output tokens.")

    @property
    def input_per_1k_usd(self) -> float:
        return self.input_per_1m_usd / 1000

    @property
    def output_per_1k_usd(self) -> float:
        return self.output_per_1m_usd / 1000


class PriceTable(BaseModel):
    """On-demand prices per region; ``as_of`` and ``source`` say where and when they were read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: str = Field(description="Date the prices were read (YYYY-MM-DD).")
    source: str = Field(description="Where the prices come from, in words.")
    sagemaker: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Region -> ml.* instance type -> USD per instance-hour (hosting)."
    )
    ec2: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Region -> instance type -> USD per hour (Linux, shared tenancy)."
    )
    bedrock: dict[str, dict[str, TokenPrice]] = Field(
        default_factory=dict,
        description="Region -> Bedrock model name (as the Price List names it) -> price.",
    )
    bedrock_model_names: dict[str, str] = Field(
        default_factory=dict, description="Bedrock model id -> the model's name in the Price List."
    )

    def instance_price(self, instance_type: str, region: str | None = None) -> float | None:
        """USD per hour of a SageMaker ``ml.*`` type (else an EC2 type) in ``region`` (default us-east-1)."""
        prices = self.sagemaker if instance_type.startswith("ml.") else self.ec2
        return prices.get(region or DEFAULT_REGION, {}).get(instance_type)

    def token_price(self, model_id: str, region: str | None = None) -> TokenPrice | None:
        """On-demand token prices of a Bedrock model (id, inference profile id or ARN) in ``region``."""
        name = self.bedrock_model_names.get(foundation_model_id(model_id))
        if name is None:
            return None
        return self.bedrock.get(region or DEFAULT_REGION, {}).get(name)


def foundation_model_id(model_id: str) -> str:
    """An inference profile ARN or id (``us.anthropic.claude-x``) -> the model id (``anthropic.claude-x``)."""
    tail = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    return _PROFILE_PREFIX.sub("", tail)


BUNDLED_TABLE_FILE: Final = "prices.json"


@cache
def bundled_table() -> PriceTable:
    """The table shipped with the package (fmbench/data/prices.json)."""
    text = resources.files("fmbench").joinpath("data", BUNDLED_TABLE_FILE).read_text(encoding="utf-8")
    return PriceTable.model_validate_json(text)


def read_table(path: str | Path) -> PriceTable:
    return PriceTable.model_validate_json(Path(path).read_text(encoding="utf-8"))


def write_table(table: PriceTable, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(table.model_dump(mode="json"), indent=1, sort_keys=True)
    target.write_text(text + "\n", encoding="utf-8")
    return target


def instance_price_per_hour_usd(
    instance_type: str | None,
    overrides: dict[str, float] | None = None,
    profile_price_usd: float | None = None,
    region: str | None = None,
    table: PriceTable | None = None,
) -> float | None:
    """The hourly price to charge a branch, or None when it is unknown (costs are then left blank)."""
    if instance_type is not None and overrides and instance_type in overrides:
        return overrides[instance_type]
    if profile_price_usd is not None:
        return profile_price_usd
    if instance_type is None:
        return None
    return (table or bundled_table()).instance_price(instance_type, region)


# ------------------------------------------------------------------------ Price List API entries


class PriceListError(ValueError):
    """A GetProducts entry that is not a price list product (a field path says where)."""


def _on_demand_dimensions(product: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    terms = product.get("terms", {}).get("OnDemand", {})
    return [dim for term in terms.values() for dim in term.get("priceDimensions", {}).values()]


def _usd(dimension: Mapping[str, Any]) -> float | None:
    value = dimension.get("pricePerUnit", {}).get("USD")
    try:
        return float(value) if value is not None else None
    except ValueError as exc:
        raise PriceListError(f"pricePerUnit.USD: not a number: {value!r}") from exc


def _hourly(product: Mapping[str, Any]) -> float | None:
    """The USD per hour of a product's on-demand terms (the dimension priced per Hrs), None when free."""
    for dimension in _on_demand_dimensions(product):
        if str(dimension.get("unit", "")).lower() in {"hrs", "hour", "hours"}:
            price = _usd(dimension)
            if price is not None and price > 0:
                return price
    return None


def _per_million_tokens(product: Mapping[str, Any]) -> float | None:
    """USD per million tokens of a Bedrock product priced per 1K or 1M tokens (or per token)."""
    for dimension in _on_demand_dimensions(product):
        unit = str(dimension.get("unit", "")).lower().replace(" ", "")
        price = _usd(dimension)
        if price is None:
            continue
        scale = {"1ktokens": 1000, "1mtokens": 1, "tokens": 1e-6, "token": 1e-6}.get(unit)
        if scale is not None:
            return round(price * scale, 9)
    return None


def _attributes(product: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    attributes = product.get("product", {}).get("attributes")
    if not isinstance(attributes, Mapping):
        raise PriceListError(f"PriceList[{index}].product.attributes: missing")
    return attributes


def _entries(price_list: Iterable[str | Mapping[str, Any]]) -> Iterable[tuple[int, Mapping[str, Any]]]:
    for index, entry in enumerate(price_list):
        try:
            product = json.loads(entry) if isinstance(entry, str) else entry
        except json.JSONDecodeError as exc:
            raise PriceListError(f"PriceList[{index}]: not JSON: {exc}") from exc
        if not isinstance(product, Mapping):
            raise PriceListError(f"PriceList[{index}]: not an object")
        yield index, product


def sagemaker_prices(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Region -> ml.* accelerated type -> USD/h of the real-time inference (hosting) products."""
    table: dict[str, dict[str, float]] = {}
    for index, product in _entries(price_list):
        attributes = _attributes(product, index)
        instance_type = str(attributes.get("instanceName") or attributes.get("instanceType") or "")
        hosting = attributes.get("component") == "Hosting" or "-Host:" in str(attributes.get("usagetype", ""))
        region = attributes.get("regionCode")
        if not hosting or not region or not _ACCELERATED_ML_TYPE.match(instance_type):
            continue
        price = _hourly(product)
        if price is not None:
            table.setdefault(str(region), {})[instance_type] = price
    return table


def ec2_prices(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Region -> instance type -> USD/h of on-demand Linux, shared tenancy, no pre-installed software."""
    table: dict[str, dict[str, float]] = {}
    for index, product in _entries(price_list):
        attributes = _attributes(product, index)
        wanted = (
            attributes.get("operatingSystem") == "Linux"
            and attributes.get("tenancy") == "Shared"
            and attributes.get("preInstalledSw", "NA") == "NA"
            and attributes.get("capacitystatus", "Used") == "Used"
        )
        region, instance_type = attributes.get("regionCode"), attributes.get("instanceType")
        if not wanted or not region or not instance_type:
            continue
        price = _hourly(product)
        if price is not None:
            table.setdefault(str(region), {})[str(instance_type)] = price
    return table


def bedrock_prices(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, dict[str, TokenPrice]]:
    """Region -> model name -> on-demand input and output token prices (models with both only)."""
    halves: dict[tuple[str, str], dict[str, float]] = {}
    for index, product in _entries(price_list):
        attributes = _attributes(product, index)
        region, model = attributes.get("regionCode"), attributes.get("model")
        kind = str(attributes.get("inferenceType", "")).lower()
        usage = str(attributes.get("usagetype", "")).lower()
        if not region or not model or "batch" in usage or "provisioned" in usage or "cache" in usage:
            continue
        side = "input" if kind.startswith("input") else "output" if kind.startswith("output") else None
        price = _per_million_tokens(product)
        if side is None or price is None:
            continue
        halves.setdefault((str(region), str(model)), {})[side] = price
    table: dict[str, dict[str, TokenPrice]] = {}
    for (region, model), sides in sorted(halves.items()):
        if "input" in sides and "output" in sides:
            table.setdefault(region, {})[model] = TokenPrice(
                input_per_1m_usd=sides["input"], output_per_1m_usd=sides["output"]
            )
    return table


def table_from_price_lists(
    sagemaker: Iterable[str | Mapping[str, Any]],
    ec2: Iterable[str | Mapping[str, Any]],
    bedrock: Iterable[str | Mapping[str, Any]],
    as_of: str,
    model_names: Mapping[str, str] | None = None,
) -> PriceTable:
    """A price table of GetProducts entries of the three services (``model_names``: Bedrock id -> name,
    by default the bundled table's)."""
    return PriceTable(
        as_of=as_of,
        source="AWS Price List API (pricing:GetProducts), on-demand",
        sagemaker=sagemaker_prices(sagemaker),
        ec2=ec2_prices(ec2),
        bedrock=bedrock_prices(bedrock),
        bedrock_model_names=dict(
            model_names if model_names is not None else bundled_table().bedrock_model_names
        ),
    )
