"""moto 5.2 answers Service Quotas' ListServiceQuotas with "not implemented": this teaches it SageMaker's.

The plan step reads the "<instance type> for endpoint usage" quotas before deploying. moto's Service Quotas
knows only VPC defaults and has no ListServiceQuotas, so tests inject the quotas here: the method is added
to moto's response class for the duration of the context, which serves both ``mock_aws`` and an in-process
``ThreadedMotoServer`` (the workflow tests can use it as it is).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

from moto.servicequotas.responses import ServiceQuotasResponse


def _quota(instance_type: str, value: float, index: int) -> dict[str, Any]:
    return {
        "ServiceCode": "sagemaker",
        "ServiceName": "Amazon SageMaker",
        "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:sagemaker/L-TEST{index:04d}",
        "QuotaCode": f"L-TEST{index:04d}",
        "QuotaName": f"{instance_type} for endpoint usage",
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }


@contextlib.contextmanager
def sagemaker_endpoint_quotas(limits: Mapping[str, float]) -> Iterator[None]:
    """Within the context, ListServiceQuotas(ServiceCode=sagemaker) lists ``limits`` (instance type -> value),
    on one page, plus a quota of another kind that must not be mistaken for them."""
    quotas = [_quota(instance, value, index) for index, (instance, value) in enumerate(limits.items())]
    training = _quota("ml.g4dn.xlarge", 99, 9999)
    quotas.append({**training, "QuotaName": "ml.g4dn.xlarge for training job usage"})

    def list_service_quotas(self: ServiceQuotasResponse) -> str:
        service_code = json.loads(self.body).get("ServiceCode")
        return json.dumps({"Quotas": quotas if service_code == "sagemaker" else []})

    with mock.patch.object(ServiceQuotasResponse, "list_service_quotas", list_service_quotas, create=True):
        yield
