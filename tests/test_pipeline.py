import numpy as np
import pytest

from gpo.cli import main as cli_main
from gpo.config import DataConfig, EmbedConfig
from gpo.pipeline import embed, load_survey


def test_precomputed_embeddings_are_the_embedders_and_are_checked(tmp_path):
    """`gpo embed` writes what `embed(..., precomputed=)` reads back (how a machine without
    the LLM trains), and a file from another embedder or survey is refused by name."""
    path = tmp_path / "synthetic.npz"
    cli_main(["embed", "--dataset", "synthetic", "--model", "lexical", "--out", str(path)])
    survey = load_survey(DataConfig(dataset="synthetic"))
    lexical = EmbedConfig(model="lexical")
    np.testing.assert_array_equal(embed(survey, lexical, path), embed(survey, lexical))

    with pytest.raises(ValueError, match=r"synthetic\.npz.*made by 'lexical'.*'smollm2'"):
        embed(survey, EmbedConfig(model="smollm2"), path)
    other = load_survey(DataConfig(dataset="synthetic", synthetic_questions=50))
    with pytest.raises(ValueError, match=r"synthetic\.npz: holds 300 questions, not .* 50"):
        embed(other, lexical, path)
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, embeddings=embed(survey, lexical), keys=survey.question_keys)
    with pytest.raises(ValueError, match="records no embedder"):
        embed(survey, lexical, unlabelled)
