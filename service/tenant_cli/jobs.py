"""`claimcheck jobs ...`: the tenant's jobs through the SDK (speak, list, get, wait, cancel, delete,
download). Each returns its exit code (service.tenant_cli.output)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.client.aio import AsyncClaimcheck
from service.client.errors import InvalidStateError, ValidationError
from service.client.generated_async.enums import JobStatus
from service.client.generated_async.input_types import GenerateSpeechInput
from service.tenant_cli.output import OK, JobProgress, job_line, job_outcome, to_json
from service.tenant_cli.session import Session, run


def speak(args: argparse.Namespace) -> int:
    return run(args, _speak)


async def _speak(client: AsyncClaimcheck, args: argparse.Namespace, session: Session) -> int:
    speech = GenerateSpeechInput(text=args.text, voice=args.voice, idempotencyKey=args.idempotency_key)
    job = (await client.generate_speech(speech)).generate_speech.job
    assert job is not None  # no userErrors (they raise)
    if not (args.wait or args.output):
        print(to_json(job) if args.json else job.id)
        return OK
    if not args.json:
        print(job.id, flush=True)
    return await _follow(client, args, session, job.id)


def wait(args: argparse.Namespace) -> int:
    return run(args, lambda client, args, session: _follow(client, args, session, args.id))


async def _follow(client: AsyncClaimcheck, args: argparse.Namespace, session: Session, job_id: str) -> int:
    """Follow the job live until it ends; download its file to --output if it succeeded."""
    output = Path(args.output) if args.output else None
    resume_output = f" --output {args.output}" if args.output else ""
    session.resume = (
        f"stopped following {job_id}; the job keeps running. Resume with:"
        f" claimcheck jobs wait {job_id}{resume_output}"
    )
    with JobProgress(as_json=args.json) as progress:
        job = await client.wait(job_id, progress)
        written = None
        if output is not None and job.status is JobStatus.SUCCEEDED:
            written = await client.download(job, output, progress.bytes_callback())
    session.resume = None
    if args.json:
        document = json.loads(to_json(job))
        if written is not None:
            document["file"] = str(written)
        print(json.dumps(document))
    else:
        if progress.terminal:
            print(job_line(job))
        if written is not None and job.artifact is not None:
            print(f"wrote {written} ({job.artifact.byte_size} bytes, sha256 {job.artifact.sha_256} verified)")
    return job_outcome(job)


def list_jobs(args: argparse.Namespace) -> int:
    return run(args, _list)


async def _list(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    try:
        statuses = [JobStatus(status) for status in args.status or []]
    except ValueError as error:
        known = ", ".join(status.value for status in JobStatus)
        raise ValidationError(f"--status: {error}; known: {known}") from error
    page = (await client.list_jobs(first=args.first, status=statuses or None, kind=args.kind)).jobs
    if args.json:
        print(json.dumps([json.loads(to_json(job)) for job in page.nodes]))
        return OK
    for job in page.nodes:
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{job.id}  {job.kind:<8} {job.status.value:<9} {job.progress:4.0%}  {created}")
    return OK


def get(args: argparse.Namespace) -> int:
    return run(args, _get)


async def _get(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    job = await client.job(args.id)
    if args.json:
        print(to_json(job))
        return OK
    print(job_line(job))
    print(f"kind {job.kind}, attempt {job.attempt}, created {job.created_at.isoformat()}")
    if job.estimated_completion_at and job.status.value in ("QUEUED", "RUNNING"):
        print(f"estimated completion {job.estimated_completion_at.isoformat()}")
    if job.artifact is not None:
        artifact = job.artifact
        print(f"file {artifact.filename} ({artifact.content_type}, {artifact.byte_size} bytes)")
        print(f"sha256 {artifact.sha_256}")
    return OK


def cancel(args: argparse.Namespace) -> int:
    return run(args, _cancel)


async def _cancel(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    job = (await client.cancel_job(args.id)).cancel_job.job
    assert job is not None
    print(to_json(job) if args.json else job_line(job))
    return OK


def delete(args: argparse.Namespace) -> int:
    return run(args, _delete)


async def _delete(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    deleted = (await client.delete_job(args.id)).delete_job.id
    print(json.dumps({"id": deleted}) if args.json else f"{deleted} deleted")
    return OK


def download(args: argparse.Namespace) -> int:
    return run(args, _download)


async def _download(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    job = await client.job(args.id)
    if job.artifact is None:
        raise InvalidStateError(f"job {job.id} has no file (it is {job.status.value})")
    output = Path(args.output or Path(job.artifact.filename).name)
    with JobProgress(as_json=args.json) as progress:
        written = await client.download(job, output, progress.bytes_callback())
    if args.json:
        print(json.dumps({"id": job.id, "file": str(written), "sha256": job.artifact.sha_256}))
    else:
        print(f"wrote {written} ({job.artifact.byte_size} bytes, sha256 {job.artifact.sha_256} verified)")
    return OK
