"""The environment variables Claimcheck reads: what a deployment (compose, Kubernetes) may set."""

from __future__ import annotations

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables

from service.settings import Settings

READ_BY_LIBRARIES = {"GOOGLE_APPLICATION_CREDENTIALS"}  # google-auth, for the GCS client


def variables_the_service_reads() -> set[str]:
    """Every setting, every OpenTelemetry SDK variable, and what the libraries it configures read."""
    otel = {
        str(value)
        for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
        for name, value in vars(module).items()
        if name.startswith("OTEL_") and isinstance(value, str)
    }
    return {name.upper() for name in Settings.model_fields} | otel | READ_BY_LIBRARIES
