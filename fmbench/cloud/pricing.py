"""The AWS Price List API (pricing:GetProducts, us-east-1 endpoint): the price table's source.

``fetch_price_table`` reads the on-demand products of SageMaker (hosting), EC2 (Linux, shared tenancy) and
Bedrock, page by page (NextToken), and hands the entries to the pure parsers of ``fmbench.pricing``.
``plan_price_table`` is the Plan step's choice: the API when asked to and reachable, else the bundled
table, with a note saying which and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from fmbench.cloud.aws import client as aws_client
from fmbench.pricing import (
    BEDROCK_SERVICE,
    EC2_SERVICE,
    PRICING_API_REGION,
    SAGEMAKER_SERVICE,
    PriceTable,
    bundled_table,
    table_from_price_lists,
)

PAGE_SIZE: Final = 100  # GetProducts' largest MaxResults


def _term(field: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field, "Value": value}


# Server-side filters: only what the table keeps, so that the pages are few.
SERVICE_FILTERS: Final[dict[str, list[dict[str, str]]]] = {
    SAGEMAKER_SERVICE: [],  # hosting products are picked out by the parser (component, usagetype)
    EC2_SERVICE: [
        _term("operatingSystem", "Linux"),
        _term("tenancy", "Shared"),
        _term("preInstalledSw", "NA"),
        _term("capacitystatus", "Used"),
    ],
    BEDROCK_SERVICE: [],
}


def pricing_client(endpoint_url: str | None = None, session: Any = None) -> Any:
    """A Price List client on the us-east-1 endpoint (it answers for every commercial region)."""
    if endpoint_url is None:
        return aws_client("pricing", PRICING_API_REGION, session)
    import boto3

    from fmbench.cloud.aws import retry_config

    maker = session or boto3
    return maker.client(
        "pricing", region_name=PRICING_API_REGION, endpoint_url=endpoint_url, config=retry_config()
    )


def price_list_entries(client: Any, service: str) -> Iterator[str]:
    """Every PriceList entry (a JSON string) of ``service`` under its filters, following NextToken."""
    request: dict[str, Any] = {
        "ServiceCode": service,
        "Filters": SERVICE_FILTERS.get(service, []),
        "FormatVersion": "aws_v1",
        "MaxResults": PAGE_SIZE,
    }
    while True:
        page = client.get_products(**request)
        yield from page.get("PriceList", [])
        token = page.get("NextToken")
        if not token:
            return
        request["NextToken"] = token


def fetch_price_table(client: Any, today: datetime | None = None) -> PriceTable:
    """The price table as the Price List API has it now."""
    return table_from_price_lists(
        sagemaker=price_list_entries(client, SAGEMAKER_SERVICE),
        ec2=price_list_entries(client, EC2_SERVICE),
        bedrock=price_list_entries(client, BEDROCK_SERVICE),
        as_of=(today or datetime.now(UTC)).strftime("%Y-%m-%d"),
    )


def api_errors() -> tuple[type[BaseException], ...]:
    """What a failed read of the API raises: botocore's errors, and ValueError for an answer that does not
    parse (fmbench.pricing.PriceListError, pydantic's ValidationError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, ValueError)


def plan_price_table(client: Any | None) -> tuple[PriceTable, str]:
    """The Plan step's table: the API's when a client is given and answers, else the bundled one; a note."""
    bundled = bundled_table()
    if client is None:
        return bundled, f"prices: the bundled table ({bundled.as_of})"
    try:
        table = fetch_price_table(client)
    except api_errors() as exc:  # the run still gets the bundled prices, with a note
        return bundled, (
            f"prices: the Price List API failed ({type(exc).__name__}: {exc}); "
            f"the bundled table ({bundled.as_of}) is used"
        )
    if not table.sagemaker and not table.bedrock:
        return bundled, "prices: the Price List API returned no prices; the bundled table is used"
    return table, f"prices: the Price List API ({table.as_of})"
