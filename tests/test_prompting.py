"""The prompting baselines: the LM head against transformers + torch, option-letter
distributions with and without a shared prefix, the prompts each method builds (what it may
read, option order) and GPO's protocol as a dataset."""

import dataclasses

import numpy as np
import pytest

from gpo.data.splits import make_eval_task, make_split
from gpo.data.survey import Group
from gpo.embed.letters import LetterPrompt
from gpo.evaluation.prompting import (
    BOTH_ORDERS,
    STYLES,
    PromptingBaselines,
    few_shot_context,
    persona,
    prompting_predictions,
    question_block,
)
from tests.helpers import needs_smollm2, tiny_survey, torch_smollm2


@pytest.fixture(scope="module")
def scorer():
    from gpo.embed.letters import LetterScorer
    return LetterScorer(progress=False)


class PositionScorer:
    """A stand-in LLM that prefers the first-listed letter: 0.7 for A, the rest shared."""

    chat_template = None
    special_tokens: dict = {}

    def __init__(self):
        self.prompts: list[LetterPrompt] = []

    def distributions(self, prompts, desc=""):
        self.prompts += prompts
        out = []
        for p in prompts:
            d = np.full(p.n_options, 0.3 / (p.n_options - 1))
            d[0] = 0.7
            out.append(d)
        return out


def _task(survey, k=2, seed=0):
    split = make_split(survey, "A", seed=seed)
    return make_eval_task(survey, split, k, seed=seed)


def test_question_block_letters_options_in_either_order():
    q = tiny_survey().questions[0]
    listed = question_block(q)
    assert listed.startswith(f"Question: {q.text}\nA. {q.answer_options[0]}")
    assert listed.endswith("\nAnswer:")
    reversed_ = question_block(q, reverse=True)
    assert f"\nA. {q.answer_options[-1]}\n" in reversed_


def test_personas_name_the_group_in_each_style():
    texts = {s: persona(Group("65+", "AGE"), s) for s in ("QA", "BIO", "PORTRAY")}
    assert "Answer: 65+" in texts["QA"] and "65 or more years old" in texts["BIO"]
    assert texts["PORTRAY"] == "Answer as if you were someone 65 or more years old."
    assert "I come from Japan." in persona(Group("Japan", "country"), "BIO")
    assert "group: user001" in persona(Group("user001", "user"), "PORTRAY")
    with pytest.raises(ValueError, match="persona style"):
        persona(Group("x"), "POEM")


def test_order_control_maps_reversed_letters_back_to_their_options():
    survey = tiny_survey()
    task = _task(survey)
    out = prompting_predictions(survey, task, PositionScorer(), styles=("zero-shot",))
    row, q = 0, int(np.flatnonzero(task.target_GxQ[0])[0])
    n = len(survey.questions[q].answer_options)
    listed = out["LLM zero-shot"][row, q, :n]
    both = out["LLM zero-shot" + BOTH_ORDERS][row, q, :n]
    assert listed[0] == pytest.approx(0.7)  # "A" is the first option as listed
    assert both[0] == pytest.approx(both[-1])  # and the last one, reversed: the bias cancels
    np.testing.assert_allclose(both.sum(), 1.0)
    # Only targets are prompted; elsewhere the prediction is uniform (never scored).
    off = np.flatnonzero(~task.target_GxQ[row] & ~task.context_GxQ[row])
    assert not len(off) or np.allclose(out["LLM zero-shot"][row, off[0], :1],
                                       1 / survey.n_options_Q[off[0]])


