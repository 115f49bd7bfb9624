"""The claim finds the deliveries it leases by primary key: its cost does not grow with the deliveries
sent since the last vacuum, whose entries stay in the indexes of pending deliveries until then."""

from __future__ import annotations

from sqlalchemy import text

from service.db import read_pipelined, session_scope
from service.webhooks import repository
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.query_plans import nodes_on
from tests.webhooks.support import endpoint_of

SENT = 600
PENDING = 3


def test_the_claim_reads_no_index_entry_of_deliveries_already_sent(tenant: TenantHandle) -> None:
    with session_scope() as session:  # never committed: no deliverer of the session sees these
        endpoint = endpoint_of(session, tenant, "http://127.0.0.1:9/hook").id
        for index in range(SENT + PENDING):
            publish(session, tenant.id, "webhook.test", {"n": index}, endpoint_ids=[endpoint])
        session.flush()
        due = text(  # the transaction's now() is its start, before the deliveries were made
            "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'"
            " WHERE endpoint_id = :endpoint"
        )
        session.execute(due, {"endpoint": endpoint})
        sent = text(
            "UPDATE webhook_deliveries SET status = 'SUCCEEDED' WHERE id IN (SELECT id FROM"
            " webhook_deliveries WHERE endpoint_id = :endpoint ORDER BY id LIMIT :sent)"
        )
        session.execute(sent, {"endpoint": endpoint, "sent": SENT})
        parameters = {
            "limit": 100,
            "per_endpoint": 20,
            "max_in_flight": 200,
            "lease": 30.0,
            "endpoint_ids": [],
            "endpoint_counts": [],
            "tenant_ids": [],
            "tenant_counts": [],
        }
        explained = "EXPLAIN (ANALYZE, FORMAT JSON) " + repository._CLAIM
        [[row]] = read_pipelined(session, [(explained, parameters)])
        session.rollback()

    scans = nodes_on(row["QUERY PLAN"][0]["Plan"], "webhook_deliveries")
    leased = next(scan for scan in scans if scan["Node Type"] == "ModifyTable")
    assert leased["Actual Rows"] == PENDING
    walked = [scan for scan in scans if scan.get("Index Name") == "ix_webhook_deliveries_due"]
    assert walked == [], walked
