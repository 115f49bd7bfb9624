"""An endpoint form's delivery settings (rate limit, timeout, retry schedule): read from the posted
fields, and the API's errors about them told in the form's words."""

from __future__ import annotations

import math
import re

from service.errors import ClaimcheckError, ValidationError
from service.portal.web import Form
from service.webhooks.models import WebhookEndpoint
from service.webhooks.retry import (
    MAX_SCHEDULE_STEP_SECONDS,
    MAX_SCHEDULE_STEPS,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
)
from service.webhooks.service import MAX_RATE_PER_SECOND, MIN_RATE_PER_SECOND, DeliveryPolicy

RATE = "rate_limit_per_second"
TIMEOUT = "timeout_seconds"
SCHEDULE = "retry_schedule"

LABELS = {
    RATE: "Rate limit (deliveries a second)",
    TIMEOUT: "Timeout (seconds)",
    SCHEDULE: "Retry schedule (seconds)",
}
"""Each setting's label on the form, as its error messages name it."""

API_FIELDS = {"rateLimitPerSecond": RATE, "timeoutSeconds": TIMEOUT, "retrySchedule": SCHEDULE}
"""The API's name of each setting (in the service's errors) -> its form field."""

BOUNDS = {
    "min_rate": MIN_RATE_PER_SECOND,
    "max_rate": MAX_RATE_PER_SECOND,
    "min_timeout": MIN_TIMEOUT_SECONDS,
    "max_timeout": MAX_TIMEOUT_SECONDS,
    "max_steps": MAX_SCHEDULE_STEPS,
    "max_step": MAX_SCHEDULE_STEP_SECONDS,
}
"""The limits the form states beside its fields (and its inputs' min and max)."""


def _number(form: Form, field: str, example: str) -> float | None:
    text = form.get(field)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationError(f"{LABELS[field]}: write a number, such as {example}", field=[field])
    return value


def _schedule(form: Form) -> list[float] | None:
    text = form.get(SCHEDULE)
    if not text:
        return None
    try:
        steps = [float(step) for step in re.split(r"[,\s]+", text.strip(", ")) if step]
    except ValueError:
        steps = [math.nan]
    if not all(math.isfinite(step) for step in steps):
        raise ValidationError(
            f"{LABELS[SCHEDULE]}: write delays in seconds separated by commas, such as 5, 60, 600",
            field=[SCHEDULE],
        )
    return steps


def delivery_policy(form: Form, *, editing: bool) -> DeliveryPolicy:
    """The posted settings. An empty field means the default (no rate limit of its own, the global
    timeout and schedule): on an edit it puts the setting back to that default."""
    rate, timeout, schedule = _number(form, RATE, "5 or 0.5"), _number(form, TIMEOUT, "10"), _schedule(form)
    if editing:
        return DeliveryPolicy(
            rate_limit_per_second=0.0 if rate is None else rate,
            timeout_seconds=0.0 if timeout is None else timeout,
            retry_schedule=[] if schedule is None else schedule,
        )
    return DeliveryPolicy(rate_limit_per_second=rate, timeout_seconds=timeout, retry_schedule=schedule)


def form_values(form: Form) -> dict[str, str]:
    """The settings as posted (to show them again beside an error)."""
    return {field: form.get(field) for field in LABELS}


def stored_values(endpoint: WebhookEndpoint | None) -> dict[str, str]:
    """The endpoint's own settings as the form shows them ('' where it uses the default)."""
    if endpoint is None:
        return dict.fromkeys(LABELS, "")
    rate, timeout = endpoint.rate_limit_per_second, endpoint.timeout_seconds
    return {
        RATE: f"{rate:g}" if rate else "",
        TIMEOUT: f"{timeout:g}" if timeout else "",
        SCHEDULE: ", ".join(f"{step:g}" for step in endpoint.retry_schedule or []),
    }


def in_form_terms(error: ClaimcheckError) -> ClaimcheckError:
    """The error, naming a delivery setting by its label rather than its API name."""
    api_name = (error.field or [""])[-1]
    field = API_FIELDS.get(api_name)
    if field is None:
        return error
    message = error.message.replace(api_name, LABELS[field], 1)
    if field == RATE:
        message = message.replace("(0: no limit)", "(empty: no limit)")
    elif field == TIMEOUT:
        message = message.replace("(0: the default)", "(empty: the default)")
    else:
        message = message.replace("([]: the default)", "(empty: the default)")
    return ValidationError(message, field=[field])


def invalid_field(error: ClaimcheckError | None) -> str | None:
    """The form field an error is about, if it names one."""
    return error.field[-1] if error is not None and error.field else None
