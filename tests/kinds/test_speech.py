"""The speech kind's pieces in this process: sentence splitting, input rules, and real eSpeak NG synthesis."""

from __future__ import annotations

import io
import os
import wave
from collections.abc import Iterator

import pydantic
import pytest

from service.kinds import espeak
from service.kinds.speech import SpeechInput, generate_speech, split_sentences
from service.settings import get_settings

MAX_CHARS = 40


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings good enough for the input rules, with a small SPEECH_MAX_CHARS."""
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("SECRET_KEY", os.environ.get("SECRET_KEY") or "unit-test-secret-key-" + "x" * 20)
    monkeypatch.setenv("SPEECH_MAX_CHARS", str(MAX_CHARS))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class RecordingContext:
    """A JobContext that remembers the progress it was told."""

    def __init__(self) -> None:
        self.job_id = "job_unit"
        self.tenant_id = "ten_unit"
        self.attempt = 1
        self.calls: list[tuple[float, str | None]] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.calls.append((fraction, message))


# Sentence splitting.


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("One; two: three", ["One;", "two:", "three"]),
        ("Line one\nLine two\r\n\n\nLine three", ["Line one", "Line two", "Line three"]),
        ("  padded sentence.   ", ["padded sentence."]),
        ("No punctuation at all", ["No punctuation at all"]),
        ("3.14 is not a sentence end", ["3.14 is not a sentence end"]),
        ("", []),
        ("  \n\t\n ", []),
    ],
)
def test_split_sentences(text: str, pieces: list[str]) -> None:
    assert split_sentences(text) == pieces


def test_a_long_sentence_is_cut_at_spaces_into_bounded_pieces() -> None:
    sentence = " ".join(f"word{i}" for i in range(200))
    pieces = split_sentences(sentence, max_chars=50)
    assert len(pieces) > 1
    assert all(0 < len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces) == sentence  # nothing lost, no words cut


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_sentences("a" * 25, max_chars=10) == ["a" * 10, "a" * 10, "a" * 5]


# Input rules.


def _error(**raw: object) -> str:
    with pytest.raises(pydantic.ValidationError) as raised:
        SpeechInput.model_validate(raw)
    [error] = raised.value.errors()
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


@pytest.mark.usefixtures("settings")
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"text": ""}, "text: Value error, text must not be empty"),
        ({"text": " \n\t  "}, "text: Value error, text must not be empty"),
        (
            {"text": "x" * (MAX_CHARS + 1)},
            f"text: Value error, text must be at most {MAX_CHARS} characters (got 41)",
        ),
        ({"text": "bell \u0007"}, "text: Value error, text contains a control character U+0007"),
        ({"text": "nul \u0000"}, "text: Value error, text contains a control character U+0000"),
        ({"text": "escape \u001b[31m"}, "text: Value error, text contains a control character U+001B"),
        ({"text": "del \u007f"}, "text: Value error, text contains a control character U+007F"),
        ({"text": "surrogate \ud800"}, "text: Value error, text contains a control character U+D800"),
        ({"text": "hi", "voice": "klingon"}, "voice: Value error, unknown voice 'klingon'"),
        ({"text": "hi", "voice": ""}, "voice: Value error, unknown voice ''"),
        ({"text": "hi", "format": "MP3"}, "format: Input should be 'WAV'"),
        ({"voice": "en-us"}, "text: Field required"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(raw: dict[str, object], expected: str) -> None:
    assert _error(**raw).startswith(expected)


@pytest.mark.usefixtures("settings")
def test_good_input_is_accepted_and_normalised() -> None:
    default = SpeechInput.model_validate({"text": "Hello."})
    assert (default.voice, default.format) == ("en-us", "WAV")
    assert SpeechInput.model_validate({"text": "Hallo.", "voice": " DE "}).voice == "de"
    for voice in ("en-gb", "fr", "es"):
        assert SpeechInput.model_validate({"text": "x", "voice": voice}).voice == voice
    assert SpeechInput.model_validate({"text": "x" * MAX_CHARS}).text == "x" * MAX_CHARS
    allowed = "Grüße\n\tこんにちは\r\n— «ça va?» 🎉"
    assert SpeechInput.model_validate({"text": allowed}).text == allowed


# Synthesis with the real eSpeak NG.


def _synthesize(text: str, voice: str = "en-us") -> tuple[bytes, RecordingContext]:
    ctx = RecordingContext()
    output = generate_speech(ctx, SpeechInput.model_construct(text=text, voice=voice))
    assert (output.filename, output.content_type) == ("speech.wav", "audio/wav")
    return b"".join(output.chunks), ctx


def _seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        assert wav.getframerate() == espeak.sample_rate()
        assert wav.getnframes() * 2 == len(data) - 44  # the header's frame count matches the data
        return float(wav.getnframes() / wav.getframerate())


def test_longer_text_makes_a_longer_wav() -> None:
    short, _ = _synthesize("Hello.")
    long, _ = _synthesize("Hello. " + "This sentence makes the audio a good deal longer. " * 4)
    assert 0.2 < _seconds(short) < _seconds(long) / 3


def test_progress_is_reported_per_sentence_and_never_goes_back() -> None:
    _, ctx = _synthesize("First sentence. Second sentence. Third one.")
    fractions = [fraction for fraction, _ in ctx.calls]
    assert ctx.calls[0] == (0.0, "synthesizing")
    assert ctx.calls[-1] == (0.95, "uploading")
    assert len(ctx.calls) == 1 + 3 + 1
    assert fractions == sorted(fractions)
    assert all(0 <= f <= 0.95 for f in fractions)


def test_voices_change_the_audio() -> None:
    text = "Bonjour, comment allez-vous aujourd'hui?"
    assert _synthesize(text, "fr")[0] != _synthesize(text, "en-us")[0]


def test_espeak_stops_when_asked_and_refuses_unknown_voices() -> None:
    blocks: list[bytes] = []

    def keep(pcm: bytes) -> bool:
        blocks.append(pcm)
        return True

    espeak.synthesize("A sentence long enough to need several blocks of audio.", "en-us", keep)
    whole = sum(len(block) for block in blocks)
    assert len(blocks) > 1
    assert whole > 0

    first: list[bytes] = []

    def only_first(pcm: bytes) -> bool:
        first.append(pcm)
        return False

    espeak.synthesize("A sentence long enough to need several blocks of audio.", "en-us", only_first)
    assert len(first) == 1
    assert len(first[0]) < whole

    with pytest.raises(espeak.EspeakError, match="unknown voice"):
        espeak.synthesize("hi", "no-such-voice", keep)
    assert {"en-us", "en-gb", "de", "fr", "es"} <= set(espeak.voices())
