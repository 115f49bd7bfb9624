"""Reading Postgres's EXPLAIN (FORMAT JSON) plans in tests."""

from __future__ import annotations

from typing import Any


def nodes_on(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """Every node of the plan (a "Plan" object, its subplans and CTEs included) that reads or writes
    the relation."""
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += nodes_on(child, relation)
    return found
