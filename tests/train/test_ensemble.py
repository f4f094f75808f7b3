"""``train.ensemble``: members with their own seed and validation part, averaged."""

import numpy as np
import pandas as pd
import pytest
import torch

import graphmed
from graphmed.errors import ConfigError
from graphmed.nn.ensemble import EnsembleModel
from graphmed.train.builder import as_recipe
from graphmed.train.config import load_experiment
from graphmed.train.fit import fit_model, member_checkpoint

FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=3",
    "train.patience=3",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def cohort():
    return graphmed.make_synthetic_cohort(60, bag_size=(2, 4), seed=1)


@pytest.fixture(scope="module")
def fitted_pair(cohort):
    single = fit_model(cohort, as_recipe(load_experiment(None, FAST)))
    pair = fit_model(cohort, as_recipe(load_experiment(None, [*FAST, "train.ensemble=2"])))
    return single, pair


def test_member_zero_is_the_single_model_and_the_ensemble_averages(cohort, fitted_pair):
    single, pair = fitted_pair
    assert isinstance(pair.model, EnsembleModel) and len(pair.model.members) == 2
    assert len(pair.member_histories) == 2
    assert pair.history == single.history
    np.testing.assert_array_equal(pair.val_ids, single.val_ids)
    first, second = pair.model.members
    for (name, a), b in zip(single.model.state_dict().items(), first.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    graphs = pair.fitted.graphs(cohort)
    preds = pair.predict(cohort)
    one = graphmed.inference.predict(first, graphs)
    two = graphmed.inference.predict(second, graphs)
    # member 1 has its own validation part and seed: a different model
    assert not np.allclose(one.risk, two.risk)
    # the heads' raw outputs are averaged (the default discrete head: its hazard logits),
    # and the first member's head turns the mean into the risk
    batch = graphs.batch(np.arange(len(graphs)))
    with torch.no_grad():
        raw = [m.eval()(batch).heads["survival"] for m in (first, second)]
        risk = pair.model.heads["survival"].risk((raw[0] + raw[1]) / 2).numpy()
    assert raw[0].shape == (len(graphs), pair.model.heads["survival"].bins.n_bins)
    np.testing.assert_allclose(preds.risk, risk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preds.embedding, np.hstack([one.embedding, two.embedding]))
    np.testing.assert_allclose(
        preds.modality_attention, (one.modality_attention + two.modality_attention) / 2, atol=1e-6
    )


def test_members_use_different_validation_parts(cohort):
    from graphmed.train.fit import member_recipe, validation_split

    recipe = as_recipe(load_experiment(None, [*FAST, "train.ensemble=3"]))
    vals = [
        set(validation_split(cohort, 0.2, member_recipe(recipe, k).train.seed)[1]) for k in range(3)
    ]
    assert vals[0] != vals[1] and vals[1] != vals[2]


def test_saved_ensemble_loads_and_predicts_the_same(cohort, tmp_path):
    config = load_experiment(None, [*FAST, "train.ensemble=2"])
    trained, _ = graphmed.fit_final(cohort, config)
    before = trained.predict(cohort)
    loaded = graphmed.load_model(trained.save(tmp_path / "model"))
    assert isinstance(loaded.model, EnsembleModel)
    after = loaded.predict(cohort)
    np.testing.assert_allclose(after.risk, before.risk, rtol=1e-6)
    assert after.embedding.shape == (cohort.n_patients, 16)  # two members of d = 8
    summary = graphmed.export_embeddings(loaded, cohort, tmp_path / "emb.parquet", progress=False)
    assert summary.embedding_dim == 16
    table = pd.read_parquet(summary.path)
    assert sum(c.startswith("emb_") for c in table.columns) == 16
    np.testing.assert_allclose(table["emb_15"], after.embedding[:, 15], rtol=1e-6)


def test_every_member_checkpoints_and_resumes(cohort, tmp_path):
    recipe = as_recipe(load_experiment(None, [*FAST, "train.ensemble=2"]))
    ckpt = tmp_path / "fold.pt"
    first = fit_model(cohort, recipe, checkpoint=ckpt)
    assert ckpt.exists() and member_checkpoint(ckpt, 1).exists()
    assert member_checkpoint(ckpt, 1).name == "fold.member1.pt"
    again = fit_model(cohort, recipe, checkpoint=ckpt, resume=True)
    graphs = first.fitted.graphs(cohort)
    a = graphmed.inference.predict(first.model, graphs).risk
    b = graphmed.inference.predict(again.model, graphs).risk
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_ensemble_size_is_checked_at_load():
    with pytest.raises(ConfigError, match="ensemble"):
        load_experiment(None, ["train.ensemble=0"])


def test_an_ensemble_needs_two_members(fitted_pair):
    with pytest.raises(ValueError, match="two members"):
        EnsembleModel([fitted_pair[0].model])
