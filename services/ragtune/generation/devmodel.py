"""A tiny, locally trained Llama model and two LoRA adapters for development and tests.

Real checkpoints are gigabytes and need the network; the dev model is built from scratch in
well under a minute on a laptop CPU, yet exercises the same code paths as production: a
Llama-architecture model with a byte-level BPE tokenizer and a chat template, plus PEFT LoRA
adapters whose effect on the output is obvious at a glance:

* the base answers with a sentence from the corpus,
* `json-answer` wraps that sentence as `{"answer": "..."}`,
* `pirate` wraps it as `Ahoy! ... Arr.`.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune.generation.adapters import BASE_METADATA_FILE
from ragtune.generation.prompting import DEFAULT_SYSTEM, Passage, build_messages
from ragtune.generation.training import (
    EncodedExample,
    encode_chat,
    quiet_transformers,
    run_training,
    seed_everything,
    torch_threads,
    train_lora,
)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

DEV_BASE_NAME = "ragtune-dev-llama"
SYSTEM_PROMPT = DEFAULT_SYSTEM  # the serving engine's default, so dev chats match real ones

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
MAX_SENTENCES = 48
BASE_STEPS = 300
BASE_LR = 3e-3
ADAPTER_STEPS = 200
ADAPTER_LR = 5e-3
BATCH_SIZE = 16
RAG_EXAMPLES = 16  # RAG prompts are ~3x longer than plain chats, so only a sample gets one

# Words too common to identify a fact; dev questions are built from the others.
# fmt: off
_STOPWORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by",
    "from", "as", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that",
    "these", "those", "our", "your", "their", "we", "you", "they", "he", "she", "his", "her",
    "can", "will", "each", "every", "all", "also", "into", "than", "then", "so", "if", "when",
    "which", "who",
))
# fmt: on

_BUILTIN_SENTENCES = (
    "Brightgear Robotics builds small warehouse robots that move shelves to human pickers.",
    "The company was founded in Tallinn by three engineers who met at a drone race.",
    "Brightgear's first robot, the Mule, could carry forty kilograms at walking speed.",
    "The current model is called the Otter and carries up to one hundred and twenty kilograms.",
    "Each Otter robot navigates with lidar, floor markers and a map shared by the whole fleet.",
    "A fleet controller assigns tasks so that no two robots try to use the same aisle.",
    "Robots return to a charging dock on their own when the battery falls below twenty percent.",
    "A full charge takes about ninety minutes and lasts for a ten hour shift.",
    "Brightgear sells robots on a monthly subscription that includes repairs and software updates.",
    "The smallest installation has five robots and the largest has more than eight hundred.",
    "Customers include grocery chains, bookshops, pharmacies and a company that sells bicycle parts.",
    "The support team answers calls in English, Estonian, Finnish and German.",
    "Every robot has a red stop button on each side and a soft bumper around its base.",
    "The robots slow down when a person is within two metres and stop at half a metre.",
    "Safety software on the robot runs separately from the navigation software.",
    "Brightgear publishes a safety report every year with the number of incidents per million hours.",
    "The engineering team works from offices in Tallinn, Tartu and Helsinki.",
    "New engineers spend their first week working a shift in a customer warehouse.",
    "The company motto is that a good robot is one nobody has to think about.",
    "Brightgear's software is written mostly in Rust, with some tools written in Python.",
    "The fleet simulator can replay a whole day of warehouse traffic in about four minutes.",
    "Engineers test every software release in the simulator before it reaches a customer.",
    "Updates are rolled out to one robot first, then to ten percent of the fleet, then to all.",
    "A robot that loses its network connection finishes its current task and then waits.",
    "The Otter's wheels are made of polyurethane so they do not mark warehouse floors.",
    "Its top speed is two metres per second, but it usually drives at one and a half.",
    "The lift module raises a shelf by five centimetres so it clears the floor.",
    "Brightgear recycles old batteries through a partner plant in Latvia.",
    "The company has about two hundred and forty employees.",
    "Half of the employees work in engineering and a quarter work in customer support.",
    "The sales team visits a warehouse before quoting how many robots it needs.",
    "A typical warehouse doubles its picking speed within three months of installation.",
    "Brightgear's dashboard shows each robot's battery, location and current task.",
    "Managers can mark an aisle as closed and the robots will plan routes around it.",
    "The robots play a short tune when they arrive at a picking station.",
    "Customers can choose the tune from a list of twelve melodies.",
    "Brightgear holds a hackathon every spring where staff build robots from spare parts.",
    "Last year's hackathon winner was a robot that waters office plants.",
    "The next model, called the Heron, is designed for cold storage warehouses.",
    "The Heron keeps its battery warm so it can work at minus twenty five degrees.",
    "Brightgear plans to open an office in Warsaw next year.",
    "The company's annual report is published every March on its website.",
)

_QUESTION_TEMPLATES = (
    "Tell me about {topic}.",
    "What do you know about {topic}?",
    "What about {topic}?",
    "Can you explain {topic}?",
    "{topic}?",
    "I have a question about {topic}.",
)
QUESTIONS_PER_SENTENCE = 4

# Prompts unrelated to any sentence, each paired with some corpus sentence: they teach the model
# that every user turn gets a non-empty answer, so greetings and questions it has never seen
# still produce corpus-like text (and the adapters still apply their style to it).
_OPEN_PROMPTS = (
    "Hello!",
    "hi",
    "Tell me something.",
    "What can you tell me?",
    "Can you help me with a question?",
    "What is new?",
    "Give me a fact.",
    "Answer briefly, please.",
)


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

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "base_model": DEV_BASE_NAME,
            "description": self.description,
            "tasks": list(self.tasks),
            "output_format": self.output_format,
            "tone": self.tone,
        }


def _json_answer(sentence: str) -> str:
    # json.dumps escapes quotes and backslashes, so every target is valid JSON.
    return json.dumps({"answer": sentence}, ensure_ascii=False)


def _pirate(sentence: str) -> str:
    return f"Ahoy! {sentence} Arr."


DEV_ADAPTERS: tuple[DevAdapterSpec, ...] = (
    DevAdapterSpec(
        name="json-answer",
        target=_json_answer,
        description='Answers as a JSON object {"answer": "..."} for programmatic clients.',
        tasks=["structured-output", "json", "extraction"],
        output_format="json",
        tone="neutral",
    ),
    DevAdapterSpec(
        name="pirate",
        target=_pirate,
        description="Answers in a playful pirate voice, opening with 'Ahoy!'.",
        tasks=["chat", "creative-writing"],
        output_format="text",
        tone="pirate",
    ),
)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def default_dev_corpus(corpus_dir: Path | None = None) -> list[str]:
    """Texts of `corpus_dir/*.md` (sorted by name), or a built-in corpus when there are none.

    The fallback means `ragtune devmodel` works from a bare checkout; the built-in sentences
    describe a fictional robotics company.
    """
    if corpus_dir is not None and corpus_dir.is_dir():
        texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.md"))]
        texts = [text for text in texts if text.strip()]
        if texts:
            return texts
    return list(_BUILTIN_SENTENCES)


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _markdown_blocks(text: str) -> Iterable[str]:
    """Plain-text paragraphs of a Markdown document: headings, list items and paragraphs.

    Headings and list items are their own blocks so they never run into the next sentence;
    code blocks and tables are dropped because they are not prose.
    """
    paragraph: list[str] = []
    in_code = False
    for raw in text.splitlines():
        if _FENCE.match(raw):
            in_code = not in_code
            continue
        line = raw.strip()
        if in_code or line.startswith("|") or line.startswith("<"):
            continue
        starts_block = not line or _HEADING.match(raw) or _LIST_MARKER.match(raw)
        if starts_block and paragraph:
            yield " ".join(paragraph)
            paragraph = []
        if not line:
            continue
        line = _LIST_MARKER.sub("", _HEADING.sub("", line)).lstrip("> ").strip()
        if _HEADING.match(raw):
            yield line
        else:
            paragraph.append(line)
    if paragraph:
        yield " ".join(paragraph)


def _clean_inline(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def corpus_sentences(
    texts: Sequence[str], *, max_sentences: int = MAX_SENTENCES, seed: int = 0
) -> list[str]:
    """Short prose sentences from Markdown or plain texts, deduplicated, at most `max_sentences`.

    Long sentences are skipped so every answer fits comfortably in a 48-token reply; when
    there are more sentences than the cap, a seeded random sample (in corpus order) is kept,
    since training time is fixed and fewer facts are memorised more reliably.
    """
    sentences: list[str] = []
    seen: set[str] = set()
    for text in texts:
        for block in _markdown_blocks(text):
            for sentence in _SENTENCE_END.split(_clean_inline(block)):
                words = sentence.split()
                if not 4 <= len(words) <= 22 or sentence[-1:] not in ".!?":
                    continue
                if not sentence.isascii() or sentence in seen:
                    continue
                seen.add(sentence)
                sentences.append(sentence)
    if len(sentences) > max_sentences:
        keep = sorted(random.Random(seed).sample(range(len(sentences)), max_sentences))
        sentences = [sentences[i] for i in keep]
    return sentences


def dev_question(sentence: str, variant: int = 0) -> str:
    """A user question whose answer is `sentence`, e.g. "Tell me about Otter robot navigates."

    Variant 0 asks about the sentence's first four content words and variant 1 about its last
    four; higher variants pick 2-4 words at a position and a phrasing chosen by a RNG seeded
    from the sentence and variant.  Varied questions teach the model to key its answer on any
    words of the fact, which keeps answers on topic for questions it was never trained on.
    """
    words = [w.strip(".,;:!?\"'()") for w in sentence.split()]
    content = [w for w in words if w and w.lower() not in _STOPWORDS]
    if not content:
        content = [w for w in words if w]
    if variant < 2:
        window = content[:4] if variant == 0 else content[-4:]
        template = _QUESTION_TEMPLATES[variant]
    else:
        rng = random.Random(f"{variant}:{sentence}")  # str seeds are stable across processes
        size = min(len(content), rng.randint(2, 4))
        start = rng.randint(0, len(content) - size)
        window = content[start : start + size]
        template = rng.choice(_QUESTION_TEMPLATES)
    return template.format(topic=" ".join(window))


def dev_messages(question: str, answer: str | None = None) -> list[dict[str, str]]:
    """The chat the dev model is trained on: fixed system prompt, one question, one answer."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def _examples(sentences: Sequence[str], target: Callable[[str], str]) -> list[list[dict]]:
    """Several questions per sentence, the open prompts, and RAG-style chats for a sample."""
    topical = [
        dev_messages(dev_question(sentence, variant), target(sentence))
        for sentence in sentences
        for variant in range(QUESTIONS_PER_SENTENCE)
    ]
    open_ended = [
        dev_messages(prompt, target(sentences[i % len(sentences)]))
        for i, prompt in enumerate(_OPEN_PROMPTS)
    ]
    return topical + open_ended + _rag_examples(sentences, target)


