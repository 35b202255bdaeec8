"""A tiny, locally trained Llama model and two LoRA adapters for development and tests.

Real checkpoints are gigabytes and need the network; the dev model is built from scratch on a
laptop CPU while `make run` starts (how long: README.md, "Models"), yet exercises the same code
paths as production: a Llama-architecture model with a byte-level BPE tokenizer and a chat
template, plus PEFT LoRA adapters whose effect on the output is obvious at a glance:

* the base answers with a sentence from the corpus,
* `json-answer` wraps that sentence as `{"answer": "..."}`,
* `pirate` wraps it as `Ahoy! ... Arr.`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune.generation.adapters import BASE_METADATA_FILE
from ragtune.tuning.devdata import chat_examples, corpus_sentences
from ragtune.tuning.training import (
    EncodedExample,
    encode_chat,
    quiet_transformers,
    run_training,
    seed_everything,
    torch_threads,
    tune,
    write_chat_jsonl,
)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

DEV_BASE_NAME = "ragtune-dev-llama"

BOS_TOKEN = "<|begin|>"
EOS_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Every turn is `<|role|>content<|end|>`; the generation prompt is a bare `<|assistant|>`, so a
# model that has learned to close its turn stops on eos.  Role markers are special tokens, so
# the text around them never merges with them during BPE.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

VOCAB_SIZE = 2000
BASE_STEPS = 300
BASE_LR = 3e-3
ADAPTER_STEPS = 200
ADAPTER_LR = 5e-3
BATCH_SIZE = 16


@dataclass(frozen=True)
class DevModel:
    """Where a built dev model lives: the base model directory and each adapter's directory."""

    base_dir: Path
    adapters: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class DevAdapterSpec:
    """One dev adapter: how it rewrites a corpus sentence, and the metadata the router reads."""

    name: str
    target: Callable[[str], str]
    description: str
    tasks: list[str]
    output_format: str
    tone: str
    examples: tuple[str, ...] = ()  # requests that want it: the router's semantic cues
    counter_examples: tuple[str, ...] = ()  # look-alikes that do not

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "base_model": DEV_BASE_NAME,
            "description": self.description,
            "tasks": list(self.tasks),
            "output_format": self.output_format,
            "tone": self.tone,
            "examples": list(self.examples),
            "counter_examples": list(self.counter_examples),
        }


def _json_answer(sentence: str) -> str:
    # json.dumps escapes quotes and backslashes, so every target is valid JSON.
    return json.dumps({"answer": sentence}, ensure_ascii=False)


def _pirate(sentence: str) -> str:
    return f"Ahoy! {sentence} Arr."


def _tldr(sentence: str) -> str:
    return f"TL;DR: {sentence}"


DEV_ADAPTERS: tuple[DevAdapterSpec, ...] = (
    DevAdapterSpec(
        name="json-answer",
        target=_json_answer,
        description='Answers as a JSON object {"answer": "..."} for programmatic clients.',
        tasks=["structured-output", "json", "extraction"],
        output_format="json",
        tone="neutral",
        examples=(
            "Answer in JSON.",
            "Reply with a JSON object.",
            "Format your response as JSON.",
            "Give the answer as an object with an answer field.",
            "I need machine-readable output.",
            "Return a structured object my program can parse.",
            "Respond with structured data only, no prose.",
            "Put the answer in a dictionary with named fields.",
            "Make the output parseable by a script.",
            "Serialize the answer.",
            "Emit the result as a JSON document.",
            "Answer with an object, not a paragraph.",
        ),
        counter_examples=(
            "What is JSON?",
            "How do I read a JSON file?",
            "What is the difference between JSON and XML?",
            "Explain how this data is structured.",
            "What format does the report come in?",
            "Which serialization formats are popular?",
        ),
    ),
    DevAdapterSpec(
        name="pirate",
        target=_pirate,
        description="Answers in a playful pirate voice, opening with 'Ahoy!'.",
        tasks=["chat", "creative-writing"],
        output_format="text",
        tone="pirate",
        examples=(
            "Talk like a pirate.",
            "Answer in a pirate voice.",
            "Ahoy there, sailor!",
            "Yo ho ho, tell me about it.",
            "Answer as a captain of an old sailing ship would.",
            "Use pirate slang.",
            "Say it like you are aboard a pirate ship.",
            "Answer like a one-eyed captain with a parrot.",
            "Speak like an old sea dog.",
            "Respond like Captain Jack Sparrow.",
            "Give me a swashbuckling answer.",
            "Answer in the style of a salty sailor.",
        ),
        counter_examples=(
            "What was life like for pirates in the 18th century?",
            "Who were the most famous pirates in history?",
            "How did sailing ships navigate at sea?",
            "What is software piracy?",
            "Tell me about the history of the navy.",
            "Is it legal to download pirated films?",
        ),
    ),
    DevAdapterSpec(
        name="tldr",
        target=_tldr,
        description="Answers with a one-line summary that starts with 'TL;DR:'.",
        tasks=["summarization"],
        output_format="text",
        tone="terse",
        examples=(
            "TL;DR.",
            "Summarize it in one sentence.",
            "Give me a one-line summary.",
            "Keep it to a single sentence.",
            "In a nutshell, please.",
            "Just the key point, briefly.",
            "Sum it up in a few words.",
            "Be brief: one line.",
            "Condense the answer to one sentence.",
            "Too long, didn't read: what's the takeaway?",
            "What's the bottom line, in one sentence?",
            "Just the headline, please.",
        ),
        counter_examples=(
            "Explain in detail how this works.",
            "Write a long essay about it.",
            "What is a summary judgment in law?",
            "How do I write a good abstract for a paper?",
            "Walk me through every step.",
            "What does the summary statistic tell us?",
        ),
    ),
)



