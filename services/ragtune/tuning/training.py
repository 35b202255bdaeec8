"""LoRA fine-tuning on chat examples, shared by the dev model builder and `ragtune tune`.

The trainer is deliberately small: a plain PyTorch loop over padded batches, with the loss
restricted to assistant tokens.  It runs on CPU in seconds for the tiny dev model and needs no
`Trainer`/`accelerate` machinery, so its behaviour is easy to reason about and reproduce.

An adapter directory holds what PEFT's `save_pretrained` writes plus `ragtune-adapter.yaml`, the
metadata the router and the serving engine read to decide which requests an adapter suits.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.generation.adapters import (
    base_model_name,
    validate_adapter_metadata,
    write_adapter_metadata,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy skips: marks tokens the model is not graded on."""

LLAMA_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Attention plus MLP projections: on small models the MLP is where a new output style sticks."""


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed every RNG a training run touches, so equal inputs give equal weights."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for training itself
        pass


@contextmanager
def torch_threads(count: int | None = None) -> Iterator[int]:
    """Use a fixed number of intra-op threads for a block, then restore the caller's setting.

    A fixed count keeps CPU matmuls reproducible run to run; restoring it keeps training from
    silently changing how the rest of the process (e.g. a Serve replica) uses the CPU.
    """
    import torch

    if count is None:
        count = max(1, min(8, os.cpu_count() or 1))
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


@contextmanager
def quiet_transformers(quiet: bool = True) -> Iterator[None]:
    """Hide transformers' own load/save progress bars for a block (when `quiet`), then restore.

    With `progress=False` a caller wants a silent run, but every `from_pretrained` and
    `save_pretrained` would otherwise draw a bar of its own.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if quiet and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------
# Chat examples -> token ids and labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one conversation and, aligned with them, the labels to learn."""

    input_ids: list[int]
    labels: list[int]


def validate_examples(examples: Sequence[Sequence[Mapping[str, Any]]]) -> None:
    """Reject data the trainer cannot learn from, naming the offending example."""
    if not examples:
        raise ValueError("examples is empty: need at least one chat example to train on")
    for index, messages in enumerate(examples):
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise ValueError(f"example {index} must be a non-empty list of chat messages")
        for message in messages:
            if (
                not isinstance(message, Mapping)
                or "role" not in message
                or "content" not in message
            ):
                raise ValueError(f"example {index}: every message needs 'role' and 'content' keys")
            if not isinstance(message["content"], str):
                raise ValueError(f"example {index}: message content must be a string")
        if not any(m["role"] == "assistant" and m["content"] for m in messages):
            raise ValueError(
                f"example {index} has no non-empty assistant turn: there is nothing to learn from it"
            )


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]], *, prompt: bool
) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=prompt
    )


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    assistant_only: bool = True,
    max_length: int | None = None,
) -> EncodedExample:
    """Tokenize a conversation through the chat template, labelling what the model should learn.

    The text is built turn by turn from the template's own renderings, so the supervised span of
    each assistant turn is exactly what the model emits after the template's generation prompt
    (content plus end-of-turn token).  With `assistant_only=False` every token is labelled
    (plain causal-LM loss), which is how the base model itself is pretrained.
    """
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""

    def append(text: str, learn: bool) -> None:
        nonlocal rendered
        piece = tokenizer.encode(text, add_special_tokens=False) if text else []
        ids.extend(piece)
        labels.extend(piece if (learn or not assistant_only) else [IGNORE_INDEX] * len(piece))
        rendered += text

    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:index], prompt=True) if index else ""
            _check_prefix(rendered, prompt)
            append(prompt[len(rendered) :], learn=False)
        full = _render(tokenizer, messages[: index + 1], prompt=False)
        _check_prefix(rendered, full)
        append(full[len(rendered) :], learn=message["role"] == "assistant")

    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return EncodedExample(input_ids=ids, labels=labels)


def _check_prefix(rendered: str, longer: str) -> None:
    if not longer.startswith(rendered):
        raise ValueError(
            "the tokenizer's chat template is not incremental (rendering more turns changes "
            "earlier text), so assistant tokens cannot be located for loss masking"
        )


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked from both attention and loss."""
    import torch

    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _batches(
    examples: Sequence[EncodedExample], batch_size: int, seed: int, *, window: int = 8
) -> Iterator[list[EncodedExample]]:
    """Endless shuffled batches of similar-length examples, from a private RNG (no global state).

    Each epoch is shuffled, cut into windows of `window` batches, and each window is sorted by
    length before being cut into batches, so short chat turns are rarely padded to the length
    of a long RAG prompt (CPU cost grows with padded tokens).
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    size = min(batch_size, len(examples))
    span = size * window
    while True:
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: len(examples[i].input_ids))
            batches += [chunk[i : i + size] for i in range(0, len(chunk) - size + 1, size)]
        rng.shuffle(batches)
        for batch in batches:
            yield [examples[i] for i in batch]


