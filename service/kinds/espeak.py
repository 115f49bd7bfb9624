"""A minimal ctypes binding to eSpeak NG from the ``espeakng-loader`` wheel: text in, PCM out."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import espeakng_loader

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
SAMPLE_WIDTH = 2  # 16-bit signed mono

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()


class EspeakError(RuntimeError):
    """eSpeak NG refused a call."""


@lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL, int]:
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
    if sample_rate <= 0:
        raise EspeakError("eSpeak NG failed to initialise")
    return lib, sample_rate


def sample_rate() -> int:
    """The sample rate of the PCM that ``synthesize`` produces."""
    return _library()[1]


@lru_cache(maxsize=1)
def voices() -> dict[str, str]:
    """Voice ids (file names and language codes, lower-case: ``en-us``, ``en-gb``, ``de``) → voice file."""
    best: dict[str, tuple[int, str]] = {}
    for path in (Path(espeakng_loader.get_data_path()) / "lang").rglob("*"):
        if not path.is_file():
            continue
        best[path.name.lower()] = (0, path.name)
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "language":
                priority = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 5
                code = parts[1].lower()
                if code not in best or priority < best[code][0]:
                    best[code] = (priority, path.name)
    return {code: name for code, (_, name) in best.items()}


def synthesize(text: str, voice: str, on_pcm: Callable[[bytes], bool]) -> None:
    """Speak text with voice, passing each block of 16-bit PCM to on_pcm (return False to stop)."""
    lib, _ = _library()
    stopped = False

    def receive(wav: ctypes._Pointer[ctypes.c_short] | None, samples: int, _events: int | None) -> int:
        nonlocal stopped
        if wav and samples > 0 and not on_pcm(ctypes.string_at(wav, samples * SAMPLE_WIDTH)):
            stopped = True
        return 1 if stopped else 0

    callback = _SynthCallback(receive)

    encoded = text.encode()
    with _lock:  # the library keeps global state
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voices().get(voice, voice).encode()) != 0:
            raise EspeakError(f"unknown voice {voice!r}")
        status = lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
        )
    if status != 0 and not stopped:
        raise EspeakError(f"synthesis failed with status {status}")
