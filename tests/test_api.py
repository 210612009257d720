import json

import numpy as np
import pytest

import gpo
from gpo.checkpoint import CheckpointError
from gpo.cli import main as cli_main
from gpo.data.splits import make_eval_task, make_split
from gpo.evaluation.evaluate import predict_task, run_table
from gpo.run_dir import RunDir


@pytest.fixture
def run(tiny, trained_run):
    """(survey, embeddings, run folder) of the shared tiny GPO run."""
    return (*tiny, trained_run("gpo")[0])


def test_adapt_and_predict_by_key_text_and_embedding(run):
    survey, embeddings, run_dir = run
    model = gpo.load(run_dir)
    q0, q1, q2 = survey.questions[:3]
    context = [(q0.key, survey.probs_GxQxO[0, 0, :len(q0.answer_options)]),
               ((q1.text, q1.answer_options), survey.probs_GxQxO[0, 1, :len(q1.answer_options)])]
    group = model.adapt(context)
    by_key, by_text, by_array = group.predict([
        q2.key, (q2.text, q2.answer_options), embeddings[2, :len(q2.answer_options)]])
    np.testing.assert_allclose(by_key.probs.sum(), 1.0, atol=1e-5)
    assert by_key.options == q2.answer_options
    # The lexical embedder is deterministic: a key and its text give the same prediction.
    np.testing.assert_allclose(by_key.probs, by_text.probs, atol=1e-6)
    np.testing.assert_allclose(by_key.probs, by_array.probs, atol=1e-6)
    assert np.all(by_key.std > 0)


def test_api_matches_batch_evaluation_and_survives_reload(run):
    survey, embeddings, run_dir = run
    model = gpo.load(run_dir)
    split = make_split(survey, "A", seed=0)
    task = make_eval_task(survey, split, k=5)
    table = run_table(RunDir(run_dir), survey, split)
    prob_GxQxO, _ = predict_task(model.module, table, survey, task, split.train_groups)
    g = task.groups[0]
    context = [(survey.questions[q].key,
                survey.probs_GxQxO[g, q, :survey.n_options_Q[q]])
               for q in np.flatnonzero(task.context_GxQ[0])]
    targets = np.flatnonzero(task.target_GxQ[0])[:6]
    preds = model.adapt(context).predict([survey.questions[q].key for q in targets])
    again = gpo.load(run_dir).adapt(context).predict([survey.questions[q].key for q in targets])
    for q, p, p2 in zip(targets, preds, again):
        np.testing.assert_allclose(p.probs, prob_GxQxO[0, q, :len(p.probs)], atol=1e-5)
        np.testing.assert_array_equal(p.probs, p2.probs)


@pytest.mark.parametrize("head", ["gpo", "reference"])
def test_predictions_in_chunks_equal_one_call(head, tiny, trained_run, monkeypatch):
    """predict() runs many targets in chunks of whole questions (memory bounded, time linear);
    the chunks give what one call gives, in order."""
    import gpo.api
    survey = tiny[0]
    model = gpo.load(trained_run(head)[0])
    group = model.adapt([(q.key, survey.probs_GxQxO[0, i, :len(q.answer_options)])
                         for i, q in enumerate(survey.questions[:4])])
    keys = [q.key for q in survey.questions[4:]] * 3  # repeats are fine
    whole = group.predict(keys)
    monkeypatch.setattr(gpo.api, "PREDICT_CHUNK_POINTS", 7)  # a question or two a chunk
    chunked = group.predict(keys)
    assert [p.key for p in chunked] == keys
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-5)


@pytest.mark.parametrize("context, message", [
    ([], "at least one"),
    ([("SYN0000", [0.5, 0.5, 0.0, 0.0, 0.0, 0.0])], r"6 probabilities for \d options"),
    ([("SYN0001", [-1.0] + [1.0] * 10)], "probabilities"),
    ([("NOPE", [0.5, 0.5])], "unknown question key 'NOPE'"),
    ([(np.zeros((2, 7)), [0.5, 0.5])], r"shape \(2, 7\), expected \(options, 32\)"),
    ([(np.full((2, 32), np.nan), [0.5, 0.5])], r"context item 0: option embeddings are not "
                                               r"finite \(option 0\)"),
    (["SYN0000"], "expected \\(question, distribution\\)"),
])
def test_bad_context_names_the_item(run, context, message):
    model = gpo.load(run[2])
    with pytest.raises(ValueError, match=message):
        model.adapt(context)


def test_nan_distribution_is_rejected(run):
    survey, _, run_dir = run
    q = survey.questions[0]
    with pytest.raises(ValueError, match="context item 0 .*finite"):
        gpo.load(run_dir).adapt([(q.key, [np.nan] * len(q.answer_options))])


def test_cli_predict(run, tmp_path, capsys):
    survey, _, run_dir = run
    q0, q1 = survey.questions[:2]
    (tmp_path / "context.json").write_text(json.dumps(
        [{"question": q0.key, "distribution": [1.0] * len(q0.answer_options)}]))
    (tmp_path / "questions.json").write_text(json.dumps(
        [q1.key, {"text": "Is tea good?", "options": ["Yes", "No"]}]))
    cli_main(["predict", "--run-dir", str(run_dir), "--context", str(tmp_path / "context.json"),
              "--questions", str(tmp_path / "questions.json")])
    out = json.loads(capsys.readouterr().out)
    assert [p["options"] for p in out] == [list(q1.answer_options), ["Yes", "No"]]
    assert all(abs(sum(p["probs"]) - 1) < 1e-5 for p in out)


