"""The linear Cox path beside the graph: its design matrix, its fit, the model's output."""

import numpy as np
import pytest
import torch

import graphmed
from graphmed.metrics import harrell_c
from graphmed.nn.linear_path import LinearCoxPath
from graphmed.train.baselines import CoxNetBaseline, tabular_penalty
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment
from graphmed.train.linear import fit_linear_path

FAST = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=2",
    "train.ensemble=1",  # one model, whose `linear` path is read
]


def test_features_width_zeros_where_unavailable_and_one_hot_codes(graphs):
    path = LinearCoxPath(graphs.layouts)
    x = path.features(graphs.x, graphs.node_mask, graphs.present)
    assert x.shape == (len(graphs), path.width)
    widths = path.widths()
    clinical = graphs.layouts["clinical"]
    # numeric columns as they are, the categorical grade one-hot over its codes
    assert widths["clinical"] == (clinical.n_nodes - 1) + clinical.categorical[2]
    assert widths["wsi"] == graphs.layouts["wsi"].node_dim  # the mean instance
    start = 0
    for j, m in enumerate(graphs.modalities):
        block = x[:, start : start + widths[m]]
        assert torch.all(block[~graphs.present[:, j]] == 0)
        start += widths[m]
    grade = x[:, 2 : 2 + clinical.categorical[2]]
    has = graphs.present[:, 0]
    assert torch.all(grade[has].sum(1) == 1)  # exactly one code per patient


def test_coefficients_check_their_width(graphs):
    path = LinearCoxPath(graphs.layouts)
    with pytest.raises(ValueError, match=f"expected {path.width} coefficients, got 3"):
        path.set_coefficients(np.zeros(3), 0.0)


def test_linear_map_reproduces_coxnet_predictions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)) * [1, 2, 3, 0.5, 1, 4] + 5
    time = np.exp(-x[:, 0] + rng.normal(size=120))
    event = (rng.random(120) < 0.7).astype(int)
    cox = CoxNetBaseline(n_alphas=10).fit_arrays(x, time, event)
    w, b = cox.linear_map()
    assert np.allclose(x @ w + b, cox._predict(x), atol=1e-8)


def test_tabular_penalty_frees_narrow_clinical_tables_only():
    tabular = np.array([True, True, False, False, False])
    assert tabular_penalty(tabular, n_events=40).tolist() == [0, 0, 1, 1, 1]
    assert tabular_penalty(tabular, n_events=19) is None  # 2 columns need 20 events
    assert tabular_penalty(np.zeros(3, bool), n_events=100) is None
    assert tabular_penalty(np.ones(3, bool), n_events=100) is None


@pytest.fixture(scope="module")
def linear_cohort():
    """Risk driven by a main effect of expression: what a linear path should find."""
    return graphmed.make_synthetic_cohort(160, missing={"wsi": 0.3}, bag_size=(4, 8), seed=5)


def test_fitted_path_ranks_training_patients_and_model_starts_from_it(linear_cohort):
    overrides = [*FAST, "model.linear_path=true", "model.linear_inputs=all", "task.survival=cox"]
    fitted = fit_data(linear_cohort, load_experiment(None, overrides))
    graphs = fitted.graphs(linear_cohort)
    model = build_model(fitted, graphs, linear_cohort).eval()
    path = model.linear
    assert path is not None and torch.count_nonzero(path.weight) > 0
    lp = path(graphs.x, graphs.node_mask, graphs.present)
    c = harrell_c(linear_cohort.time, linear_cohort.event, lp.numpy())
    assert c > 0.65, c
    # the head starts at zero: the untrained model's log-risk is the linear predictor
    with torch.no_grad():
        out = model(graphs.batch(np.arange(len(graphs))))
    assert torch.allclose(out.heads["survival"], lp, atol=1e-5)


def test_fit_linear_path_matches_coxnet_on_the_same_matrix(graphs):
    path = LinearCoxPath(graphs.layouts)
    cox = fit_linear_path(path, graphs, seed=0)
    x = path.features(graphs.x, graphs.node_mask, graphs.present).double().numpy()
    assert np.allclose(
        path(graphs.x, graphs.node_mask, graphs.present).numpy(), cox._predict(x), atol=1e-4
    )


