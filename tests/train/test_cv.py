import json

import numpy as np
import pandas as pd
import pytest
import torch

import graphmed
from graphmed.errors import ConfigError, GraphMedError
from graphmed.train import cv as cv_module
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment
from graphmed.train.trainer import Trainer

FAST = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=3",
    "train.patience=5",
    "train.progress=false",
    "eval.folds=3",
    "eval.bootstrap=50",
    "train.ensemble=1",
    "eval.baselines=[]",
]


@pytest.fixture(scope="module")
def cohort():
    return graphmed.make_synthetic_cohort(
        90, missing={"expr": 0.3, "wsi": 0.3}, bag_size=(4, 12), seed=3
    )


def _config(*extra):
    return load_experiment(None, FAST + list(extra))


def test_cross_validate_writes_outputs(cohort, tmp_path):
    result = graphmed.cross_validate(cohort, _config(), tmp_path, log=None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["c_index"]["per_fold"]) == 3
    assert metrics["c_index"]["mean"] == pytest.approx(np.mean(metrics["c_index"]["per_fold"]))
    oof = pd.read_csv(tmp_path / "oof_predictions.csv", dtype={"patient_id": str})
    assert sorted(oof["patient_id"]) == sorted(cohort.patient_ids)  # each patient tested once
    assert {"risk", "fold", "att_mod_expr", "completed_wsi"} <= set(oof.columns)
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "log.txt").exists()
    assert result.metrics["c_index"]["per_fold"] == metrics["c_index"]["per_fold"]


def test_same_seed_same_metrics(cohort):
    a = graphmed.cross_validate(cohort, _config(), None, log=None)
    b = graphmed.cross_validate(cohort, _config(), None, log=None)
    assert a.metrics["c_index"]["per_fold"] == b.metrics["c_index"]["per_fold"]
    np.testing.assert_array_equal(a.oof["risk"].to_numpy(), b.oof["risk"].to_numpy())


def test_resume_after_a_kill_loses_nothing(cohort, tmp_path, monkeypatch):
    full = graphmed.cross_validate(cohort, _config(), None, log=None)
    real = cv_module.run_fold

    def dies_on_fold_2(cohort, recipe, fold, **kwargs):
        if fold.fold == 2:
            raise KeyboardInterrupt("killed")
        return real(cohort, recipe, fold, **kwargs)

    monkeypatch.setattr(cv_module, "run_fold", dies_on_fold_2)
    with pytest.raises(KeyboardInterrupt):
        graphmed.cross_validate(cohort, _config(), tmp_path, log=None)
    done = tmp_path / "folds" / "r0f0" / "result.json"
    before = done.read_text()
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(cv_module, "run_fold", real)
    lines = []
    resumed = graphmed.cross_validate(cohort, _config(), tmp_path, resume=True, log=lines.append)
    assert done.read_text() == before
    assert any("r0f0] already done" in line for line in lines)
    assert resumed.metrics["c_index"]["per_fold"] == full.metrics["c_index"]["per_fold"]


def test_trainer_resume_matches_uninterrupted(cohort, tmp_path):
    cfg = _config("train.epochs=4", "train.patience=10")
    fitted = fit_data(cohort, cfg)
    graphs = fitted.graphs(cohort)

    def fresh():
        return build_model(fitted, graphs, cohort)

    straight = fresh()
    Trainer(cfg.train).fit(straight, graphs, graphs)
    ckpt = tmp_path / "ckpt.pt"
    part = fresh()
    cfg.train.epochs = 2
    Trainer(cfg.train).fit(part, graphs, graphs, checkpoint=ckpt)
    cfg.train.epochs = 4
    resumed = fresh()
    history = Trainer(cfg.train).fit(resumed, graphs, graphs, checkpoint=ckpt, resume=True)
    assert history["epochs_run"] == 4 and len(history["history"]) == 4
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def test_fold_statistics_come_from_training_patients(cohort):
    folds = cv_module.make_folds(cohort, 3, 1, 0)
    _, _, tr, te = folds[0]
    ids = np.asarray(cohort.patient_ids)
    train = cohort.subset(ids[tr])
    state = fit_data(train, _config()).preprocessor.to_dict()
    # Changing every test patient's expression leaves the fitted statistics unchanged.
    expr = cohort.data["expr"].copy()
    test_rows = expr.index.intersection(ids[te])
    expr.loc[test_rows] = expr.loc[test_rows] * 50 + 7
    shifted = graphmed.Cohort(**{**vars(cohort), "data": {**cohort.data, "expr": expr}})
    again = fit_data(shifted.subset(ids[tr]), _config()).preprocessor.to_dict()
    assert again == state
    # ... while fitting on all patients would change them.
    leaky = fit_data(shifted, _config()).preprocessor.to_dict()
    assert leaky != state


