"""The SDK is what its sources give: the schema file is the server's, and the generated packages are
what ariadne-codegen makes of it and the operations (`make client` regenerates both)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from service.schema import schema

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "service" / "client"
CODEGEN = Path(os.environ.get("ARIADNE_CODEGEN", ROOT / ".venv" / "codegen" / "bin" / "ariadne-codegen"))


def test_the_checked_in_schema_is_the_one_the_server_serves() -> None:
    assert (CLIENT / "schema.graphql").read_text() == schema.as_str() + "\n", (
        "schema drift: run `make client`"
    )


@pytest.mark.parametrize("package", ["generated_async", "generated_sync"])
def test_the_checked_in_sdk_is_what_ariadne_codegen_generates(package: str, tmp_path: Path) -> None:
    assert CODEGEN.exists(), f"{CODEGEN} is missing: `make install` builds it"
    flavour = package.removeprefix("generated_")
    config = (CLIENT / f"codegen-{flavour}.toml").read_text()
    moved = config.replace('target_package_path = "service/client"', f'target_package_path = "{tmp_path}"')
    assert moved != config
    (tmp_path / "codegen.toml").write_text(moved)

    subprocess.run(
        [str(CODEGEN), "client", "--config", str(tmp_path / "codegen.toml")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )

    fresh = {path.name: path.read_text() for path in (tmp_path / package).glob("*.py")}
    checked_in = {path.name: path.read_text() for path in (CLIENT / package).glob("*.py")}
    assert fresh == checked_in, "the SDK differs from what its schema and operations give: run `make client`"
