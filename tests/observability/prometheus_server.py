"""A real Prometheus (the Debian package's binary) for the tests: compose's config pointed at loopback,
its HTTP API, and the Grafana dashboard's queries as Grafana would send them."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
PROMETHEUS_YML = OBSERVABILITY / "prometheus.yml"
ALERTS_YML = OBSERVABILITY / "alerts.yml"
DASHBOARD_JSON = OBSERVABILITY / "grafana" / "dashboards" / "claimcheck.json"
DATASOURCES_YML = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
INSTALL_HINT = (
    "the tests need Prometheus's `prometheus` and `promtool` on PATH: "
    "`apt-get install prometheus` on Debian or Ubuntu (README, 'Set-up')"
)


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; a clear error naming the package when it is missing."""
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: {INSTALL_HINT}")
    return found


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def generated_config(targets: Mapping[str, Sequence[str]], *, interval_seconds: float) -> dict[str, Any]:
    """observability/prometheus.yml (compose's) with each scrape job's targets replaced by the static
    `targets[job]` (none for a job not named) and the global intervals by `interval_seconds`.
    Nothing else differs: the same jobs, paths and rule files."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_YML)
    interval = f"{interval_seconds:g}s"
    config["global"] = {**config["global"], "scrape_interval": interval, "evaluation_interval": interval}
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": list(targets.get(job["job_name"], ()))}]
    return config


def without_targets_and_intervals(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config minus what `generated_config` may change: to compare the two."""
    stripped: dict[str, Any] = json.loads(json.dumps(config))
    for key in ("scrape_interval", "evaluation_interval"):
        stripped["global"].pop(key, None)
    for job in stripped["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job.pop("static_configs", None)
    return stripped


class PrometheusServer:
    """`prometheus` on a free loopback port with a config file in `workdir` (rule files beside it)."""

    def __init__(self, config: Mapping[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        for rule_file in config.get("rule_files", []):  # relative to the config, as in compose's mount
            (workdir / rule_file).symlink_to(PROMETHEUS_YML.parent / rule_file)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 30) -> PrometheusServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        """`data` of a successful answer from /api/v1/<path>."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {response.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector now."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query (what a Grafana panel sends), each series with its finite values."""
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        assert data["resultType"] == "matrix", data
        return [
            Series(
                labels=dict(item["metric"]),
                values=[float(value) for _, value in item["values"] if math.isfinite(float(value))],
            )
            for item in data["result"]
        ]

    def wait_for_targets(self, jobs: Sequence[str], timeout: float = 30) -> None:
        """Until every target of these scrape jobs has been scraped and is up."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.api("targets", state="active")["activeTargets"]
            health = {target["labels"]["job"]: target["health"] for target in active}
            if all(health.get(job) == "up" for job in jobs):
                return
            assert time.monotonic() < deadline, f"targets not up: {active}\n{self.log()}"
            time.sleep(0.2)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    values: list[float]
    """The finite values over the range (NaN, as 0/0 gives, is no data in Grafana)."""


# --- Grafana ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str
    """With Grafana's variables replaced."""


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def interpolate(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's `$name`, `${name}`, `${name:format}` and `[[name]]` replaced by `values[name]`."""

    def substitute(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"no value for ${name} in {expr}"
        return values[name]

    return _VARIABLE.sub(substitute, expr)


def prometheus_datasource_uids() -> set[str]:
    sources = load_yaml(DATASOURCES_YML)["datasources"]
    return {source["uid"] for source in sources if source["type"] == "prometheus"}


def dashboard_queries(values: Mapping[str, str]) -> tuple[list[PanelQuery], list[str]]:
    """Every PromQL expression of every panel, variables replaced; and the titles of the panels that
    query another data source (Jaeger)."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    prometheus = prometheus_datasource_uids()
    queries: list[PanelQuery] = []
    others: list[str] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        for target in panel["targets"]:
            if target["datasource"]["uid"] not in prometheus:
                others.append(panel["title"])
                continue
            queries.append(PanelQuery(panel["title"], target["refId"], interpolate(target["expr"], values)))
    return queries, others


def dashboard_variables() -> dict[str, str]:
    """The dashboard's own variables at their current values."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    return {
        variable["name"]: str(variable.get("current", {}).get("value", ""))
        for variable in dashboard["templating"]["list"]
    }