def _warmup_then_cosine(steps: int, warmup_fraction: float = 0.1, floor: float = 0.1):
    """LR multiplier: short linear warmup, cosine decay to `floor` — stable for tiny, fast runs."""
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def run_training(
    model: PreTrainedModel,
    examples: Sequence[EncodedExample],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    pad_id: int,
    progress: bool,
    desc: str,
) -> list[float]:
    """Optimise the model's trainable parameters with AdamW; returns the per-step losses."""
    import torch
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_cosine(steps))
    batches = _batches(examples, batch_size, seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        inputs = collate(next(batches), pad_id)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


# --------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------


def _target_modules(model: PreTrainedModel) -> list[str]:
    """The Llama-style projections this model has; a clear error for other architectures."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in LLAMA_TARGET_MODULES if name in names]
    if not found:
        raise ValueError(
            f"model {type(model).__name__} has none of the Llama projection modules "
            f"{', '.join(LLAMA_TARGET_MODULES)}; cannot place LoRA layers"
        )
    return found


def train_lora(
    base_dir: Path,
    examples: list[list[dict]],
    out_dir: Path,
    *,
    name: str,
    rank: int = 8,
    alpha: int = 16,
    steps: int,
    lr: float,
    seed: int,
    metadata: dict,
    progress: bool,
    batch_size: int = 16,
    max_length: int = 512,
) -> Path:
    """Train one LoRA adapter on chat examples and save it to `out_dir` (the adapter's own dir).

    Only assistant tokens are graded, so the adapter learns how to answer, not how users ask.
    `metadata` supplies description/tasks/output_format/tone (and optionally base_model); name,
    rank and, when absent, base_model are filled in here so they cannot disagree with the
    weights.  Returns `out_dir`.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _validate_lora_args(examples, name=name, rank=rank, alpha=alpha, steps=steps, lr=lr)
    full_metadata = {
        **metadata,
        "name": name,
        "base_model": metadata.get("base_model") or base_model_name(base_dir),
        "rank": rank,
    }
    validate_adapter_metadata(full_metadata)

    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"{base_dir} is not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer in {base_dir} has no chat template to format examples")
    encoded = _encode_all(tokenizer, examples, max_length=max_length)
    # Padding is masked out of attention and loss, so any id works when there is no pad token.
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)

    with torch_threads(), quiet_transformers(not progress):
        seed_everything(seed)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=_target_modules(base),
            bias="none",
            task_type="CAUSAL_LM",
        )
        # The adapter keeps PEFT's "default" name while training so `save_pretrained` writes
        # the weights at the top of out_dir; the serving engine names it when loading.
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers API deprecated in v5; nothing for users to act on.
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
            )
            model = get_peft_model(base, config)
        run_training(
            model,
            encoded,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            pad_id=pad_id,
            progress=progress,
            desc=f"lora {name}",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
    write_adapter_metadata(out_dir, full_metadata)
    return out_dir


def _validate_lora_args(
    examples: Sequence[Sequence[Mapping[str, Any]]],
    *,
    name: str,
    rank: int,
    alpha: int,
    steps: int,
    lr: float,
) -> None:
    """Fail fast, before any model is loaded, on arguments that cannot produce an adapter."""
    if not isinstance(name, str) or not name.strip() or "/" in name or name == "__base__":
        raise ValueError(
            f"adapter name must be a non-empty string without '/' and not the reserved "
            f"'__base__', got {name!r}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    validate_examples(examples)


def _encode_all(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Sequence[Mapping[str, Any]]],
    *,
    max_length: int,
) -> list[EncodedExample]:
    """Encode every example; one whose assistant text was truncated away is an input error."""
    encoded = []
    for index, messages in enumerate(examples):
        example = encode_chat(tokenizer, messages, max_length=max_length)
        if all(label == IGNORE_INDEX for label in example.labels):
            raise ValueError(
                f"example {index}: no assistant tokens left within max_length={max_length}"
            )
        encoded.append(example)
    return encoded


# --------------------------------------------------------------------------------------------
# `ragtune tune`: chat examples from JSONL
# --------------------------------------------------------------------------------------------


def read_chat_jsonl(path: Path) -> list[list[dict]]:
    """Chat examples, one JSON object per line: ``{"messages": [{"role", "content"}, ...]}``.

    Blank lines are skipped; a malformed line is an error naming its line number.
    """
    import json

    examples: list[list[dict]] = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list):
                raise ValueError(f'{path}:{number}: expected an object with a "messages" list')
            examples.append(messages)
    validate_examples(examples)
    return examples


def write_chat_jsonl(path: Path, examples: Sequence[Sequence[Mapping[str, Any]]]) -> Path:
    """The inverse of `read_chat_jsonl` (the dev model keeps its adapters' training data so)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for messages in examples:
            f.write(json.dumps({"messages": list(messages)}, ensure_ascii=False) + "\n")
    return path


def tune(base_dir: Path, data: Path, out_dir: Path, **options: Any) -> Path:
    """Train a LoRA adapter on the chat examples in ``data`` (JSONL) and write it, with its
    ``ragtune-adapter.yaml``, to ``out_dir``: what `ragtune tune` runs. ``options`` are
    `train_lora`'s (name, metadata, rank, alpha, steps, lr, seed, batch_size, ...)."""
    return train_lora(Path(base_dir), read_chat_jsonl(Path(data)), Path(out_dir), **options)
