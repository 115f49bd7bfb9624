"""The happy path through real HTTP: mutation → worker → SUCCEEDED → signed download of a real WAV."""

from __future__ import annotations

import io
import wave

import httpx

from tests.conftest import SPEECH_MUTATION, GraphQLClient
from tests.servers import ServiceProcess


def _speak(gql: GraphQLClient, text: str, **extra: str) -> str:
    payload = gql(SPEECH_MUTATION, {"input": {"text": text, **extra}})["generateSpeech"]
    assert payload["userErrors"] == []
    assert payload["job"]["status"] == "QUEUED"
    assert payload["job"]["id"].startswith("job_")
    job_id: str = payload["job"]["id"]
    return job_id


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        return float(wav.getnframes() / wav.getframerate())


def test_speech_job_produces_a_downloadable_wav_whose_length_follows_the_text(
    gql: GraphQLClient, worker: ServiceProcess
) -> None:
    short_id = _speak(gql, "Hello there.")
    long_id = _speak(gql, "Hello there. " + "This sentence makes the audio much longer than the first. " * 4)

    durations = []
    for job_id in (short_id, long_id):
        job = gql.wait_for_job(job_id)
        assert job["status"] == "SUCCEEDED", (job, worker.log()[-3000:])
        assert job["progress"] == 1.0
        assert job["attempt"] == 1
        assert job["startedAt"]
        assert job["finishedAt"]
        artifact = job["artifact"]
        assert artifact["contentType"] == "audio/wav"
        assert artifact["filename"] == "speech.wav"

        response = httpx.get(artifact["downloadUrl"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        assert 'filename="speech.wav"' in response.headers["content-disposition"]
        assert len(response.content) == artifact["byteSize"]
        import hashlib

        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        durations.append(_wav_seconds(response.content))

        types = [event["type"] for event in job["events"]]
        assert types[0] == "job.queued"
        assert types[1] == "job.started"
        assert types[-1] == "job.succeeded"
        milestones = [e["data"]["progress"] for e in job["events"] if e["type"] == "job.progress"]
        assert milestones == [0.25, 0.5, 0.75]

    assert 0.3 < durations[0] < durations[1] / 3


def test_download_supports_range_requests(gql: GraphQLClient, worker: ServiceProcess) -> None:
    job = gql.wait_for_job(_speak(gql, "Range requests fetch part of the file."))
    url = job["artifact"]["downloadUrl"]
    whole = httpx.get(url).content

    part = httpx.get(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206
    assert part.content == b"RIFF" == whole[:4]
    assert part.headers["content-range"] == f"bytes 0-3/{len(whole)}"

    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == whole[-10:]

    beyond = httpx.get(url, headers={"Range": f"bytes={len(whole) + 10}-"})
    assert beyond.status_code == 416


def test_a_voice_other_than_the_default_is_used(gql: GraphQLClient, worker: ServiceProcess) -> None:
    text = "Guten Tag, wie geht es Ihnen heute?"
    german = gql.wait_for_job(_speak(gql, text, voice="de"))
    english = gql.wait_for_job(_speak(gql, text, voice="en-us"))
    assert german["status"] == english["status"] == "SUCCEEDED"
    assert german["artifact"]["sha256"] != english["artifact"]["sha256"]