def test_saved_model_with_linear_path_predicts_the_same(linear_cohort, tmp_path):
    config = load_experiment(
        None, [*FAST, "model.linear_path=true", "model.linear_inputs=all", "train.progress=false"]
    )
    trained, _ = graphmed.fit_final(linear_cohort, config)
    loaded = graphmed.load_model(trained.save(tmp_path / "model"))
    assert torch.count_nonzero(loaded.model.linear.weight) > 0
    a, b = trained.predict(linear_cohort).risk, loaded.predict(linear_cohort).risk
    assert np.allclose(a, b, atol=1e-5)


def test_discrete_head_shifts_every_bin_logit(linear_cohort):
    config = load_experiment(
        None, [*FAST, "model.linear_path=true", "model.linear_inputs=all", "task.survival=discrete"]
    )
    fitted = fit_data(linear_cohort, config)
    graphs = fitted.graphs(linear_cohort)
    model = build_model(fitted, graphs, linear_cohort).eval()
    batch = graphs.batch(np.arange(8))
    with torch.no_grad():
        logits = model(batch).heads["survival"]
        lp = model.linear(batch.x, batch.node_mask, batch.present)
    bias = model.heads["survival"].linear.bias
    assert torch.allclose(logits, bias[None, :] + lp[:, None], atol=1e-5)


def test_one_se_rule_picks_the_largest_alpha_within_one_standard_error():
    from graphmed.train.baselines import _choose_alpha

    # 3 folds x 4 alphas (decreasing): alpha 2 is best, alpha 1 lies within one SE of it
    scores = np.array(
        [[0.50, 0.62, 0.60, 0.60], [0.50, 0.63, 0.68, 0.61], [0.50, 0.62, 0.64, 0.59]]
    )
    se = scores[:, 2].std(ddof=1) / np.sqrt(3)
    assert scores[:, 1].mean() >= scores[:, 2].mean() - se > scores[:, 0].mean()
    assert _choose_alpha(scores, "best") == 2
    assert _choose_alpha(scores, "1se") == 1
    scores[1, 1] = np.nan  # a failed path is never chosen
    assert _choose_alpha(scores, "1se") == 2
    assert _choose_alpha(np.full((3, 4), np.nan), "1se") == 0
    with pytest.raises(graphmed.errors.ConfigError, match="alpha_rule must be"):
        CoxNetBaseline(alpha_rule="min")


def test_one_se_coxnet_is_at_least_as_sparse_as_the_best_alpha():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 30))
    time = np.exp(-0.8 * x[:, 0] + rng.normal(size=150))
    event = (rng.random(150) < 0.7).astype(int)
    best = CoxNetBaseline(n_alphas=20).fit_arrays(x, time, event)
    one_se = CoxNetBaseline(n_alphas=20, alpha_rule="1se").fit_arrays(x, time, event)
    assert one_se.alpha_ >= best.alpha_
    assert np.count_nonzero(one_se.linear_map()[0]) <= np.count_nonzero(best.linear_map()[0])


def test_early_stopping_can_keep_the_linear_path_alone(linear_cohort):
    """The start (graph head at zero) is scored: with a vanishing lr nothing beats it, best_epoch -1."""
    from graphmed.train.cv import fit_fold_model

    overrides = [
        *FAST,
        "model.linear_path=true",
        "model.linear_inputs=all",
        "train.progress=false",
        "train.epochs=3",
    ]
    frozen = fit_fold_model(linear_cohort, load_experiment(None, [*overrides, "train.lr=1e-12"]))
    assert frozen.history["best_epoch"] == -1
    assert torch.count_nonzero(frozen.model.heads["survival"].linear.weight) == 0
    plain = fit_fold_model(linear_cohort, load_experiment(None, FAST + ["train.progress=false"]))
    assert plain.history["best_epoch"] >= 0  # without a linear path the start is not scored


def test_tabular_linear_path_reads_only_the_clinical_table(linear_cohort):
    overrides = ["model.linear_path=true", "model.linear_inputs=tabular"]
    config = load_experiment(None, [*FAST, *overrides, "model.linear_summaries=false"])
    fitted = fit_data(linear_cohort, config)
    graphs = fitted.graphs(linear_cohort)
    path = build_model(fitted, graphs, linear_cohort).linear
    assert path.modalities == ["clinical"]
    full = LinearCoxPath(graphs.layouts)
    assert path.width == full.widths()["clinical"]
    # the clinical block equals the full path's, and hiding the clinical table zeroes it
    x = path.features(graphs.x, graphs.node_mask, graphs.present)
    assert torch.equal(
        x, full.features(graphs.x, graphs.node_mask, graphs.present)[:, : path.width]
    )
    hidden = graphs.present.clone()
    hidden[:, graphs.modalities.index("clinical")] = False
    assert torch.count_nonzero(path.features(graphs.x, graphs.node_mask, hidden)) == 0
    with pytest.raises(ValueError, match="not in"):
        LinearCoxPath(graphs.layouts, ["genes"])


