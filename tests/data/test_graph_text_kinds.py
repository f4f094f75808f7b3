"""Graph and text modalities end to end: folder round trip, the CLI, completion, vocabulary."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _settings import TINY_CV

import graphmed
from graphmed.cli import main
from graphmed.data.preprocess import CohortPreprocessor
from graphmed.data.text_kind import fit_text, transform_text
from graphmed.errors import CohortError
from graphmed.graph.build import build_graphs
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment

pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
MODS = {"clinical": ("tabular", 5), "cells": ("graph", 3), "report": ("text", 1)}
FAST = [*TINY_CV, "train.progress=false"]


def _cohort(n=40, seed=0, **kwargs):
    missing = {"cells": 0.3, "report": 0.3}
    return graphmed.make_synthetic_cohort(
        n, MODS, missing=missing, bag_size=(4, 8), seed=seed, **kwargs
    )


@pytest.mark.parametrize("graph_format", ["npz", "pt"])
@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_folder_round_trip_keeps_graphs_and_reports(tmp_path, graph_format, table_format):
    cohort = _cohort()
    present = cohort.present_mask()
    assert 0 < present["cells"].sum() < len(cohort.patient_ids) and 0 < present[
        "report"
    ].sum() < len(cohort.patient_ids)
    folder = graphmed.write_cohort(
        cohort, tmp_path / "c", table_format=table_format, graph_format=graph_format
    )
    files = sorted(p.suffix for p in (folder / "cells").iterdir())
    assert set(files) == {f".{graph_format}"} and len(files) == present["cells"].sum()
    back = graphmed.read_cohort(folder)
    assert back.equals(cohort)
    assert back.modalities["cells"].kind == "graph" and back.modalities["report"].kind == "text"
    pd.testing.assert_frame_equal(back.present_mask(), present)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A cohort folder with a graph and a text modality, trained through the CLI."""
    root = tmp_path_factory.mktemp("graph_text")
    graphmed.write_cohort(_cohort(), root / "cohort")
    graphmed.write_cohort(_cohort(30, seed=3, name="other"), root / "other")
    sets = [arg for item in FAST for arg in ("--set", item)]
    code = main(["train", "--cohort", str(root / "cohort"), "--out", str(root / "run"), *sets])
    assert code == 0
    return root


def test_cohort_validate_lists_graph_and_text(run, capsys):
    assert main(["cohort", "validate", str(run / "cohort")]) == 0
    out = capsys.readouterr().out
    for word in ("cells", "graph", "report", "text"):
        assert word in out, out