def test_few_shot_reads_the_groups_context_answers_and_nothing_else():
    survey = tiny_survey()
    task = _task(survey, k=3)
    scorer = PositionScorer()
    prompting_predictions(survey, task, scorer, styles=("few-shot",))
    row = 0
    g = task.groups[row]
    context = np.flatnonzero(task.context_GxQ[row])
    opening = few_shot_context(survey, g, context, reverse=False)
    for q in context:
        assert survey.questions[q].text in opening
    share = f"A {100 * survey.probs_GxQxO[g, context[0], 0]:.0f}%"
    assert share in opening
    # A prompt never holds the group's answers to a target question: changing them changes
    # no prompt.
    before = [p.prefix + p.suffix for p in scorer.prompts]
    probs = survey.probs_GxQxO.copy()
    rows, targets = np.nonzero(task.target_GxQ)
    probs[task.groups[rows], targets] = 1.0 / survey.max_options
    changed = dataclasses.replace(survey, probs_GxQxO=probs)
    again = PositionScorer()
    prompting_predictions(changed, task, again, styles=("few-shot",))
    assert [p.prefix + p.suffix for p in again.prompts] == before


def test_unknown_style_is_refused():
    survey = tiny_survey()
    with pytest.raises(ValueError, match="prompting style must be one of"):
        prompting_predictions(survey, _task(survey), PositionScorer(), styles=("two-shot",))


@needs_smollm2
def test_lm_head_matches_transformers_torch(scorer):
    import jax.numpy as jnp
    torch, reference = torch_smollm2()
    survey = tiny_survey()
    prompt = _letter_prompts(scorer, survey, "steered-BIO")[0]
    ids = scorer.tokenize(prompt.prefix + prompt.suffix)
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    model = scorer.loaded.model
    hidden, _ = model(jnp.asarray([ids]), jnp.ones((1, len(ids)), bool))
    ours = np.asarray(model.logits(hidden[0]))
    np.testing.assert_allclose(ours, expected, atol=2e-3, rtol=1e-4)
    # The scorer's letter distribution (prefix cached, suffix batched) is the torch model's
    # softmax over the option letters (each letter alone or after a space).
    letters = scorer.letter_ids_LxV[: prompt.n_options]
    last = expected[-1]
    logit = np.logaddexp(last[letters[:, 0]], np.where(letters[:, 1] >= 0,
                                                       last[np.maximum(letters[:, 1], 0)],
                                                       -np.inf))
    want = np.exp(logit - logit.max())
    np.testing.assert_allclose(scorer.distributions([prompt])[0], want / want.sum(),
                               atol=1e-4)


def _letter_prompts(scorer, survey, style):
    from gpo.evaluation.prompting import _system, letter_prompt
    group = survey.groups[0]
    return [letter_prompt(scorer, _system(style, group), "", question_block(q),
                          len(q.answer_options)) for q in survey.questions[:3]]


@needs_smollm2
def test_shared_prefix_gives_the_whole_prompts_distribution(scorer):
    """One prefix pass reused by a batch of suffixes of different lengths equals scoring
    each prompt nearly whole (after a one-line prefix), and repeated prompts are scored
    once."""
    survey = tiny_survey()
    prompts = _letter_prompts(scorer, survey, "steered-PORTRAY")
    cut = prompts[0].prefix.index("\n") + 1  # after the chat header's first line
    whole = [LetterPrompt(p.prefix[:cut], p.prefix[cut:] + p.suffix, p.n_options)
             for p in prompts]
    shared = scorer.distributions(prompts + prompts[:1])
    for a, b in zip(shared, scorer.distributions(whole)):
        np.testing.assert_allclose(a, b, atol=2e-5)
        assert a.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(shared[0], shared[-1])


