"""Training: fine-tune a sequence classifier on a dataset version, plainly or sharded (SISA), tracked in MLflow.

``run_training`` reads ``NAME@VERSION``'s manifest and the texts of its records (``data``), fine-tunes one model or
one per shard (``loop``), and logs and registers the result with its model card (``register``, ``card``). Each
shard's record ids are stored with the per-example losses, so a deletion knows which shards to retrain.
"""

from tasks.training.card import learning_curves_png, model_card
from tasks.training.data import Split, TrainConfig, config_dict, load_splits, subsample, take
from tasks.training.loop import (
    build_model,
    fit_one,
    lora_wrapped,
    metrics,
    per_example_loss,
    predict_proba,
    train_models,
)
from tasks.training.register import load_version, merged, register, run_training, start_run, version_doc

__all__ = ["Split", "TrainConfig", "build_model", "config_dict", "fit_one", "learning_curves_png", "load_splits",
           "load_version", "lora_wrapped", "merged", "metrics", "model_card", "per_example_loss", "predict_proba",
           "register", "run_training", "start_run", "subsample", "take", "train_models", "version_doc"]