def test_train_predict_export_with_graph_and_text(run, capsys):
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["graphmed"] and len(metrics["per_fold"]) == 2
    for fold in metrics["per_fold"]:
        assert 0 < fold["test_present"]["cells"] < 1 and 0 < fold["test_present"]["report"] < 1
        assert 0 <= fold["methods"]["graphmed"]["c_index"] <= 1
    pred = run / "pred.csv"
    args = ["--model", str(run / "run" / "model"), "--cohort", str(run / "other")]
    assert main(["predict", *args, "--out", str(pred)]) == 0
    risk = pd.read_csv(pred)
    assert len(risk) == 30 and np.isfinite(risk["risk"]).all() and risk["risk"].std() > 0
    out = run / "emb.parquet"
    assert main(["export", *args, "--out", str(out), "--per-modality", "--no-progress"]) == 0
    frame = pd.read_parquet(out).set_index("patient_id")
    other = graphmed.read_cohort(run / "other")
    present = other.present_mask()
    for mod in ("cells", "report"):
        # present_ is what the cohort holds; completed_ marks the others, filled by prompts.
        assert (frame[f"present_{mod}"] == present[mod].reindex(frame.index)).all()
        assert (frame[f"completed_{mod}"] == ~frame[f"present_{mod}"]).all()
        assert f"{mod}_emb_0" in frame.columns
    np.testing.assert_allclose(
        frame["risk"].to_numpy(),
        risk.set_index("patient_id")["risk"].reindex(frame.index).to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_missing_cell_graph_prompts_start_from_training_node_profiles():
    cohort = _cohort(60)
    config = load_experiment(None, FAST)
    train_ids = cohort.patient_ids[:40]
    train = cohort.subset(train_ids)
    fitted = fit_data(train, config)
    graphs = fitted.graphs(train)
    net = build_model(fitted, graphs, train).net  # fits the priors on these graphs
    j = net.modalities.index("cells")
    has = graphs.present[:, j]
    nodes = graphs.x["cells"][has][graphs.node_mask["cells"][has]].float()
    comp = net.completion
    for name in ("medoids_cells", "pool_cells"):
        rows = getattr(comp, name).reshape(-1, nodes.shape[1])
        # Every prompt start is one real node of a training patient's graph.
        assert all((nodes == r).all(1).any() for r in rows), name
    # Nodes of patients outside the training part never enter the priors.
    rest = cohort.subset(cohort.patient_ids[40:])
    other = fitted.graphs(rest)
    has_o = other.present[:, j]
    outside = other.x["cells"][has_o][other.node_mask["cells"][has_o]].float()
    rows = comp.medoids_cells.reshape(-1, nodes.shape[1])
    assert not any((outside == r).all(1).any() for r in rows)


def test_a_term_only_in_test_reports_does_not_change_the_vocabulary():
    cohort = _cohort(60)
    train_ids, test_ids = cohort.patient_ids[:40], cohort.patient_ids[40:]
    reports = cohort.data["report"]
    test_with = [
        p for p in test_ids if p in reports.index and isinstance(reports.at[p, "text"], str)
    ]
    reports.loc[test_with, "text"] = reports.loc[test_with, "text"] + " zebrafishterm zebrafishterm"
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    state = pre.transforms_["report"].state
    assert not any("zebrafishterm" in term for term in state["vocabulary"])
    # The fitted state is the same as from the training reports with no test patient at all.
    train_texts = [t for t in reports.reindex(train_ids)["text"] if isinstance(t, str)]
    again, _ = fit_text(train_texts, pre.transforms_["report"].options)
    assert again["vocabulary"] == state["vocabulary"]
    np.testing.assert_allclose(again["components"], state["components"])
    # An unseen term is ignored when projecting: the report reads as without it.
    text = reports.at[test_with[0], "text"]
    plain = text.replace(" zebrafishterm zebrafishterm", "")
    np.testing.assert_allclose(transform_text(state, [text]), transform_text(state, [plain]))
    # Reports are projected on the fitted components: one standardised column each.
    out = pre.transform(cohort.subset(train_ids))["report"]
    assert out.values.shape[1] == len(pre.transforms_["report"].columns) > 1
    assert torch.isfinite(torch.as_tensor(out.values)).all()


def _text_folder(tmp_path):
    cohort = graphmed.make_synthetic_cohort(
        12, {"clinical": ("tabular", 3), "report": MODS["report"]}
    )
    return graphmed.write_cohort(cohort, tmp_path / "c")


def _edit_reports(root, edit):
    table = pd.read_csv(root / "report.csv", dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(root / "report.csv", index=False)


def _set_options(root, options):
    conf = yaml.safe_load((root / "cohort.yaml").read_text())
    conf["modalities"]["report"]["options"] = options
    (root / "cohort.yaml").write_text(yaml.safe_dump(conf))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda r: _edit_reports(r, lambda t: t.rename(columns={"text": "note"}, inplace=True)),
            r"report\.csv: a text modality has the columns patient_id and text, found "
            r"\['patient_id', 'note'\].*Name the column of reports 'text'",
        ),
        (
            lambda r: _edit_reports(r, lambda t: t.insert(2, "author", "x")),
            r"report\.csv: .*found \['patient_id', 'text', 'author'\]\. Keep one 'text' column",
        ),
        (
            lambda r: _edit_reports(r, lambda t: t.loc.__setitem__((0, "patient_id"), "ZZZ")),
            r"report\.csv: 1 patient id\(s\) are not in patients\.csv, e\.g\. \['ZZZ'\]",
        ),
        (
            lambda r: _edit_reports(r, lambda t: t.__setitem__("text", "  ")),
            r"report\.csv: modality 'report' has no patients at all \(no non-empty text\)",
        ),
        (
            lambda r: _set_options(r, {"chunk_size": 4}),
            r"modality 'report': unknown option 'chunk_size'\. 'chunk_size' is an option of "
            r"vector modalities\. A text modality takes: encoder, n_components",
        ),
        (
            lambda r: _set_options(r, {"n_components": 0}),
            r"modality 'report': text option 'n_components' must be an integer >= 1, got 0",
        ),
        (
            lambda r: _set_options(r, {"min_df": 1.5}),
            r"text option 'min_df' must be an integer >= 1, got 1\.5 \(default 2\)",
        ),
    ],
    ids=[
        "no text column",
        "extra column",
        "unknown patient",
        "all empty",
        "option",
        "k=0",
        "min_df",
    ],
)
def test_bad_text_modalities_are_named(tmp_path, edit, message):
    root = _text_folder(tmp_path)
    edit(root)
    with pytest.raises(CohortError, match=message):
        graphmed.read_cohort(root)


def test_a_report_that_is_not_a_string_is_refused():
    patients = pd.DataFrame({"patient_id": ["a", "b"], "time": [1.0, 2.0], "event": [1, 0]})
    reports = pd.DataFrame({"patient_id": ["a", "b"], "text": ["grade 2 tumour", 3]})
    with pytest.raises(CohortError, match=r"the text of patient 'b' is 3, not a string"):
        graphmed.Cohort.from_frames(patients, {"report": reports}, kinds={"report": "text"})


