"""OpenTelemetry setup and propagation helpers."""