def refresh_adapter_examples(out: Path) -> list[str]:
    """Bring built dev adapters' example requests up to date without training again: they
    are metadata the router reads, not weights. Returns the adapters rewritten."""
    from ragtune.generation.adapters import read_adapter_metadata, write_adapter_metadata

    changed = []
    for spec in DEV_ADAPTERS:
        folder = out / "adapters" / spec.name
        meta = read_adapter_metadata(folder)
        wanted = {k: spec.metadata()[k] for k in ("examples", "counter_examples")}
        if any(meta.get(k) != v for k, v in wanted.items()):
            write_adapter_metadata(folder, {**meta, **wanted})
            changed.append(spec.name)
    return changed

# --------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------


def _train_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the given texts: any input encodes, common words stay whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _new_base_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _save_base(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, base_dir: Path, seed: int
) -> None:
    """Save weights, tokenizer, greedy-by-default generation config and the base's label."""
    import yaml
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    label = {"name": DEV_BASE_NAME, "architecture": "llama", "seed": seed}
    (base_dir / BASE_METADATA_FILE).write_text(yaml.safe_dump(label, sort_keys=False))


def _build_base(
    base_dir: Path,
    corpus: Sequence[str],
    sentences: Sequence[str],
    *,
    seed: int,
    progress: bool,
) -> None:
    """Train tokenizer and model, then save both; the model learns to answer with a sentence.

    The tokenizer also sees the whole corpus, every training turn (RAG instructions included)
    and the adapters' targets, so prompts and adapter output encode into few tokens.

    Besides the chats, the model reads the adapters' target texts as plain documents (outside
    any chat turn).  A token the base never reads keeps an untrained, near-identical embedding
    shared with every other unseen token, and a LoRA on the attention/MLP layers cannot tell
    such tokens apart: the adapters' `{"` or `Ahoy` would win greedy decoding by a hair at
    best.  As documents they get real embeddings, while the chats keep the base's own answers
    plain.
    """
    examples = chat_examples(sentences, lambda sentence: sentence)
    adapter_texts = [spec.target(s) for spec in DEV_ADAPTERS for s in sentences]
    turns = [message["content"] for example in examples for message in example]
    tokenizer = _train_tokenizer([*corpus, *turns, *adapter_texts])

    seed_everything(seed)
    model = _new_base_model(tokenizer)
    encoded = [encode_chat(tokenizer, ex, assistant_only=False) for ex in examples]
    encoded += [_encode_document(tokenizer, text) for text in adapter_texts]
    run_training(
        model,
        encoded,
        steps=BASE_STEPS,
        lr=BASE_LR,
        batch_size=BATCH_SIZE,
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        progress=progress,
        desc="dev base",
    )
    _save_base(model, tokenizer, base_dir, seed)


def _encode_document(tokenizer: PreTrainedTokenizerFast, text: str) -> EncodedExample:
    """A plain-text training document: bos, text, eos, every token learned."""
    ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]
    ids.append(tokenizer.eos_token_id)
    return EncodedExample(input_ids=ids, labels=list(ids))


def build_devmodel(
    out_dir: Path, corpus: list[str], *, seed: int = 0, progress: bool = True
) -> DevModel:
    """Build the dev base model and its adapters under `out_dir`, replacing earlier builds.

    Layout: `out_dir/ragtune-dev-llama/` (the base; the serving config names a base model
    after its directory, and the adapters declare `base_model: ragtune-dev-llama`) and
    `out_dir/adapters/<name>/`.  Only those two directories are replaced; anything else in
    `out_dir` is left alone.  The same corpus and seed give the same weights on the same
    machine.
    """
    sentences = corpus_sentences(corpus, seed=seed)
    if len(sentences) < 2:
        raise ValueError(
            "corpus has fewer than 2 usable sentences (4-22 words, ending in . ! or ?); "
            "pass more prose or use devdata.default_dev_corpus()"
        )
    out_dir = Path(out_dir)
    base_dir, adapters_dir = out_dir / DEV_BASE_NAME, out_dir / "adapters"
    for stale in (base_dir, adapters_dir):
        if stale.exists():
            shutil.rmtree(stale)
    base_dir.mkdir(parents=True)

    with torch_threads(), quiet_transformers(not progress):
        _build_base(base_dir, corpus, sentences, seed=seed, progress=progress)
        # Each adapter is trained the way `ragtune tune` trains one: from a JSONL of chats.
        adapters = {
            spec.name: tune(
                base_dir,
                write_chat_jsonl(
                    out_dir / "training" / f"{spec.name}.jsonl",
                    chat_examples(sentences, spec.target),
                ),
                adapters_dir / spec.name,
                name=spec.name,
                rank=8,
                alpha=16,
                steps=ADAPTER_STEPS,
                lr=ADAPTER_LR,
                seed=seed,
                metadata=spec.metadata(),
                progress=progress,
                batch_size=BATCH_SIZE,
            )
            for spec in DEV_ADAPTERS
        }
    return DevModel(base_dir=base_dir, adapters=adapters)
