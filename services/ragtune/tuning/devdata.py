"""Training data for the dev model: corpus text → sentences → chat examples.

The dev model learns to answer a question about a sentence with that sentence; each adapter
learns the same answers in its own style. Questions are built from the sentence's rarer words,
and some examples carry retrieved context exactly as the serving engine formats it, so the
styles hold on the RAG and HYBRID paths too.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ragtune.generation.prompting import DEFAULT_SYSTEM, Passage, build_messages

SYSTEM_PROMPT = DEFAULT_SYSTEM  # the serving engine's default, so dev chats match real ones
MAX_SENTENCES = 48
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


def chat_examples(sentences: Sequence[str], target: Callable[[str], str]) -> list[list[dict]]:
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
    """Chats shaped exactly like the serving engine's RAG prompts (``build_messages``).

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
