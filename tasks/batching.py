"""Length-bucketed batching for transformer work (embedding, training): little padding, bounded memory."""

from __future__ import annotations

from collections.abc import Iterator


def length_batches(lengths: list[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length: sorted by length, each batch's padded size
    (``len(batch) * longest``) at most ``max_tokens``, so padding waste stays small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newcomer is the longest in the batch
        if batch and ((len(batch) + 1) * longest > max_tokens or len(batch) >= max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