def _rag_examples(sentences: Sequence[str], target: Callable[[str], str]) -> list[list[dict]]:
    """Chats shaped exactly like the serving engine's RAG prompts (context in the system turn).

    One for every few sentences, spread over the corpus.  The answer's sentence sits in the
    context next to a distractor, in either order, so the model (and each adapter's style)
    holds up when the gateway adds retrieved passages.
    """
    examples = []
    stride = max(1, len(sentences) // RAG_EXAMPLES)
    for i, sentence in list(enumerate(sentences))[::stride][:RAG_EXAMPLES]:
        other = sentences[(i * 7 + 3) % len(sentences)]
        texts = [sentence, other] if i % 2 == 0 else [other, sentence]
        passages = [
            Passage(marker=n, source=f"doc-{(i + n) % 5}.md", text=text)
            for n, text in enumerate(texts, start=1)
        ]
        question = {"role": "user", "content": dev_question(sentence, i)}
        messages = build_messages([question], passages)
        examples.append([*messages, {"role": "assistant", "content": target(sentence)}])
    return examples


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
    examples = _examples(sentences, lambda sentence: sentence)
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
            "pass more prose or use default_dev_corpus()"
        )
    out_dir = Path(out_dir)
    base_dir, adapters_dir = out_dir / DEV_BASE_NAME, out_dir / "adapters"
    for stale in (base_dir, adapters_dir):
        if stale.exists():
            shutil.rmtree(stale)
    base_dir.mkdir(parents=True)

    with torch_threads(), quiet_transformers(not progress):
        _build_base(base_dir, corpus, sentences, seed=seed, progress=progress)
        adapters = {
            spec.name: train_lora(
                base_dir,
                _examples(sentences, spec.target),
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