def test_tabular_linear_path_is_left_out_without_a_tabular_modality():
    from dataclasses import replace

    cohort = graphmed.make_synthetic_cohort(60, seed=2)
    keep = {m: s for m, s in cohort.modalities.items() if s.kind != "tabular"}
    assert keep and len(keep) < len(cohort.modalities)
    relations = [r for r in cohort.relations if r[0] in keep and r[2] in keep]
    data = {m: cohort.data[m] for m in keep}
    reduced = replace(cohort, modalities=keep, data=data, relations=relations)
    config = load_experiment(None, [*FAST, "model.linear_path=true", "model.linear_inputs=tabular"])
    fitted = fit_data(reduced, config)
    assert build_model(fitted, fitted.graphs(reduced), reduced).linear is None


def test_linear_blend_keeps_the_graph_weight_that_scores_best_on_validation(
    linear_cohort, monkeypatch
):
    from graphmed.train.cv import fit_fold_model
    from graphmed.train.trainer import Trainer

    overrides = [*FAST, "model.linear_path=true", "train.progress=false", "task.survival=cox"]
    trained = fit_fold_model(
        linear_cohort, load_experiment(None, [*overrides, "train.linear_blend=false"])
    )
    assert trained.history["linear_blend"] is None
    blended = fit_fold_model(linear_cohort, load_experiment(None, overrides))  # blend on
    assert blended.history["linear_blend"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # the default discrete-time head has one logit per bin: nothing to blend
    discrete = fit_fold_model(linear_cohort, load_experiment(None, overrides[:-1]))
    assert discrete.model.linear is not None
    val_d = discrete.fitted.graphs(linear_cohort.subset(discrete.val_ids))
    assert discrete.trainer._blend(discrete.model, val_d, full=0.5) is None

    head = trained.model.heads["survival"].linear
    weight = head.weight.detach().clone()
    assert torch.count_nonzero(weight) > 0
    full_risk = trained.predict(linear_cohort).risk

    def score(self, model, val):  # peaks at half the trained head
        w = model.heads["survival"].linear.weight
        return -abs(float((w * weight).sum() / (weight * weight).sum()) - 0.5)

    monkeypatch.setattr(Trainer, "validation_score", score)
    val = trained.fitted.graphs(linear_cohort.subset(trained.val_ids))
    assert trained.trainer._blend(trained.model, val, full=-0.5) == 0.5
    assert torch.allclose(head.weight, weight * 0.5)
    # risk = linear + 0.5 * graph: halfway between the linear path alone and the trained model
    half_risk = trained.predict(linear_cohort).risk
    with torch.no_grad():
        head.weight.zero_(), head.bias.zero_()
    linear_risk = trained.predict(linear_cohort).risk
    np.testing.assert_allclose(half_risk - linear_risk, 0.5 * (full_risk - linear_risk), atol=1e-4)


def test_linear_refit_uses_every_training_patient_after_training(linear_cohort):
    from graphmed.train.cv import fit_fold_model

    overrides = [*FAST, "train.progress=false", "model.linear_inputs=all"]
    kept = fit_fold_model(linear_cohort, load_experiment(None, overrides))
    refit = fit_fold_model(
        linear_cohort, load_experiment(None, [*overrides, "model.linear_refit=true"])
    )
    # Before training both paths are fitted on the fitting part alone; after it the
    # refit path holds the fit on the whole training cohort, the other is untouched.
    fit_only = LinearCoxPath(kept.layouts)
    fit_linear_path(fit_only, kept.fitted.graphs(linear_cohort.subset(kept.fit_ids)))
    whole = LinearCoxPath(refit.layouts)
    fit_linear_path(whole, refit.fitted.graphs(linear_cohort))
    torch.testing.assert_close(kept.model.linear.weight, fit_only.weight)
    torch.testing.assert_close(refit.model.linear.weight, whole.weight)
    assert not torch.allclose(whole.weight, fit_only.weight)
    # Everything else is trained the same way.
    assert kept.history["best_epoch"] == refit.history["best_epoch"]


def test_summaries_are_profile_means_over_real_columns_centred_on_training():
    from graphmed.graph.build import ModalityLayout

    lay = {
        "clinical": ModalityLayout("clinical", "tabular", 1, 1),
        # 5 real columns in chunks of 3: the second chunk has one zero-padded slot
        "mut": ModalityLayout("mut", "vector", 2, 3, group_sizes=[3, 2]),
    }
    values = torch.tensor([[1.0, -2.0, 0.0, 3.0, 0.0], [0.0, 0.0, -1.0, 0.0, 0.0]])
    x = {
        "clinical": torch.zeros(2, 1, 1),
        "mut": torch.cat([values, torch.full((2, 1), 0.0)], 1).reshape(2, 2, 3),
    }
    mask = {m: torch.ones(2, lay[m].n_nodes, dtype=torch.bool) for m in lay}
    available = torch.ones(2, 2, dtype=torch.bool)
    path = LinearCoxPath(lay, ["clinical"], ["mut"])
    assert path.widths() == {"clinical": 1, "mut:summary": 3} and path.width == 4
    raw = path.features(x, mask, available)[:, 1:]
    expected = torch.tensor([[2 / 5, 6 / 5, 2 / 5], [-1 / 5, 1 / 5, 0.0]])
    torch.testing.assert_close(raw, expected)
    path.fit_summary_centres(x, mask, available)
    centred = path.features(x, mask, available)[:, 1:]
    torch.testing.assert_close(centred, expected - expected.mean(0))
    # a patient without the group enters at zero (its training mean)
    gone = available.clone()
    gone[1, 1] = False
    assert torch.all(path.features(x, mask, gone)[1, 1:] == 0)
    with pytest.raises(ValueError, match="only vector modalities"):
        LinearCoxPath(lay, ["clinical"], ["clinical"])
    # without summaries the state is what it was before them (older saved models load)
    assert set(LinearCoxPath(lay, ["clinical"]).state_dict()) == {"weight", "bias"}
    assert "summary_centre" in path.state_dict()


def test_linear_summaries_reach_the_fitted_path_and_survive_saving(
    linear_cohort, tmp_path, monkeypatch
):
    over = [*FAST, "model.linear_path=true", "model.linear_summaries=true", "train.progress=false"]
    config = load_experiment(None, over)
    fitted = fit_data(linear_cohort, config)
    graphs = fitted.graphs(linear_cohort)
    path = build_model(fitted, graphs, linear_cohort).linear
    vectors = [m for m, lay in graphs.layouts.items() if lay.kind == "vector"]
    assert vectors and path.modalities == ["clinical"] and path.summaries == vectors
    # centred on the training patients: each summary's mean over those with the group is 0
    x = path.features(graphs.x, graphs.node_mask, graphs.present)
    summary = x[:, path.widths()["clinical"] :]
    has = graphs.present[:, graphs.modalities.index(vectors[0])]
    assert torch.count_nonzero(path.summary_centre) > 0
    torch.testing.assert_close(
        summary[has].mean(0), torch.zeros(summary.shape[1]), atol=1e-5, rtol=0
    )
    # the summaries are penalised like omics columns, the clinical table is not
    import graphmed.train.linear as linear_module

    seen = []
    real = linear_module.tabular_penalty
    monkeypatch.setattr(
        linear_module, "tabular_penalty", lambda t, n: seen.append(t.copy()) or real(t, n)
    )
    cox = fit_linear_path(path, graphs, seed=0)
    n_clin = path.widths()["clinical"]
    assert seen[0].tolist() == [True] * n_clin + [False] * (path.width - n_clin)
    assert np.allclose(
        path(graphs.x, graphs.node_mask, graphs.present).numpy(),
        cox._predict(x.double().numpy()),
        atol=1e-4,
    )
    trained, _ = graphmed.fit_final(linear_cohort, config)
    loaded = graphmed.load_model(trained.save(tmp_path / "model"))
    torch.testing.assert_close(
        loaded.model.linear.summary_centre, trained.model.linear.summary_centre
    )
    assert np.allclose(
        trained.predict(linear_cohort).risk, loaded.predict(linear_cohort).risk, atol=1e-5
    )
