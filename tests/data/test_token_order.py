"""``graph.token_order: correlation``: chunks of correlated columns, fitted on the training fold."""

import numpy as np
import pandas as pd
import pytest

from graphmed.data.cohort import Cohort
from graphmed.data.preprocess import CohortPreprocessor, correlation_order
from graphmed.errors import CohortError
from graphmed.graph.build import build_graphs


def _modules(n=200, modules=4, size=8, seed=0):
    """``modules`` blocks of ``size`` columns; columns of one block share a factor.
    The columns are shuffled so that the given order mixes the blocks."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, modules))
    cols, names = [], []
    for m in range(modules):
        for j in range(size):
            cols.append(factors[:, m] + 0.3 * rng.normal(size=n))
            names.append(f"m{m}_g{j}")
    perm = rng.permutation(len(names))
    x = np.stack(cols, 1)[:, perm]
    return x, [names[i] for i in perm]


def _cohort(x, names, seed=0):
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"p{i:03d}" for i in range(len(x))], name="patient_id")
    genes = pd.DataFrame(x, index=ids, columns=names)
    patients = pd.DataFrame(
        {"time": rng.exponential(size=len(x)) + 0.1, "event": rng.random(len(x)) < 0.7},
        index=ids,
    )
    clinical = pd.DataFrame({"age": rng.normal(60, 10, len(x))}, index=ids)
    return Cohort.from_frames(
        patients, {"clinical": clinical, "genes": genes}, kinds={"genes": "vector"}
    )


def test_correlation_order_puts_each_module_in_one_contiguous_run():
    x, names = _modules()
    z = (x - x.mean(0)) / x.std(0)
    order = correlation_order(z)
    assert sorted(order.tolist()) == list(range(len(names)))
    blocks = [names[i].split("_")[0] for i in order]
    runs = [b for k, b in enumerate(blocks) if k == 0 or b != blocks[k - 1]]
    assert len(runs) == 4  # every module once: its columns side by side
    np.testing.assert_array_equal(order, correlation_order(z))  # deterministic


def test_correlation_order_copes_with_constant_and_tiny_inputs():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 5))
    z[:, 2] = 0.0  # constant after standardising
    assert sorted(correlation_order(z).tolist()) == list(range(5))
    np.testing.assert_array_equal(correlation_order(z[:, :2]), [0, 1])


def test_fitted_order_makes_chunks_of_one_module_and_keeps_values_with_their_column():
    x, names = _modules()
    cohort = _cohort(x, names)
    train = cohort.subset(cohort.patient_ids[:150])
    pre = CohortPreprocessor(token_order="correlation").fit(train)
    tr = pre.transforms_["genes"]
    assert sorted(tr.columns) == sorted(names) and tr.columns != names
    assert pre.transforms_["clinical"].columns == ["age"]  # tabular tables keep their order
    graphs = build_graphs(cohort, pre, chunk_size=8, max_tokens=None)
    layout = graphs.layouts["genes"]
    assert layout.n_nodes == 4
    for g in range(4):  # each chunk node holds the 8 columns of one module
        members = tr.columns[g * 8 : (g + 1) * 8]
        assert len({c.split("_")[0] for c in members}) == 1
    # a column's values travel with it: the same standardised values as in the given order
    plain = CohortPreprocessor().fit(train)
    ordered, given = pre.transform(cohort)["genes"].values, plain.transform(cohort)["genes"].values
    for j, col in enumerate(tr.columns):
        np.testing.assert_allclose(ordered[:, j], given[:, names.index(col)], rtol=1e-6)
    # saved and read back, the order is kept
    again = CohortPreprocessor.from_dict(pre.to_dict())
    assert again.token_order == "correlation"
    assert again.transforms_["genes"].columns == tr.columns


def test_config_option_reaches_the_preprocessor():
    from graphmed.train.builder import fit_data
    from graphmed.train.config import load_experiment

    x, names = _modules()
    cohort = _cohort(x, names)
    fitted = fit_data(cohort, load_experiment(None, ["graph.token_order=correlation"]))
    assert fitted.preprocessor.token_order == "correlation"
    assert fitted.preprocessor.transforms_["genes"].columns != names
    plain = fit_data(cohort, load_experiment(None, []))
    assert plain.preprocessor.transforms_["genes"].columns == names


def test_user_groups_win_and_bad_values_are_refused():
    x, names = _modules()
    cohort = _cohort(x, names)
    cohort.modalities["genes"].options["groups"] = {"first": names[:5]}
    pre = CohortPreprocessor(token_order="correlation").fit(cohort)
    assert pre.transforms_["genes"].columns == names  # a modality with groups keeps its order
    with pytest.raises(CohortError, match="token_order must be one of"):
        CohortPreprocessor(token_order="biology")