def test_test_missingness_hides_only_test_fold(cohort):
    hidden = cv_module.hide_modalities(cohort, {"expr": 0.5}, seed=1)
    before = cohort.present_mask()["expr"].sum()
    after = hidden.present_mask()["expr"].sum()
    assert after == before - round(0.5 * before)
    with pytest.raises(graphmed.ConfigError, match="Did you mean 'expr'"):
        cv_module.hide_modalities(cohort, {"exprs": 0.5}, seed=1)


def test_saved_model_round_trip(cohort, tmp_path):
    model, _ = graphmed.fit_final(cohort, _config())
    preds = model.predict(cohort)
    model.save(tmp_path / "model")
    loaded = graphmed.load_model(tmp_path / "model")
    again = loaded.predict(cohort)
    np.testing.assert_allclose(again.risk, preds.risk, rtol=1e-5, atol=1e-6)
    with pytest.raises(graphmed.GraphMedError, match="weights.pt is missing"):
        (tmp_path / "model" / "weights.pt").unlink()
        graphmed.load_model(tmp_path / "model")


def test_survival_estimator(cohort):
    est = graphmed.GraphMedSurvival(hidden=16, layers=1, heads=2, epochs=3)
    est.fit(cohort)
    risk = est.predict(cohort)
    assert risk.shape == (cohort.n_patients,) and np.isfinite(risk).all()
    assert 0 <= est.score(cohort) <= 1
    curves = est.predict_survival_function(cohort.subset(cohort.patient_ids[:3]))
    assert len(curves) == 3 and all(0 <= f(f.x[0]) <= 1 for f in curves)
    members = load_experiment(None, []).train.ensemble  # the default: embeddings side by side
    assert est.embed(cohort).shape == (cohort.n_patients, 16 * members)
    with pytest.raises(graphmed.GraphMedError, match="not fitted"):
        graphmed.GraphMedSurvival().predict(cohort)


def test_classifier_estimator():
    cohort = graphmed.make_synthetic_cohort(80, n_classes=2, bag_size=(4, 8), seed=1)
    est = graphmed.GraphMedClassifier(label="label", hidden=16, layers=1, heads=2, epochs=3)
    est.fit(cohort)
    proba = est.predict_proba(cohort)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert set(est.predict(cohort)) <= set(est.classes_)
    assert 0 <= est.score(cohort) <= 1


def test_cli_train_predict_and_unknown_key(cohort, tmp_path, capsys):
    from graphmed.cli import main

    graphmed.write_cohort(cohort, tmp_path / "cohort")
    sets = [a for s in FAST for a in ("--set", s)]
    assert (
        main(["train", "--cohort", str(tmp_path / "cohort"), "--out", str(tmp_path / "run"), *sets])
        == 0
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["c_index"]["mean"] > 0
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run" / "model"),
                "--cohort",
                str(tmp_path / "cohort"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out)) == cohort.n_patients
    code = main(
        [
            "train",
            "--cohort",
            str(tmp_path / "cohort"),
            "--out",
            str(tmp_path / "x"),
            "--set",
            "model.hiden=3",
        ]
    )
    assert code == 2
    assert "Did you mean 'model.hidden'" in capsys.readouterr().err


