"""What to do about each error code a job can end with: one line, shown as JobError.remediation."""

from __future__ import annotations

REMEDIATIONS = {
    "DEADLINE_EXCEEDED": "The job did not finish by its deadline: start it again with a later deadline "
    "(a requeued job keeps no deadline).",
    "TIMEOUT": "The job ran past its kind's time limit: shorten the input (e.g. split the text) and start "
    "it again; requeue only if the limit was hit because the service was overloaded.",
    "CRASHED": "The process running the job died: requeue it once; if it crashes again, its input "
    "triggers a bug, so contact the operator with the job id.",
    "WORKER_LOST": "The worker running the job stopped responding (a restart or a lost machine): requeue it.",
    "UNAVAILABLE": "A backing service was briefly unavailable: requeue it once the service status is green.",
    "UNKNOWN_KIND": "No worker knew this job's kind (a deploy in progress?): requeue it once every worker "
    "runs the version that adds the kind.",
    "INTERNAL": "The job failed unexpectedly: requeue it once; if it fails again, contact the operator "
    "with the job id (its trace shows the cause).",
}
DEFAULT_REMEDIATION = (
    "Read the message; requeue the job with retryJob if the cause was transient and is fixed."
)


def remediation(code: str) -> str:
    """The remediation line for an error code (a generic one for codes a kind defines)."""
    return REMEDIATIONS.get(code, DEFAULT_REMEDIATION)
