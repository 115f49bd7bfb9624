"""The speech kind: text to spoken audio (WAV) with eSpeak NG, reporting progress per sentence."""

from __future__ import annotations

import enum
import re
import tempfile
import unicodedata
import wave
from collections.abc import Iterator
from typing import IO

from pydantic import BaseModel, field_validator

from service.jobs.kinds import ArtifactOutput, JobContext, Kind, register
from service.kinds import espeak
from service.settings import get_settings

CHUNK_BYTES = 256 * 1024
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_ALLOWED_CONTROL = {"\n", "\r", "\t"}


class AudioFormat(enum.StrEnum):
    WAV = "WAV"


class SpeechInput(BaseModel):
    """What ``generateSpeech`` takes."""

    text: str
    voice: str = "en-us"
    format: AudioFormat = AudioFormat.WAV

    @field_validator("text")
    @classmethod
    def _text_is_speakable(cls, text: str) -> str:
        limit = get_settings().speech_max_chars
        if not text.strip():
            raise ValueError("text must not be empty")
        if len(text) > limit:
            raise ValueError(f"text must be at most {limit} characters (got {len(text)})")
        for char in text:
            if unicodedata.category(char) in ("Cc", "Cs") and char not in _ALLOWED_CONTROL:
                raise ValueError(f"text contains a control character U+{ord(char):04X}")
        return text

    @field_validator("voice")
    @classmethod
    def _voice_is_known(cls, voice: str) -> str:
        voice = voice.strip().lower()
        if voice not in espeak.voices():
            raise ValueError(f"unknown voice {voice!r}; try 'en-us', 'en-gb', 'de', 'fr', 'es'")
        return voice


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Pieces of text to synthesize one at a time, each at most max_chars long."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


def _file_chunks(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        spool.seek(0)
        while chunk := spool.read(CHUNK_BYTES):
            yield chunk


def generate_speech(ctx: JobContext, params: SpeechInput) -> ArtifactOutput:
    """Synthesize sentence by sentence into a spooled WAV, then hand it over as a stream."""
    pieces = split_sentences(params.text)
    total_chars = sum(len(piece) for piece in pieces) or 1
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _file_chunks once uploaded
    with wave.open(spool, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(espeak.SAMPLE_WIDTH)
        wav.setframerate(espeak.sample_rate())
        done = 0
        ctx.progress(0.0, "synthesizing")

        def write(pcm: bytes) -> bool:
            wav.writeframesraw(pcm)
            return True

        for piece in pieces:
            espeak.synthesize(piece, params.voice, write)
            done += len(piece)
            ctx.progress(0.95 * done / total_chars, "synthesizing")
    ctx.progress(0.95, "uploading")
    return ArtifactOutput(filename="speech.wav", content_type="audio/wav", chunks=_file_chunks(spool))


SPEECH = register(
    Kind(
        name="speech",
        input_model=SpeechInput,
        handler=generate_speech,
        content_type="audio/wav",
        timeout_seconds=300,
        prepare=espeak.voices,
    )
)