def test_cli_benchmark_evaluate_and_validate(cohort, tmp_path, capsys):
    from graphmed.cli import main

    graphmed.write_cohort(cohort, tmp_path / "cohort")
    sets = [a for s in FAST for a in ("--set", s)]
    run = tmp_path / "bench"
    code = main(
        [
            "benchmark",
            "--cohort",
            str(tmp_path / "cohort"),
            "--methods",
            "coxnet,mlp_zero",
            "--out",
            str(run),
            *sets,
        ]
    )
    assert code == 0
    table = pd.read_csv(run / "benchmark.csv")
    assert set(table["method"]) == {"coxnet", "mlp_zero"}
    assert "| coxnet |" in capsys.readouterr().out
    assert main(["cohort", "validate", str(tmp_path / "cohort"), "--graphs"]) == 0
    summary = capsys.readouterr().out
    assert '"patients": 90' in summary and "edges_per_patient" in summary
    model, _ = graphmed.fit_final(cohort, _config())
    model.save(tmp_path / "model")
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "model"),
                "--cohort",
                str(tmp_path / "cohort"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert 0 <= json.loads(out.read_text())["metrics"]["c_index"] <= 1


def test_monitor_loss_scores_the_whole_validation_set(cohort):
    from graphmed.errors import GraphMedError
    from graphmed.losses import cox_ph_loss

    cfg = _config("train.monitor=loss", "train.epochs=5", "train.patience=10", "task.survival=cox")
    fitted = fit_data(cohort, cfg)
    graphs = fitted.graphs(cohort)
    model = build_model(fitted, graphs, cohort)
    trainer = Trainer(cfg.train)
    history = trainer.fit(model, graphs.subset(range(60)), graphs.subset(range(60, 90)))
    val = graphs.subset(range(60, 90))
    # the kept weights are those of the epoch with the lowest validation loss
    scores = [h["val_score"] for h in history["history"]]
    assert history["best_epoch"] == int(np.argmax(scores))
    # the loss of the whole set at once, the same whichever chunk size the forward uses
    risk = torch.as_tensor(trainer.predict(model, val).risk)
    expected = float(cox_ph_loss(risk, val.time.cpu(), val.event.cpu()))
    assert trainer.validation_loss(model, val) == pytest.approx(expected, rel=1e-5)
    assert trainer.validation_loss(model, val, batch_size=7) == pytest.approx(expected, rel=1e-5)
    assert trainer.validation_score(model, val) == pytest.approx(-expected, rel=1e-5)
    # c_index scores the same model by its validation C-index
    by_c = Trainer(_config("train.monitor=c_index").train).validation_score(model, val)
    assert 0.0 <= by_c <= 1.0 and by_c != pytest.approx(-expected)
    with pytest.raises(GraphMedError, match="monitor"):
        _config("train.monitor=auc")


def test_baselines_see_the_columns_graphmed_sees(cohort, monkeypatch):
    from graphmed.cli._common import methods_table
    from graphmed.train import baselines

    seen = []
    real = baselines.make_baseline

    def spy(name, **kwargs):
        seen.append(kwargs.get("max_vector_features"))
        return real(name, **kwargs)

    monkeypatch.setattr(baselines, "make_baseline", spy)
    config = _config("eval.baselines=[coxnet]", "graph.max_features=7", "eval.folds=2")
    result = graphmed.cross_validate(cohort, config, None, include_graphmed=False, log=None)
    assert seen == [7, 7]
    assert result.metrics["inputs"] == {"max_vector_features": 7}
    assert "the 7 highest-variance training columns" in methods_table(result.metrics)


def test_resume_refuses_a_crafted_checkpoint(cohort, tmp_path, crafted_torch_file):
    marker = tmp_path / "marker.txt"
    crafted_torch_file(tmp_path / "folds" / "r0f0" / "checkpoint.pt", marker)
    with pytest.raises(GraphMedError, match=r"refused to read checkpoint .*r0f0.*could run code"):
        graphmed.cross_validate(cohort, _config(), tmp_path, resume=True, log=None)
    assert not marker.exists()


def test_checkpoint_holds_tensors_and_plain_values_only(cohort, tmp_path):
    cfg = _config("train.epochs=1")
    fitted = fit_data(cohort, cfg)
    graphs = fitted.graphs(cohort)
    Trainer(cfg.train).fit(
        build_model(fitted, graphs, cohort), graphs, graphs, checkpoint=tmp_path / "c.pt"
    )
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert payload["state"]["epoch"] == 1 and isinstance(payload["state"]["best_score"], float)


@pytest.mark.parametrize(
    ("events", "folds", "message"),
    [
        (3, 5, r"eval.folds=5 but .* has 3 patients \(with an event\).*use eval.folds=3 or fewer"),
        (1, 2, r"eval.folds=2 but .* has 1 patients \(with an event\).*add patients"),
        (28, 5, r"eval.folds=5 but .* has 2 patients \(censored\)"),
    ],
)
def test_more_folds_than_events_is_refused(events, folds, message):
    small = graphmed.make_synthetic_cohort(30, bag_size=(2, 3), seed=0)
    event = np.zeros(30, dtype=int)
    event[:events] = 1
    small.patients["event"] = event
    with pytest.raises(ConfigError, match=message):
        cv_module.make_folds(small, folds)


def test_more_folds_than_events_in_one_label_class_is_refused():
    small = graphmed.make_synthetic_cohort(30, bag_size=(2, 3), seed=0)
    small.patients["event"] = np.tile([0, 1], 15)
    small.patients["kind"] = ["rare"] * 2 + ["common"] * 28
    with pytest.raises(
        ConfigError, match=r"has 1 patients \((with an event|censored) and kind=rare"
    ):
        cv_module.make_folds(small, 3, label="kind")
