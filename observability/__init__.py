"""OpenTelemetry setup and propagation helpers, plus the collector, Prometheus and Grafana configs.

- ``observability.tracing``: ``setup_tracing``, ``inject`` / ``extract`` / ``continue_trace`` for the W3C
  context, ``set_ids`` for ``job.id`` / ``tenant.id``, library instrumentation, ``flush``.
- ``observability.metrics``: every instrument, ``record_*`` helpers, the Prometheus server on its own port.
- ``observability.logging``: ``setup_logging``: JSON or text lines with trace and job ids, redacted.
- ``observability.redaction``: what counts as a secret in text; logs and server spans both use it.
"""
