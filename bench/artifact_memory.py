"""Worker memory while a job streams a large artifact to storage, and GCS upload throughput.

A synthetic kind (``bench-blob``, registered here) produces N bytes in 1 MiB chunks. Each run is a
child process shaped like a worker's job child: it imports what a worker imports, creates a job
in Postgres and runs it through the real runner (``service.jobs.runner.run_job``: handler, then
``storage.put_stream``, then the job's success), and reports its own peak RSS
(``ru_maxrss``). It runs for the gcs backend (fake-gcs-server on loopback, the real client, chunked
resumable upload) and the local backend, at 10 MiB and at 1 GiB. In the same run, another child
uploads the same bytes with plain google-cloud-storage ``Blob.upload_from_file`` (library defaults)
to the same emulator, for the throughput ratio.

Targets: peak RSS < 150 MiB at 1 GiB; peak RSS at 1 GiB / at 10 MiB < 1.25; put_stream throughput /
upload_from_file throughput >= 0.7.

    python -m bench.artifact_memory [--size-mib 1024] [--small-mib 10] [--repeat 2] [--direct]

``--direct`` skips Postgres and Redis: the child calls the kind's handler and ``put_stream`` itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.jobs.kinds import ArtifactOutput, JobContext, Kind

MIB = 1024 * 1024
BLOCK = random.Random(20261125).randbytes(MIB)  # incompressible, the same in every process
KIND = "bench-blob"


class BlobInput(BaseModel):
    size: int = Field(ge=0)


def blob_chunks(size: int, context: JobContext | None = None) -> Iterator[bytes]:
    """size bytes of BLOCK repeated, in 1 MiB chunks, reporting progress every 64 MiB."""
    sent = 0
    while sent < size:
        chunk = BLOCK[: min(MIB, size - sent)]
        sent += len(chunk)
        if context is not None and sent % (64 * MIB) == 0:
            context.progress(sent / size, "writing")
        yield chunk


def blob_handler(context: JobContext, params: BlobInput) -> ArtifactOutput:
    return ArtifactOutput("blob.bin", "application/octet-stream", blob_chunks(params.size, context))


BLOB_KIND = Kind(
    name=KIND,
    input_model=BlobInput,
    handler=blob_handler,
    content_type="application/octet-stream",
    timeout_seconds=3600,
    max_attempts=1,
)


class RepeatingReader(io.RawIOBase):
    """The same bytes as blob_chunks, as a seekable file (what upload_from_file wants)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, min(base + offset, self.size))
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        total = min(len(view), self.size - self.position)
        done = 0
        while done < total:
            offset = (self.position + done) % MIB
            take = min(MIB - offset, total - done)
            view[done : done + take] = BLOCK[offset : offset + take]
            done += take
        self.position += total
        return total


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# The child processes.


def child_runner(size: int) -> dict[str, Any]:
    """One job through the real runner, as a worker's job child runs it."""
    import service.worker  # noqa: F401  (everything a worker process has loaded)
    from service.db import AFTER_COMMIT, session_scope
    from service.jobs import runner
    from service.jobs.kinds import register
    from service.jobs.models import Job
    from service.jobs.service import create_job
    from service.storage.factory import get_storage

    register(BLOB_KIND)
    storage = get_storage()  # as a worker does before it forks
    upload_seconds: list[float] = []
    put_stream = storage.put_stream

    def timed_put_stream(*args: Any, **kwargs: Any) -> Any:  # the upload's own time, inside the run
        started = time.perf_counter()
        try:
            return put_stream(*args, **kwargs)
        finally:
            upload_seconds.append(time.perf_counter() - started)

    storage.put_stream = timed_put_stream  # type: ignore[method-assign]
    with session_scope() as session:
        job = create_job(session, os.environ["BENCH_TENANT_ID"], KIND, {"size": size}, None)
        session.info.pop(AFTER_COMMIT, None)  # no RQ: this process is the worker
        job_id = job.id
    rss_before, cpu = _rss_now_mib(), _cpu_seconds()
    started = time.perf_counter()
    runner.run_job(job_id)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    with session_scope() as session:
        finished = session.get(Job, job_id)
        assert finished is not None
        status = str(finished.status)
        byte_size = finished.artifact_byte_size
    return {
        "seconds": upload_seconds[0] if upload_seconds else seconds,
        "job_seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "status": status,
        "byte_size": byte_size,
    }


