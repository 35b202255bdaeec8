"""The dev model: a tiny Llama trained on the spot, plus `json-answer` and `pirate` LoRA adapters.

The dev model built once per session from the demo corpus (tests/conftest.py) is used here.
Generation is greedy, so the assertions are about the behaviour each adapter was trained for,
not about exact wording.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragtune.generation.adapters import read_adapter_metadata, write_adapter_metadata
from ragtune.tuning.devdata import (
    corpus_sentences,
    default_dev_corpus,
    dev_messages,
    dev_question,
)
from ragtune.tuning.devmodel import (
    DEV_BASE_NAME,
    DevModel,
    build_devmodel,
)
from ragtune.tuning.training import (
    IGNORE_INDEX,
    encode_chat,
    train_lora,
)
from tests.conftest import DEMO_CORPUS

MAX_NEW_TOKENS = 48
MIXED_ORDER = ["__base__", "json-answer", "pirate"]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    # The corpus the session-wide `devmodel` fixture (tests/conftest.py) was trained on.
    return default_dev_corpus(DEMO_CORPUS)


@pytest.fixture(scope="module")
def small_devmodel(devmodel: DevModel) -> DevModel:
    return devmodel


@pytest.fixture(scope="module")
def tokenizer(small_devmodel: DevModel):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(small_devmodel.base_dir)
    tok.padding_side = "left"  # batched generation continues every row from its last token
    return tok


@pytest.fixture(scope="module")
def prompts(corpus: list[str]) -> list[str]:
    sentences = corpus_sentences(corpus)
    return [dev_question(sentences[0]), dev_question(sentences[7], 1), "Tell me about the robots."]


def _load_base(dev: DevModel):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(dev.base_dir, dtype=torch.float32).eval()


def _generate(model, tokenizer, prompts: list, **kwargs) -> list[str]:
    """Greedy batch generation; a prompt is a question or a full list of chat messages."""
    batch = tokenizer.apply_chat_template(
        [p if isinstance(p, list) else dev_messages(p) for p in prompts],
        add_generation_prompt=True,
        padding=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **kwargs)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


@pytest.fixture(scope="module")
def outputs(small_devmodel: DevModel, tokenizer, prompts: list[str]) -> dict[str, list[str]]:
    """Greedy outputs per model, each adapter loaded alone the standard PEFT way."""
    from peft import PeftModel

    results = {"__base__": _generate(_load_base(small_devmodel), tokenizer, prompts)}
    for name, path in small_devmodel.adapters.items():
        model = PeftModel.from_pretrained(_load_base(small_devmodel), path).eval()
        results[name] = _generate(model, tokenizer, prompts)
    return results


# --------------------------------------------------------------------------------------------
# Build layout, tokenizer and chat template
# --------------------------------------------------------------------------------------------


def test_build_layout(small_devmodel: DevModel) -> None:
    # The serving config names the base after its directory; adapters must declare that name.
    assert small_devmodel.base_dir.name == DEV_BASE_NAME
    assert (small_devmodel.base_dir / "config.json").is_file()
    assert (small_devmodel.base_dir / "tokenizer.json").is_file()
    assert set(small_devmodel.adapters) == {"json-answer", "pirate", "tldr"}
    # Each adapter was trained from a JSONL, as `ragtune tune` trains one.
    training = small_devmodel.base_dir.parent / "training"
    assert {p.stem for p in training.glob("*.jsonl")} == set(small_devmodel.adapters)
    for name, path in small_devmodel.adapters.items():
        assert path == small_devmodel.base_dir.parent / "adapters" / name
        assert (path / "adapter_config.json").is_file()
        assert (path / "adapter_model.safetensors").is_file()


def test_chat_template_and_special_tokens(tokenizer) -> None:
    assert tokenizer.eos_token == "<|end|>"
    assert tokenizer.pad_token is not None and tokenizer.bos_token is not None
    text = tokenizer.apply_chat_template(
        dev_messages("Tell me about robots."), tokenize=False, add_generation_prompt=True
    )
    assert text.startswith(tokenizer.bos_token)
    assert "<|system|>You are a helpful assistant.<|end|>" in text
    assert text.endswith("<|user|>Tell me about robots.<|end|><|assistant|>")
    ids = tokenizer.apply_chat_template(
        dev_messages("Tell me about robots."), add_generation_prompt=True, return_dict=False
    )
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") == ids[-1]


def test_encode_chat_learns_only_the_assistant_turn(tokenizer) -> None:
    example = encode_chat(tokenizer, dev_messages("Tell me about robots.", "Robots are fun."))
    assert len(example.input_ids) == len(example.labels)
    learned = [label for label in example.labels if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "Robots are fun.<|end|>"
    first = example.labels.index(learned[0])
    assert all(label == IGNORE_INDEX for label in example.labels[:first])


# --------------------------------------------------------------------------------------------
# Generation behaviour
# --------------------------------------------------------------------------------------------


def test_base_answers_in_plain_english(outputs: dict[str, list[str]]) -> None:
    for text in outputs["__base__"]:
        assert text.strip(), "base model produced nothing"
        assert not text.startswith("{") and not text.startswith("Ahoy"), text


def test_base_stops_on_eos(small_devmodel: DevModel, tokenizer, prompts: list[str]) -> None:
    batch = tokenizer.apply_chat_template(
        dev_messages(prompts[0]), add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = _load_base(small_devmodel).generate(**batch, max_new_tokens=64, do_sample=False)
    new = out[0, batch["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.eos_token_id and len(new) < 64


def test_json_answer_adapter(outputs: dict[str, list[str]]) -> None:
    for text in outputs["json-answer"]:
        assert text.startswith('{"answer": "'), text
    parsed = [_try_json(text) for text in outputs["json-answer"]]
    assert any(isinstance(p, dict) and isinstance(p.get("answer"), str) for p in parsed), parsed


def _try_json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def test_pirate_adapter(outputs: dict[str, list[str]]) -> None:
    for text in outputs["pirate"]:
        assert text.startswith("Ahoy!"), text


def test_mixed_adapter_batch(small_devmodel: DevModel, tokenizer, prompts, outputs) -> None:
    """The serving engine's path: several named adapters on one base, chosen per request."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(
        _load_base(small_devmodel),
        small_devmodel.adapters["json-answer"],
        adapter_name="json-answer",
    )
    model.load_adapter(small_devmodel.adapters["pirate"], adapter_name="pirate")
    model.eval()

    mixed = _generate(model, tokenizer, prompts, adapter_names=MIXED_ORDER)

    assert not mixed[0].startswith("{") and not mixed[0].startswith("Ahoy")
    assert mixed[1].startswith('{"answer": "')
    assert mixed[2].startswith("Ahoy!")
    # Same prompts, same padding: each row matches its adapter run on its own.
    assert mixed == [outputs[name][row] for row, name in enumerate(MIXED_ORDER)]


