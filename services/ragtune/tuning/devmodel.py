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
            "respond in JSON",
            "answer as a JSON object",
            "return the answer as JSON",
            "format the reply as JSON",
            "output valid JSON only",
            "give me machine-readable output",
            "make the response parseable by my script",
            "wrap the answer in a JSON object with an answer key",
            "return a key-value object",
            "reply with a dict I can load",
            "structured output please",
            "respond in a structured format for my API client",
            "no prose, just a JSON payload",
            "send it back as a json blob",
            'put the answer in an "answer" field',
            "I need it serialized for my program",
            "give the result as an object my code can parse",
            "output must be parseable with json.loads",
            "return it in a format my bot can consume",
            "the response will be parsed programmatically",
            "format as application/json",
            "answer in a machine-friendly format",
            "respond with a single object, no markdown",
            "encode the reply as JSON",
            "keep it strictly structured, key and value",
            "emit JSON, nothing else",
            "json pls",
            "return a dictionary with the answer",
            "give me the response as a JSON string",
            "my client expects a JSON body",
            "so my parser can read it",
            "output it as an object with one field",
            "I'm calling this from an API, return structured data",
            "reply in a format suitable for programmatic use",
            "return raw JSON without code fences",
            "wrap your reply in curly braces as JSON",
            "serialize the answer",
            "give it to me as key value pairs",
            "respond like a REST API would",
            "make it easy to deserialize",
        ),
        counter_examples=(
            "what is JSON",
            "how do I parse a JSON file in Python",
            "explain the difference between JSON and XML",
            "why does my JSON fail to validate",
            "how to convert a dict to JSON in JavaScript",
            "what does a JSON schema look like",
            "is YAML a superset of JSON",
            "how do REST APIs use JSON",
            "explain data structures like dictionaries and hash maps",
            "how do I read key-value pairs from a config file",
            "what is structured data in SEO",
            "how does the API return errors",
            "who invented JSON",
            "how to pretty-print JSON in the terminal",
            "explain how object serialization works",
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
            "answer like a pirate",
            "talk like a pirate",
            "respond in pirate speak",
            "say it in a pirate voice",
            "arr, explain it matey",
            "tell me like Captain Jack Sparrow would",
            "answer as Blackbeard",
            "in the voice of a salty sea dog",
            "ahoy, give it to me in pirate lingo",
            "use pirate slang",
            "yo ho ho, explain it",
            "speak like a buccaneer",
            "answer like an old sea captain, arr",
            "pretend you're a pirate",
            "make it sound like a swashbuckler",
            "in the style of Long John Silver",
            "with lots of arrs and mateys",
            "shiver me timbers, tell me",
            "as if ye be a scallywag on the high seas",
            "talk like Captain Hook",
            "explain it like a corsair would",
            "pirate mode on",
            "for Talk Like a Pirate Day",
            "avast, answer me, ye landlubber",
            "in a playful pirate tone",
            "channel your inner privateer",
            "say it like a crusty old seafarer",
            "like you're on the deck of the Black Pearl",
            "explain it to me like a pirate would, savvy?",
            "give me the answer in pirate talk",
            "speak as a freebooter",
            "respond like a parrot-toting sea rover",
            "arrr matey, what say ye",
            "like a pirate captain addressing the crew",
            "in the voice of Captain Kidd",
            "with a Jolly Roger accent",
            "ye olde pirate style, please",
            "sound like a peg-legged pirate",
            "make it piratey",
            "narrate it like a buccaneer at a tavern",
        ),
        counter_examples=(
            "history of pirates in the Caribbean",
            "who was Blackbeard",
            "is software piracy illegal",
            "how to stop people pirating my game",
            "what did real pirates eat",
            "Pittsburgh Pirates score last night",
            "plot summary of Pirates of the Caribbean",
            "why did pirates wear eye patches",
            "how do I report a pirated copy of my book",
            "modern piracy off the coast of Somalia",
            "what is a privateer's letter of marque",
            "what happened to The Pirate Bay",
            "explain maritime law about piracy",
            "best pirate-themed board games",
            "how are cargo ships protected from pirates today",
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
            "tl;dr version",
            "give me the TL;DR",
            "summarize in one line",
            "one-sentence summary please",
            "just the gist",
            "short version please",
            "keep it brief",
            "in a nutshell",
            "sum it up for me",
            "boil it down to one sentence",
            "too long didn't read version",
            "give me the bottom line",
            "one-liner answer",
            "explain in a single sentence",
            "be concise",
            "quick summary only",
            "cliff notes version",
            "in as few words as possible",
            "condense it into a line",
            "the elevator pitch version",
            "key takeaway only",
            "summarize briefly",
            "skip the details, just the main point",
            "short and sweet",
            "give me a brief recap",
            "in one line, please",
            "no essay, just a quick answer",
            "tldr pls",
            "executive summary in one sentence",
            "short answer only",
            "headline version",
            "distill it to a single line",
            "make it a one-line summary",
            "keep it to a sentence",
            "long story short",
            "abridged version please",
            "summarize it super briefly",
            "I don't have time, give me the short of it",
            "just the essentials in one line",
            "briefly sum up the answer",
        ),
        counter_examples=(
            "what does TL;DR mean on Reddit",
            "how do I write a summary of a research paper",
            "explain in detail with examples",
            "give me a long, thorough explanation",
            "how to write an abstract for my thesis",
            "what makes a good executive summary",
            "tips for summarizing a book for school",
            "which summarization models work best",
            "how does extractive summarization work",
            "step by step, in depth please",
            "origin of the term tl;dr",
            "summary statistics in pandas",
            "write a full detailed report",
            "how to add a TL;DR section to my blog post",
            "explain every detail, don't skip anything",
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