def child_direct(size: int) -> dict[str, Any]:
    """The kind's handler straight into storage.put_stream (no database)."""
    import service.worker  # noqa: F401
    from service.storage.base import artifact_key
    from service.storage.factory import get_storage

    storage = get_storage()
    output = blob_handler(_NoProgress(), BlobInput(size=size))
    key = artifact_key("ten_bench", f"job_{secrets.token_hex(6)}", output.filename)
    rss_before, cpu = _rss_now_mib(), _cpu_seconds()
    started = time.perf_counter()
    stored = storage.put_stream(
        key, output.chunks, content_type=output.content_type, filename=output.filename
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "status": "SUCCEEDED",
        "byte_size": stored.byte_size,
    }


def child_plain(size: int, chunk_bytes: int | None = None) -> dict[str, Any]:
    """google-cloud-storage's own upload_from_file of the same bytes (library default chunk unless given)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client

    client = Client(
        project="bench",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )
    blob = client.bucket(os.environ["GCS_BUCKET"]).blob(f"plain/{secrets.token_hex(6)}/blob.bin")
    blob.chunk_size = chunk_bytes
    rss_before, cpu = _rss_now_mib(), _cpu_seconds()
    started = time.perf_counter()
    blob.upload_from_file(RepeatingReader(size), size=size, content_type="application/octet-stream")
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    blob.reload()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "status": "SUCCEEDED",
        "byte_size": blob.size,
    }


def child_plain_same_chunk(size: int) -> dict[str, Any]:
    """upload_from_file with the gcs backend's chunk size (GCS_CHUNK_BYTES): the client overhead alone."""
    from service.settings import get_settings

    return child_plain(size, get_settings().gcs_chunk_bytes)


class _NoProgress:
    job_id = "job_bench"
    tenant_id = "ten_bench"
    attempt = 1

    def progress(self, fraction: float, message: str | None = None) -> None:
        pass


CHILDREN = {
    "runner": child_runner,
    "direct": child_direct,
    "plain": child_plain,
    "plain-same-chunk": child_plain_same_chunk,
}


def run_child(mode: str, size: int, env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.artifact_memory", "--child", mode, "--bytes", str(size)],
        env=env,
        capture_output=True,
        timeout=1800,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{completed.stderr.decode(errors='replace')[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    if result["status"] not in ("SUCCEEDED", "JobStatus.SUCCEEDED") or result["byte_size"] not in (
        size,
        None,
    ):
        raise RuntimeError(f"{mode} child did not store {size} bytes: {result}")
    return result


# The parent.


@contextlib.contextmanager
def _database(direct: bool) -> Iterator[tuple[dict[str, str], str]]:
    from bench.common import SECRET_KEY, service_stack

    if direct:
        yield {**os.environ, "ENVIRONMENT": "test", "SECRET_KEY": SECRET_KEY}, "ten_bench"
        return

    with service_stack(log_level="WARNING") as stack:
        yield stack.env, stack.tenant_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each upload (medians reported)")
    parser.add_argument("--direct", action="store_true", help="put_stream without the runner and database")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.bytes)))
        return

    from tests.gcs import GcsEmulator, make_service_account_key

    mode = "direct" if args.direct else "runner"
    big, small = args.size_mib * MIB, args.small_mib * MIB
    with (
        tempfile.TemporaryDirectory(prefix="claimcheck-bench-artifacts-") as tmp,
        _database(args.direct) as (
            base_env,
            tenant_id,
        ),
    ):
        workdir = Path(tmp)
        emulator = GcsEmulator(workdir / "gcs", workdir / "gcs.log").start()
        try:
            bucket = "claimcheck-bench"
            emulator.create_bucket(bucket)
            key = make_service_account_key(workdir / "credentials", "bench")
            common = {**base_env, "BENCH_TENANT_ID": tenant_id, "LOG_LEVEL": "WARNING"}
            envs = {
                "gcs": {
                    **common,
                    "STORAGE_BACKEND": "gcs",
                    "GCS_BUCKET": bucket,
                    "STORAGE_EMULATOR_HOST": emulator.url,
                    "GOOGLE_APPLICATION_CREDENTIALS": str(key.path),
                },
                "local": {**common, "STORAGE_BACKEND": "local", "STORAGE_DIR": str(workdir / "artifacts")},
            }
            results: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                for backend in ("gcs", "local"):
                    for size in (small, big):
                        results.setdefault((backend, size), []).append(run_child(mode, size, envs[backend]))
                for plain in ("plain", "plain-same-chunk"):
                    results.setdefault((plain, big), []).append(run_child(plain, big, envs["gcs"]))
        finally:
            emulator.stop()
    from service.settings import Settings

    default_chunk = Settings.model_fields["gcs_chunk_bytes"].default
    _report(results, big, small, mode, args.repeat, int(os.environ.get("GCS_CHUNK_BYTES", default_chunk)))


