"""`fmbench prices update` against recorded Price List API pages (a loopback stand-in: moto has no pricing
service): every page is read (NextToken), the services' filters are sent, and the table holds the hosting
prices of accelerated ml.* types, EC2 Linux prices and Bedrock on-demand token prices per region."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pricing_standin import pricing_standin, recorded_pages

from fmbench import cli
from fmbench.cloud.pricing import plan_price_table, pricing_client
from fmbench.pricing import PriceTable, read_table


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """Offline dummy credentials (conftest)."""


def test_prices_update_reads_every_page_and_writes_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prices.json"
    with pricing_standin() as api:
        code = cli.main(["prices", "update", "--out", str(out), "--endpoint-url", api.url])
    assert code == 0, capsys.readouterr().err
    # every recorded page of every service was asked for, each later page with the previous page's token
    for service in ("AmazonSageMaker", "AmazonEC2", "AmazonBedrock"):
        asked = [r for r in api.requests if r["ServiceCode"] == service]
        pages = recorded_pages(service)
        assert len(asked) == len(pages)
        assert [r.get("NextToken") for r in asked] == [None] + [p["NextToken"] for p in pages[:-1]]
    ec2_filters = {
        f["Field"]: f["Value"] for f in api.requests[len(recorded_pages("AmazonSageMaker"))]["Filters"]
    }
    assert ec2_filters == {
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }

    table = read_table(out)
    assert table.source.startswith("AWS Price List API")
    # hosting of accelerated types only: the training price and the CPU type are left out
    assert table.sagemaker == {
        "us-east-1": {
            "ml.g5.2xlarge": 1.515,
            "ml.inf2.xlarge": 0.99,
            "ml.trn1.32xlarge": 24.725,
            "ml.p5.48xlarge": 113.068,
        },
        "eu-west-1": {"ml.g5.2xlarge": 1.6968, "ml.g6.12xlarge": 6.39},
        "ap-northeast-1": {"ml.g6e.2xlarge": 3.9801},
    }
    assert table.ec2["us-east-1"] == {"g5.2xlarge": 1.212, "inf2.xlarge": 0.7582, "trn1.2xlarge": 1.34375}
    assert table.ec2["eu-west-1"] == {"g5.2xlarge": 1.362}
    # per 1K tokens in the API, per million in the table; the batch price is not on-demand
    haiku = table.bedrock["us-east-1"]["Claude 3 Haiku"]
    assert (haiku.input_per_1m_usd, haiku.output_per_1m_usd) == (0.25, 1.25)
    assert table.bedrock["eu-west-1"]["Claude 3 Haiku"].output_per_1m_usd == 1.25
    nova = table.token_price("us.amazon.nova-micro-v1:0", "us-east-1")
    assert nova is not None and (nova.input_per_1m_usd, nova.output_per_1m_usd) == (0.035, 0.14)
    assert table.instance_price("ml.g5.2xlarge", "eu-west-1") == 1.6968
    assert "wrote" in capsys.readouterr().out
    assert PriceTable.model_validate(json.loads(out.read_text())) == table


def test_a_refused_api_writes_nothing_and_the_plan_falls_back_to_the_bundled_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prices.json"
    with pricing_standin() as api:
        api.fail_with = "AccessDeniedException"
        assert cli.main(["prices", "update", "--out", str(out), "--endpoint-url", api.url]) == 1
        table, note = plan_price_table(pricing_client(api.url))
    assert not out.exists()
    assert "refused by the stand-in" in capsys.readouterr().err
    assert table.source.startswith("bundled")
    assert "Price List API failed" in note and "bundled table" in note


def test_the_plan_reads_the_api_when_it_answers() -> None:
    with pricing_standin() as api:
        table, note = plan_price_table(pricing_client(api.url))
    assert note.startswith("prices: the Price List API")
    assert table.instance_price("ml.g6e.2xlarge", "ap-northeast-1") == 3.9801


def test_a_suite_with_from_api_is_priced_from_the_api_and_falls_back_when_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fmbench.local import run_price_table
    from fmbench.plan import plan_suite
    from fmbench.suite import validate_suite_data

    data = {
        "name": "p",
        "targets": [
            {
                "name": "e",
                "platform": "emulator",
                "instance_type": "ml.g5.2xlarge",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4},
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
        "pricing": {"from_api": True},
    }
    suite = validate_suite_data(data)
    with pricing_standin() as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", api.url)  # botocore's per-service endpoint setting
        table, note = run_price_table(suite)
        assert table is not None and note is not None and note.startswith("prices: the Price List API")
        assert table.instance_price("ml.g5.2xlarge", "eu-west-1") == 1.6968
        (spec,) = plan_suite(suite, storage_root="/tmp/unused", run_id="r", prices=table).branches
        assert spec.instance_price_per_hour_usd == 1.515  # the API's us-east-1 price
        api.fail_with = "ExpiredTokenException"
        table, note = run_price_table(suite)
    assert table is not None and table.source.startswith("bundled")
    assert note is not None and "ExpiredTokenException" in note and "bundled table" in note
    assert run_price_table(
        suite.model_copy(update={"pricing": suite.pricing.model_copy(update={"from_api": False})})
    ) == (
        None,
        None,
    )
