"""The synthesized app through real validators: cfn-lint on the template, asl-validator on the state machine.

Both run for cdk.json's defaults and for a context with every option on (an existing VPC by ids, model
buckets, existing endpoints, a schedule), since options add and change resources.
"""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
from cfnlint.api import ManualArgs, lint
from template_queries import only

ROOT: Final = Path(__file__).resolve().parents[2]
ASL_VALIDATOR: Final = ROOT / "node_modules" / ".bin" / "asl-validator"
REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
PSEUDO: Final = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}


@pytest.fixture(params=["default", "every_option"])
def any_template(
    request: pytest.FixtureRequest, template_json: dict[str, Any], custom_template_json: dict[str, Any]
) -> dict[str, Any]:
    return template_json if request.param == "default" else custom_template_json


def test_cfn_lint_finds_no_error(any_template: dict[str, Any]) -> None:
    matches = lint(json.dumps(any_template), config=ManualArgs(regions=[REGION]))

    errors = [
        f"{m.rule.id} {'/'.join(map(str, m.path))}: {m.message}" for m in matches if m.rule.id[0] == "E"
    ]
    assert errors == []


def test_cfn_lint_reports_an_invalid_template() -> None:
    """Guards against a lint that passes because it checked nothing."""
    broken = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketNam": "x"}}}}

    matches = lint(json.dumps(broken), config=ManualArgs(regions=[REGION]))

    assert [m.rule.id for m in matches] == ["E3002"]


def _asl_validator() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: asl-validator (npm) cannot run")
    if not ASL_VALIDATOR.exists():
        pytest.fail(f"{ASL_VALIDATOR} is missing: run `make node_modules/.bin/asl-validator` (npm ci)")
    return ASL_VALIDATOR


def _validate(definition: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "definition.asl.json"
    path.write_text(json.dumps(definition), encoding="utf-8")
    return subprocess.run(
        [str(_asl_validator()), "--json-path", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_state_machine_definition_is_valid_amazon_states_language(
    any_template: dict[str, Any], tmp_path: Path
) -> None:
    _, state_machine = only(any_template, "AWS::StepFunctions::StateMachine")
    definition = json.loads(_Resolver(any_template).resolve(state_machine["DefinitionString"]))
    assert "Branches" in definition["States"]

    # asl-validator 4.0.0 takes every key named `Branches` for a Parallel state's list of branches
    # (JSONPath `$..Branches`) and crashes on the Map state of that name: it is checked under another.
    checked = _validate(_state_renamed(definition, "Branches", "BranchesMap"), tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_asl_validator_reports_an_invalid_definition(tmp_path: Path) -> None:
    """A Next naming no state: the validator must say so."""
    definition = {
        "StartAt": "Run",
        "States": {"Run": {"Type": "Pass", "Next": "Nowhere"}, "Done": {"Type": "Succeed"}},
    }

    checked = _validate(definition, tmp_path)

    assert checked.returncode != 0
    assert "Nowhere" in checked.stdout + checked.stderr


def _state_renamed(value: Any, old: str, new: str) -> Any:
    """The definition with state `old` called `new`, in `States` and in every transition to it."""
    if isinstance(value, list):
        return [_state_renamed(item, old, new) for item in value]
    if not isinstance(value, dict):
        return value
    renamed = {}
    for key, item in value.items():
        if key == "States" and isinstance(item, dict):
            renamed[key] = {
                (new if name == old else name): _state_renamed(s, old, new) for name, s in item.items()
            }
        elif key in ("StartAt", "Next", "Default") and item == old:
            renamed[key] = new
        else:
            renamed[key] = _state_renamed(item, old, new)
    return renamed


class _Resolver:
    """Intrinsics replaced by values of the shape a deployment would give them (ARNs, names, ids)."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.resources: dict[str, dict[str, Any]] = template["Resources"]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            name = value["Ref"]
            return PSEUDO[name] if name in PSEUDO else self._ref(name)
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            return self._attribute(logical_id, attribute)
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self.resolve(part)) for part in parts)
        return {key: self.resolve(item) for key, item in value.items()}

    def _ref(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = logical_id.lower()[:40]
        refs = {
            "AWS::Lambda::Function": name,
            "AWS::ECS::Cluster": name,
            "AWS::ECS::TaskDefinition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{name}:1",
            "AWS::EC2::Subnet": f"subnet-{logical_id.lower()[-8:]}",
            "AWS::EC2::SecurityGroup": f"sg-{logical_id.lower()[-8:]}",
            "AWS::Athena::WorkGroup": name,
            "AWS::Glue::Database": name,
            "AWS::S3::Bucket": name,
        }
        if kind not in refs:
            raise KeyError(f"no plausible Ref for {logical_id} ({kind})")
        return refs[kind]

    def _attribute(self, logical_id: str, attribute: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = logical_id.lower()[:40]
        arns = {
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::ECS::Cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        }
        if attribute == "GroupId" and kind == "AWS::EC2::SecurityGroup":
            return f"sg-{logical_id.lower()[-8:]}"
        if attribute != "Arn" or kind not in arns:
            raise KeyError(f"no plausible {attribute} for {logical_id} ({kind})")
        return arns[kind]