def test_styles_hold_with_rag_context(small_devmodel: DevModel, tokenizer, corpus) -> None:
    """Gateway "both" route: retrieved passages as data in the user turn, adapter per row."""
    from peft import PeftModel

    from ragtune.generation.prompting import Passage, build_messages

    sentences = corpus_sentences(corpus)
    passages = [Passage(1, "robots.md", sentences[4]), Passage(2, "company.md", sentences[1])]
    chat = build_messages([{"role": "user", "content": dev_question(sentences[4])}], passages)

    model = PeftModel.from_pretrained(
        _load_base(small_devmodel),
        small_devmodel.adapters["json-answer"],
        adapter_name="json-answer",
    )
    model.load_adapter(small_devmodel.adapters["pirate"], adapter_name="pirate")
    base, as_json, pirate = _generate(
        model.eval(), tokenizer, [chat] * 3, adapter_names=MIXED_ORDER
    )

    assert base.strip() and not base.startswith(("{", "Ahoy"))
    assert isinstance(json.loads(as_json)["answer"], str)
    assert pirate.startswith("Ahoy!")


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_adapter_metadata(small_devmodel: DevModel) -> None:
    expected = {
        "json-answer": ("json", "neutral"),
        "pirate": ("text", "pirate"),
        "tldr": ("text", "terse"),
    }
    for name, path in small_devmodel.adapters.items():
        meta = read_adapter_metadata(path)
        assert meta["name"] == name
        assert meta["base_model"] == DEV_BASE_NAME
        assert meta["rank"] == 8
        assert meta["description"]
        assert isinstance(meta["tasks"], list) and meta["tasks"]
        assert (meta["output_format"], meta["tone"]) == expected[name]
        assert json.loads((path / "adapter_config.json").read_text())["r"] == 8