@needs_smollm2
def test_every_style_runs_through_the_evaluation_path(scorer, tmp_path):
    """The prompting baselines as `evaluate_head` scores them, cached by content: a second
    scorer over the same cache folder recomputes nothing and gives the same numbers."""
    from gpo.embed.letters import LetterScorer
    survey = tiny_survey()
    task = _task(survey, k=2)
    task = dataclasses.replace(task, groups=task.groups[:1], context_GxQ=task.context_GxQ[:1],
                               target_GxQ=task.target_GxQ[:1] & (np.arange(
                                   len(survey.questions)) < 8)[None])
    cached = LetterScorer(progress=False, cache_dir=tmp_path)
    out = PromptingBaselines(cached).predictions(survey, task)
    assert set(out) == {f"LLM {s}{o}" for s in STYLES for o in ("", BOTH_ORDERS)}
    target = task.target_GxQ[0]
    for pred in out.values():
        sums = pred[0, target].sum(-1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    calls = []
    again = LetterScorer(progress=False, cache_dir=tmp_path)
    again._suffix_logits = lambda *a: calls.append(a)  # must not be reached
    repeat = PromptingBaselines(again).predictions(survey, task)
    assert not calls
    for name in out:
        np.testing.assert_array_equal(out[name], repeat[name])


def test_gpo_protocol_survey(data_root):
    from gpo.data.opinionqa import GPO_GROUPS, contentious_keys, load_opinionqa_gpo
    survey = load_opinionqa_gpo(data_root / "opinionqa")
    assert survey.group_labels == list(GPO_GROUPS) and len(GPO_GROUPS) == 17
    assert survey.answered_GxQ.all()
    assert set(survey.question_keys) <= set(contentious_keys(data_root / "opinionqa"))
    assert len(survey.questions) == 179  # of the 500; 156 of them every one of 36 answered
    split = make_split(survey, "A", seed=0)
    assert len(split.train_groups) == 6 and len(split.test_groups) == 11


def test_cli_lists_the_styles_the_evaluation_knows():
    from gpo.cli import PROMPT_STYLES
    assert PROMPT_STYLES == STYLES


@needs_smollm2
def test_gpo_eval_scores_llm_baselines_beside_the_head(trained_run, tmp_path, monkeypatch,
                                                       capsys):
    import json

    from gpo.cli import main
    monkeypatch.setenv("GPO_CACHE_DIR", str(tmp_path / "cache"))
    run_dir, _ = trained_run("reference")
    main(["eval", "--run-dir", str(run_dir), "--k", "2", "--llm-baselines", "--llm-styles",
          "zero-shot", "--llm-questions", "3", "--out", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert "3 fixed random ones scored" in out
    assert "LLM zero-shot" in out and "LLM zero-shot, both orders" in out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    scores = report["splits"][0]["scores"]
    assert {"REFERENCE", "uniform", "LLM zero-shot"} <= set(scores)
    assert any((tmp_path / "cache" / "llm_answers").glob("*/part-*.npy"))
    with pytest.raises(SystemExit):
        main(["eval", "--run-dir", str(run_dir), "--k", "2", "--llm-baselines",
              "--llm-styles", "two-shot", "--out", str(tmp_path / "eval2")])
    assert "invalid choice: 'two-shot'" in capsys.readouterr().err


_SHARDED = """
import json, sys
import numpy as np
from gpo.embed.letters import LetterScorer
from gpo.evaluation.prompting import _system, letter_prompt, question_block
from tests.helpers import tiny_survey
survey = tiny_survey()
scorer = LetterScorer(progress=False)
prompts = [letter_prompt(scorer, _system("steered-BIO", survey.groups[0]), "",
                         question_block(q), len(q.answer_options)) for q in survey.questions[:5]]
print(json.dumps([scorer.mesh.shape["data"], np.concatenate(
    scorer.distributions(prompts)).tolist()]))
"""


@needs_smollm2
def test_batches_split_over_devices_give_the_same_distributions(scorer):
    """8 simulated devices, each scoring its share of a batch, agree with one device."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                          env=env, cwd=root, check=True)
    devices, sharded = json.loads(done.stdout.strip().splitlines()[-1])
    survey = tiny_survey()
    from gpo.evaluation.prompting import _system, letter_prompt
    prompts = [letter_prompt(scorer, _system("steered-BIO", survey.groups[0]), "",
                             question_block(q), len(q.answer_options))
               for q in survey.questions[:5]]
    assert devices == 8
    np.testing.assert_allclose(sharded, np.concatenate(scorer.distributions(prompts)),
                               atol=5e-5)