def test_bad_max_nodes_is_refused_at_read(tmp_path):
    cohort = graphmed.make_synthetic_cohort(12, {"cells": ("graph", 3)}, bag_size=(3, 5))
    root = graphmed.write_cohort(cohort, tmp_path / "c")
    conf = yaml.safe_load((root / "cohort.yaml").read_text())
    conf["modalities"]["cells"]["options"] = {"max_nodes": 0}
    (root / "cohort.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(CohortError, match=r"'cells': graph option 'max_nodes' must be a positive"):
        graphmed.read_cohort(root)


def test_max_nodes_keeps_connected_regions_of_large_graphs():
    cohort = graphmed.make_synthetic_cohort(20, {"cells": ("graph", 3)}, bag_size=(30, 40))
    cohort.modalities["cells"] = type(cohort.modalities["cells"])(
        "cells", "graph", "cells", {"max_nodes": 10}
    )
    pre = CohortPreprocessor().fit(cohort)
    graphs = build_graphs(cohort, pre)
    assert graphs.x["cells"].shape[1] == 10 and graphs.node_mask["cells"].all()
    # Edges of kept nodes survive, renumbered into the 10 slots; none points at a dropped node.
    index, mask = graphs.edge_index["cells"], graphs.edge_mask["cells"]
    assert (index[:, :, :][mask[:, None, :].expand_as(index)] < 10).all()
    assert mask.sum(1).min() > 0
    # Seeded by patient id: a patient's nodes do not depend on who else is built.
    alone = build_graphs(cohort.subset(cohort.patient_ids[3:4]), pre)
    torch.testing.assert_close(alone.x["cells"][0], graphs.x["cells"][3])


class _FakeSentenceModel:
    """Stands in for sentence_transformers.SentenceTransformer: counts two lexicons."""

    loaded: list = []

    def __init__(self, folder, device=None, local_files_only=False):
        assert local_files_only, "a model must be loaded without download"
        self.loaded.append(folder)

    def encode(self, texts, convert_to_numpy=True):
        high = ("necrosis", "invasive", "highgrade", "mitotic", "infiltrative", "metastatic")
        words = [t.split() for t in texts]
        return np.array([[sum(w in high for w in ws), len(ws), 1.0] for ws in words])


def test_a_local_sentence_model_embeds_the_reports(tmp_path, monkeypatch):
    import sys
    import types

    from graphmed.data import text_kind

    monkeypatch.setitem(
        sys.modules,
        "sentence_transformers",
        types.SimpleNamespace(SentenceTransformer=_FakeSentenceModel),
    )
    text_kind._sentence_model.cache_clear()
    folder = tmp_path / "my-model"
    folder.mkdir()
    cohort = _cohort(40)
    cohort.modalities["report"] = type(cohort.modalities["report"])(
        "report", "text", "report.csv", {"encoder": str(folder)}
    )
    pre = CohortPreprocessor().fit(cohort)
    tr = pre.transforms_["report"]
    assert tr.state == {"encoder": str(folder.resolve()), "dim": 3}
    assert tr.columns == ["report_dim0", "report_dim1", "report_dim2"]
    out = pre.transform(cohort)["report"]
    has = cohort.present_mask()["report"].to_numpy()
    texts = cohort.data["report"]["text"].reindex(cohort.patient_ids)[has].tolist()
    raw = _FakeSentenceModel(folder, local_files_only=True).encode(texts)
    expected = (raw - np.asarray(tr.center)) / np.asarray(tr.scale)
    np.testing.assert_allclose(out.values[has], expected, rtol=1e-5, atol=1e-6)
    assert (out.values[~has] == 0).all()
    text_kind._sentence_model.cache_clear()
    # A folder that is not there is named, and nothing is downloaded.
    cohort.modalities["report"] = type(cohort.modalities["report"])(
        "report", "text", "report.csv", {"encoder": str(tmp_path / "nowhere")}
    )
    with pytest.raises(CohortError, match=r"nowhere is not a folder.*never downloads"):
        CohortPreprocessor().fit(cohort)


def test_a_sentence_model_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from graphmed.data import text_kind

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    text_kind._sentence_model.cache_clear()
    with pytest.raises(CohortError, match=r"pip install sentence-transformers.*or use 'tfidf'"):
        text_kind.fit_text(["a report"], {"encoder": str(tmp_path)})
    text_kind._sentence_model.cache_clear()


@pytest.mark.parametrize("conv, layer", [("gatv2", "GATv2Conv"), ("gin", "GINConv")])
def test_model_graph_conv_chooses_the_message_passing(conv, layer):
    cohort = _cohort(30)
    config = load_experiment(None, [*FAST, f"model.graph_conv={conv}"])
    fitted = fit_data(cohort, config)
    net = build_model(fitted, fitted.graphs(cohort), cohort).net
    assert {type(c).__name__ for c in net.encoders["cells"].convs} == {layer}
