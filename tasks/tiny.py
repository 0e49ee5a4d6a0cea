"""Tiny transformer models built from a config, with a tokenizer trained on the fly: fast tests, no download.

The WordPiece vocabulary is trained on printable characters plus a few hundred common English words, so any
text tokenizes (falling back to characters) and the result is the same on every machine.
"""

from __future__ import annotations

import string
from typing import Any

COMMON = [
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "was", "for", "on", "with", "as", "film",
    "movie", "story", "good", "bad", "great", "not", "but", "this", "health", "news", "study", "new", "care",
    "people", "time", "year", "day", "life", "love", "best", "worst", "acting", "plot", "scene", "music",
]


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials,
                                        initial_alphabet=list(string.printable.strip()))
    tok.train_from_iterator([" ".join(COMMON)] * 3 + list(string.printable), trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                            ("[SEP]", tok.token_to_id("[SEP]"))])
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