def _report(
    results: dict[tuple[str, int], list[dict[str, Any]]],
    big: int,
    small: int,
    mode: str,
    repeat: int,
    chunk_bytes: int,
) -> None:
    def peak(backend: str, size: int) -> float:
        return max(float(r["peak_rss_mib"]) for r in results[(backend, size)])

    def throughput(backend: str, size: int) -> float:
        return size / MIB / statistics.median(float(r["seconds"]) for r in results[(backend, size)])

    def cpu(backend: str, size: int) -> float:
        return statistics.median(float(r["cpu_seconds"]) for r in results[(backend, size)])

    how = "through the real runner" if mode == "runner" else "put_stream directly"
    print(f"artifact upload, one child process per upload ({how}), {repeat} run(s) each")
    print(
        f"GCS_CHUNK_BYTES {chunk_bytes // MIB} MiB; peak RSS is the max over runs, MiB/s and CPU the median"
    )
    print(f"{'upload':<44} {'size':>9} {'RSS before':>11} {'peak RSS':>10} {'MiB/s':>7} {'client CPU':>11}")
    labels = {
        "gcs": "gcs backend (emulator)",
        "local": "local backend",
        "plain": "plain upload_from_file, default 100 MiB chunk",
        "plain-same-chunk": f"plain upload_from_file, {chunk_bytes // MIB} MiB chunk",
    }
    rows = [(b, s) for b in ("gcs", "local") for s in (small, big)] + [
        ("plain", big),
        ("plain-same-chunk", big),
    ]
    for backend, size in rows:
        before = max(r["rss_before_mib"] for r in results[(backend, size)])
        print(
            f"{labels[backend]:<44} {size // MIB:>5} MiB {before:>7.1f} MiB {peak(backend, size):>6.1f} MiB "
            f"{throughput(backend, size):>7.1f} {cpu(backend, size):>9.2f} s"
        )
    for backend in ("gcs", "local"):
        ratio = peak(backend, big) / peak(backend, small)
        print(
            f"{backend}: worker peak RSS at {big // MIB} MiB {peak(backend, big):.1f} MiB (target < 150); "
            f"peak RSS {big // MIB} MiB / {small // MIB} MiB = {ratio:.3f} (target < 1.25)"
        )
    for plain in ("plain", "plain-same-chunk"):
        ratio = throughput("gcs", big) / throughput(plain, big)
        print(
            f"gcs put_stream {throughput('gcs', big):.1f} MiB/s vs {labels[plain]} "
            f"{throughput(plain, big):.1f} MiB/s: ratio {ratio:.2f} (target >= 0.7)"
        )


if __name__ == "__main__":
    main()
