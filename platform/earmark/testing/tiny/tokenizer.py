"""A small byte-level BPE tokenizer built offline, with a family's special tokens."""

from __future__ import annotations

from typing import Any

VOCAB_SIZE = 512  # BPE vocabulary before special tokens (the corpus may yield fewer)

# Training text: enough English to learn common merges so random models decode to word pieces.
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a man is speaking while a dog barks in the distance",
    "music is playing with drums guitar and a piano",
    "rain falls on the roof and thunder rolls",
    "speech, music, dog, bird song, engine, water, wind, applause, laughter",
    "transcribe the speech into text and describe the sound",
    "please provide a comprehensive description of the input audio covering all details",
    "which labels describe the sounds in this audio",
    "hello world this is a test of the audio language model",
    "people talking in a crowded room with background noise",
    "a car engine starts and drives away on a wet road",
    "birds chirp in the morning while children play outside",
]


def build_tokenizer(
    special_tokens: list[str],
    *,
    eos_token: str,
    pad_token: str,
    extra_tokens: tuple[str, ...] = (),
    chat_template: str | None = None,
) -> Any:
    """A `PreTrainedTokenizerFast` with `special_tokens` appended after the BPE vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[t for t in special_tokens if t not in (eos_token, pad_token)],
        clean_up_tokenization_spaces=False,
    )
    if extra_tokens:
        fast.add_tokens(list(extra_tokens))  # e.g. <think>: added, but not special
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
