"""Tiny transformer models built from a config, with a tokenizer trained on the fly: fast tests, no download.

The WordPiece vocabulary is fixed: printable characters plus a few dozen common English words, so any text
tokenizes (falling back to characters) and the ids are the same in every process and on every machine.
"""

from __future__ import annotations

import string
from typing import Any

COMMON = [
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "was", "for", "on", "with", "as", "film",
    "movie", "story", "good", "bad", "great", "not", "but", "this", "health", "news", "study", "new", "care",
    "people", "time", "year", "day", "life", "love", "best", "worst", "acting", "plot", "scene", "music",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab() -> dict[str, int]:
    """Special tokens, printable characters (alone and as ``##`` continuations) and the common words, in a fixed
    order: every process (each Dask worker builds its own) gets the same ids, so a seeded run reproduces anywhere
    (a trained WordPiece vocabulary differs between processes: its trainer breaks ties in hash order)."""
    chars = list(string.printable.strip())
    tokens = [*SPECIALS, *chars, *(f"##{c}" for c in chars), *COMMON]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_bert(seed: int = 0, num_labels: int | None = None) -> tuple[Any, Any]:
    """(tokenizer, model): a 2-layer, 32-wide BERT with random weights; a classifier when ``num_labels``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tokenizer = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, num_labels=num_labels or 2)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    return tokenizer, model