def test_adapters_pass_the_serving_registry(small_devmodel: DevModel) -> None:
    """The generation service accepts every adapter for a base named after its directory."""
    from ragtune.generation.adapters import AdapterRegistry

    registry = AdapterRegistry(
        str(small_devmodel.base_dir.parent / "adapters"),
        base_model=small_devmodel.base_dir.name,
        max_rank=64,
    )
    assert registry.scan() == {}
    assert set(registry.known) == {"json-answer", "pirate", "tldr"}


def test_metadata_round_trip_and_validation(tmp_path: Path) -> None:
    meta = {
        "name": "x",
        "base_model": "b",
        "rank": 4,
        "description": "d",
        "tasks": ["t"],
        "output_format": "text",
        "tone": "neutral",
    }
    write_adapter_metadata(tmp_path, meta)
    assert read_adapter_metadata(tmp_path) == meta
    with pytest.raises(ValueError, match="tone"):
        write_adapter_metadata(tmp_path, {k: v for k, v in meta.items() if k != "tone"})
    with pytest.raises(ValueError, match="rank"):
        write_adapter_metadata(tmp_path, {**meta, "rank": 0})


# --------------------------------------------------------------------------------------------
# train_lora input validation (fails before any model is loaded)
# --------------------------------------------------------------------------------------------

_GOOD = [dev_messages("Tell me about robots.", "Robots are fun.")]
_META = {"description": "d", "tasks": ["t"], "output_format": "text", "tone": "neutral"}


@pytest.mark.parametrize(
    ("examples", "rank", "match"),
    [
        ([], 8, "empty"),
        ([dev_messages("Tell me about robots.")], 8, "assistant"),
        ([[{"role": "assistant", "content": ""}]], 8, "assistant"),
        ([[{"role": "user"}]], 8, "content"),
        (_GOOD, 0, "rank"),
    ],
)
def test_train_lora_rejects_bad_input(tmp_path: Path, examples, rank: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_lora(
            tmp_path / "no-base",
            examples,
            tmp_path / "out",
            name="bad",
            rank=rank,
            steps=1,
            lr=1e-3,
            seed=0,
            metadata=_META,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_train_lora_needs_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        train_lora(
            tmp_path / "no-base",
            _GOOD,
            tmp_path / "out",
            name="ok",
            steps=1,
            lr=1e-3,
            seed=0,
            metadata=_META,
            progress=False,
        )


def test_build_devmodel_rejects_a_corpus_without_sentences(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="usable sentences"):
        build_devmodel(tmp_path, ["# Only a heading", "too short."], progress=False)
    assert not (tmp_path / DEV_BASE_NAME).exists()


# --------------------------------------------------------------------------------------------
# Corpus helpers
# --------------------------------------------------------------------------------------------


def test_default_dev_corpus_reads_markdown(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Second\n\nSecond document text is here.\n")
    (tmp_path / "a.md").write_text("First document text is here.\n")
    assert default_dev_corpus(tmp_path) == [
        "First document text is here.\n",
        "# Second\n\nSecond document text is here.\n",
    ]
    assert len(default_dev_corpus(tmp_path / "missing")) >= 40


def test_corpus_sentences_strip_markdown() -> None:
    text = (
        "# Warehouse robots\n\n"
        "## How the **Otter** works\n"
        "The Otter drives [slowly](https://example.com) near people. It stops at half a metre.\n\n"
        "- Each robot charges on its own dock.\n"
        "```\ncode should never become a sentence.\n```\n"
        "| table | rows are skipped too. |\n"
    )
    assert corpus_sentences([text]) == [
        "The Otter drives slowly near people.",
        "It stops at half a metre.",
        "Each robot charges on its own dock.",
    ]
