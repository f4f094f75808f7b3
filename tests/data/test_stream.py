"""A cohort folder read in chunks gives the same patients and data as read whole."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import graphmed
from graphmed.data.large import write_large_cohort
from graphmed.data.stream import CohortStream
from graphmed.errors import CohortError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_large_cohort(tmp_path_factory.mktemp("stream") / "c", 700, chunk_size=300)


def _same_as_whole(chunks, whole):
    assert [p for c in chunks for p in c.patient_ids] == whole.patient_ids
    pd.testing.assert_frame_equal(pd.concat([c.patients for c in chunks]), whole.patients)
    for mod, spec in whole.modalities.items():
        if spec.kind == "bag":
            got = {k: v for c in chunks for k, v in c.data[mod].items()}
            assert got.keys() == whole.data[mod].keys()
            assert all(np.array_equal(got[k], whole.data[mod][k]) for k in got)
        else:
            got = pd.concat([c.data[mod] for c in chunks])
            assert len(got) == len(whole.data[mod])
            pd.testing.assert_frame_equal(got, whole.data[mod].loc[got.index])


@pytest.mark.parametrize("chunk_size", [1, 128, 700, 5000])
def test_chunks_hold_the_cohort_read_whole(folder, chunk_size):
    whole = graphmed.read_cohort(folder)
    stream = CohortStream(folder, chunk_size=chunk_size)
    assert len(stream) == 700 and stream.modality_names == whole.modality_names
    assert stream.relations == whole.relations
    chunks = list(stream)
    assert [c.n_patients for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
    _same_as_whole(chunks, whole)


def test_a_table_in_another_order_is_read_right(folder, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    table = pq.read_table(copy / "expr.parquet").to_pandas().sample(frac=1.0, random_state=0)
    pq.write_table(
        pa.Table.from_pandas(table, preserve_index=False), copy / "expr.parquet", row_group_size=50
    )
    _same_as_whole(list(CohortStream(copy, chunk_size=97)), graphmed.read_cohort(copy))


def test_a_chunk_without_events_or_bags_is_fine(tmp_path):
    cohort = graphmed.make_synthetic_cohort(30, bag_size=(2, 3), seed=0)
    cohort.patients.loc[cohort.patient_ids[:10], "event"] = 0
    for pid in cohort.patient_ids[:10]:
        cohort.data["wsi"].pop(pid, None)
    graphmed.write_cohort(cohort, tmp_path / "c", table_format="parquet")
    chunks = list(CohortStream(tmp_path / "c", chunk_size=10))
    assert chunks[0].event.sum() == 0 and not chunks[0].present_mask()["wsi"].any()
    _same_as_whole(chunks, graphmed.read_cohort(tmp_path / "c"))


def test_a_csv_table_is_refused_with_the_conversion(tmp_path):
    graphmed.write_cohort(graphmed.make_synthetic_cohort(20, bag_size=(2, 3)), tmp_path / "c")
    with pytest.raises(
        CohortError,
        match=r"clinical\.csv: a streamed cohort reads its tables "
        r"from Parquet.*to_parquet\('clinical\.parquet'\)",
    ):
        CohortStream(tmp_path / "c")


def test_a_bad_cell_is_named_in_its_chunk(folder, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    table = pq.read_table(copy / "expr.parquet").to_pandas()
    pid = table["patient_id"].iloc[-1]
    table.iloc[-1, 1] = np.inf
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), copy / "expr.parquet")
    stream = iter(CohortStream(copy, chunk_size=200))
    next(stream)  # the first chunk does not hold that patient
    with pytest.raises(CohortError, match=rf"expr\.parquet: .*inf.*'{pid}'"):
        list(stream)


def test_bad_chunk_size_is_refused(folder):
    with pytest.raises(CohortError, match="chunk_size must be a positive number"):
        CohortStream(folder, chunk_size=0)