def test_ppd_head_trains_saves_and_reloads_through_the_same_code(run, trained_run):
    survey, embeddings, _ = run
    ppd_dir = trained_run("ppd")[0]
    model = gpo.load(ppd_dir)
    assert model.config.head == "ppd"
    q0, q1 = survey.questions[:2]
    context = [(q0.key, survey.probs_GxQxO[0, 0, :len(q0.answer_options)])]
    group = model.adapt(context)
    assert group.group_embedding.shape == (2, 16)
    again = gpo.load(ppd_dir).adapt(context)
    np.testing.assert_array_equal(group.group_embedding, again.group_embedding)
    np.testing.assert_array_equal(group.predict([q1.key])[0].probs,
                                  again.predict([q1.key])[0].probs)
    assert gpo.load(run[2]).adapt(context).group_embedding is None  # GPO has no z
    # Interpolation: t = 0 and t = 1 give the end groups, halfway mixes z linearly.
    other = model.adapt([(q0.key, survey.probs_GxQxO[5, 0, :len(q0.answer_options)])])
    for t, end in ((0.0, group), (1.0, other)):
        np.testing.assert_allclose(group.interpolate(other, t).predict([q1.key])[0].probs,
                                   end.predict([q1.key])[0].probs, atol=1e-6)
    np.testing.assert_allclose(group.interpolate(other, 0.5).group_embedding,
                               (group.group_embedding + other.group_embedding) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="no group space"):
        gpo.load(run[2]).adapt(context).interpolate(gpo.load(run[2]).adapt(context), 0.5)


def test_loaded_model_names_its_checkpoint(run, trained_run):
    """load() says which step's weights it holds and their validation alignment."""
    _, _, run_dir = run
    model = gpo.load(run_dir)
    best = max(trained_run("gpo")[1].history, key=lambda record: record["validation"])
    assert (model.checkpoint_step, model.checkpoint_validation) == (best["step"],
                                                                    best["validation"])


def test_non_finite_embeddings_are_rejected_in_predict_too(run):
    survey, _, run_dir = run
    q = survey.questions[0]
    group = gpo.load(run_dir).adapt([(q.key, [1.0] * len(q.answer_options))])
    bad = np.zeros((3, 32), np.float32)
    bad[1, 4] = np.inf
    with pytest.raises(ValueError, match=r"predict item 1: option embeddings are not finite "
                                         r"\(option 1\)"):
        group.predict([q.key, bad])


def test_predictions_read_well_and_convert_to_rows(run):
    survey, _, run_dir = run
    q0, q1, q2 = survey.questions[:3]
    predictions = gpo.load(run_dir).adapt(
        [(q0.key, [1.0] * len(q0.answer_options))]).predict([q1.key, q2.key])
    text = str(predictions)
    assert text.startswith(q1.text) and q2.text in text and "%" in text
    assert "0.21899999" not in text  # probabilities print rounded
    # In a notebook: an HTML table, a heading row per question, escaped text.
    page = predictions._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + 2 + len(
        q1.answer_options) + len(q2.answer_options)
    assert f"{predictions.level:.0%} interval" in page and "<script" not in page
    rows = predictions.records()
    assert len(rows) == len(q1.answer_options) + len(q2.answer_options)
    low, high = predictions[0].interval(predictions.level)
    assert rows[0] == {"question": q1.text, "key": q1.key, "option": q1.answer_options[0],
                       "prob": round(float(predictions[0].probs[0]), 6),
                       "std": round(float(predictions[0].std[0]), 6),
                       "level": predictions.level, "low": round(float(low[0]), 6),
                       "high": round(float(high[0]), 6)}
    pandas = pytest.importorskip("pandas")
    frame = predictions.to_frame()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == len(rows)
    assert abs(frame.groupby("key")["prob"].sum() - 1).max() < 1e-5


def _truncate_arrays(folder):
    """Cut every array data file of a checkpoint item in half (what an interrupted copy
    leaves)."""
    for data in (p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


# a damaged read leaves no "exception ignored" report behind (gpo.checkpoint)
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoints_are_named_in_one_message(copied_run):
    """A truncated best checkpoint falls back to the latest, saying so; with both damaged,
    one error names each step and the array, and the CLI prints one line."""
    import subprocess
    import sys
    copy = copied_run("gpo")
    best = next((copy / "checkpoints" / "best").iterdir())
    _truncate_arrays(best / "model")
    with pytest.warns(UserWarning, match=r"using the latest checkpoint \(step \d+\): best "
                                         rf"checkpoint \(step {best.name}\): array '.*' is "
                                         "damaged"):
        model = gpo.load(copy)
    assert model.checkpoint_step == int(max(p.name for p in (copy / "checkpoints" /
                                                             "latest").iterdir()))
    for step in (copy / "checkpoints" / "latest").iterdir():
        _truncate_arrays(step / "model")
    with pytest.raises(CheckpointError,
                       match=r"no checkpoint can be read: best checkpoint \(step \d+\): array "
                             r"'[\w.]+' is damaged .*; latest checkpoint .* train again"):
        gpo.load(copy)
    done = subprocess.run([sys.executable, "-m", "gpo.cli", "eval", "--run-dir", str(copy)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "no checkpoint can be read" in done.stderr and "Traceback" not in done.stderr
