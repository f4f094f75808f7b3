import networkx as nx
import pytest

from graphmed.errors import CohortError, MetaPathError
from graphmed.graph.relations import RANDOM, RelationGraph, reverse_relation

MODALITIES = ["clinical", "expression", "wsi"]
RELATIONS = [("expression", "informs", "clinical"), ("clinical", "describes", "wsi")]


@pytest.fixture
def graph() -> RelationGraph:
    return RelationGraph(MODALITIES, RELATIONS)


def test_edge_types_include_reverses_sorted(graph):
    assert graph.edge_types == [
        ("clinical", "describes", "wsi"),
        ("clinical", "rev_informs", "expression"),
        ("expression", "informs", "clinical"),
        ("wsi", "rev_describes", "clinical"),
    ]
    assert graph.relations == RELATIONS


def test_edge_types_with_intra(graph):
    intra = [(m, "intra", m) for m in MODALITIES]
    assert graph.edge_types_with_intra == sorted(graph.edge_types + intra)


def test_networkx_view_has_one_node_per_modality_and_keyed_edges(graph):
    g = graph.to_networkx()
    assert isinstance(g, nx.MultiDiGraph)
    assert sorted(g.nodes) == MODALITIES
    assert g.has_edge("clinical", "expression", key="rev_informs")
    assert g.edges["wsi", "clinical", "rev_describes"]["reverse"] is True
    g.remove_node("wsi")  # a copy: the relation graph is untouched
    assert "wsi" in graph.neighbours("clinical")


def test_neighbours(graph):
    assert graph.neighbours("clinical") == ["expression", "wsi"]
    assert graph.neighbours("wsi") == ["clinical"]
    with pytest.raises(CohortError, match="Did you mean 'wsi'"):
        graph.neighbours("wsii")


def test_duplicates_dropped_and_explicit_reverse_not_duplicated():
    g = RelationGraph(["a", "b"], [("a", "r", "b"), ("a", "r", "b"), ("b", "rev_r", "a")])
    assert g.relations == [("a", "r", "b"), ("b", "rev_r", "a")]
    assert g.edge_types == [("a", "r", "b"), ("b", "rev_r", "a")]
    symmetric = RelationGraph(["a", "b"], [("a", "near", "b"), ("b", "near", "a")])
    assert symmetric.edge_types == [("a", "near", "b"), ("b", "near", "a")]
    assert reverse_relation("rev_x") == "x" and reverse_relation("x") == "rev_x"


def test_complete_relates_every_pair():
    g = RelationGraph.complete(["a", "b", "c"])
    assert g.relations == [("a", "related", "b"), ("a", "related", "c"), ("b", "related", "c")]
    assert len(g.edge_types) == 6
    assert ("c", "rev_related", "a") in g.edge_types


def test_unknown_modality_suggests_close_match():
    with pytest.raises(
        CohortError,
        match=r"\('expresion', 'informs', 'clinical'\).*unknown modality 'expresion'.*Did you mean 'expression'\?",
    ):
        RelationGraph(MODALITIES, [("expresion", "informs", "clinical")])


def test_self_relation_rejected_with_intra_explanation():
    with pytest.raises(
        CohortError,
        match="links 'wsi' to itself; intra-modal edges are implicit \\(relation 'intra'\\)",
    ):
        RelationGraph(MODALITIES, [("wsi", "similar", "wsi")])


@pytest.mark.parametrize(
    "bad, message",
    [
        (("a", "intra", "b"), "reserved relation name 'intra'"),
        (("a", "random", "b"), "reserved relation name 'random'"),
        (("a", "b"), "triple of strings"),
        ("a-r-b", "triple of strings"),
    ],
)
def test_malformed_relations_rejected(bad, message):
    with pytest.raises(CohortError, match=message):
        RelationGraph(["a", "b"], [bad])


def test_modalities_must_be_unique_and_non_empty():
    with pytest.raises(CohortError, match="repeated: a"):
        RelationGraph(["a", "b", "a"])
    with pytest.raises(CohortError, match="at least one modality"):
        RelationGraph([])


def test_enumerate_metapaths_exact_set(graph):
    assert graph.enumerate_metapaths() == [
        [("expression", "informs", "clinical"), ("clinical", "describes", "wsi")],
        [("wsi", "rev_describes", "clinical"), ("clinical", "rev_informs", "expression")],
    ]
    one_or_two = graph.enumerate_metapaths(max_length=2, min_length=1)
    assert one_or_two[:4] == [[t] for t in graph.edge_types]
    assert one_or_two[4:] == graph.enumerate_metapaths()
    assert graph.enumerate_metapaths(max_length=3) == graph.enumerate_metapaths()


def test_enumerate_never_revisits_a_modality():
    g = RelationGraph.complete(["a", "b", "c"])
    paths = g.enumerate_metapaths(max_length=3)
    assert len(paths) == 6  # the 3! orderings; a->b->a and length 3 are impossible
    for p in paths:
        visited = [p[0][0]] + [dst for _, _, dst in p]
        assert len(set(visited)) == len(visited)
    with pytest.raises(MetaPathError, match="min_length <= max_length"):
        g.enumerate_metapaths(max_length=1, min_length=2)


def test_parse_metapath_string_forms(graph):
    expected = [("expression", "informs", "clinical"), ("clinical", "describes", "wsi")]
    assert graph.parse_metapath("expression -informs-> clinical -describes-> wsi") == expected
    assert graph.parse_metapath("expression->clinical->wsi") == expected
    assert graph.parse_metapath("expression -> clinical -describes-> wsi") == expected
    assert graph.parse_metapath([list(t) for t in expected]) == expected
    assert graph.parse_metapath(graph.metapath_name(expected)) == expected


def test_metapath_name(graph):
    path = graph.parse_metapath("expression->clinical->wsi")
    assert graph.metapath_name(path) == "expression-informs->clinical-describes->wsi"


def test_parse_handles_hyphenated_modality_names():
    g = RelationGraph(["gene", "gene-expr", "clinical"], [("gene-expr", "informs", "clinical")])
    assert g.parse_metapath("gene-expr-informs->clinical") == [("gene-expr", "informs", "clinical")]
    assert g.parse_metapath("clinical->gene-expr") == [("clinical", "rev_informs", "gene-expr")]


def test_compact_string_ambiguous_relation_lists_options():
    g = RelationGraph(["a", "b"], [("a", "x", "b"), ("a", "y", "b")])
    with pytest.raises(MetaPathError, match="is ambiguous; write one of: 'a -x-> b', 'a -y-> b'"):
        g.parse_metapath("a->b")


def test_compact_string_errors(graph):
    with pytest.raises(
        MetaPathError,
        match=r"no relation from 'expression' to 'wsi'; relations from 'expression': \[\('expression', 'informs', 'clinical'\)\]",
    ):
        graph.parse_metapath("expression->wsi")
    with pytest.raises(MetaPathError, match="'clinicl'.*Did you mean 'clinical'"):
        graph.parse_metapath("expression->clinicl")
    with pytest.raises(MetaPathError, match="'expresion'.*Did you mean 'expression'"):
        graph.parse_metapath("expresion -informs-> clinical")
    with pytest.raises(MetaPathError, match="cannot read meta-path"):
        graph.parse_metapath("expression")


def test_validate_names_bad_step(graph):
    path = [("expression", "informs", "clinical"), ("clinical", "describes", "expression")]
    message = (
        r"meta-path step 2 \('clinical', 'describes', 'expression'\): no relation 'describes' "
        r"from 'clinical' to 'expression'; relations from 'clinical': "
        r"\[\('clinical', 'describes', 'wsi'\), \('clinical', 'rev_informs', 'expression'\)\]"
    )
    with pytest.raises(MetaPathError, match=message):
        graph.validate_metapath(path)


def test_validate_suggests_close_relation(graph):
    with pytest.raises(MetaPathError, match="no relation 'inform' .*Did you mean 'informs'\\?"):
        graph.parse_metapath("expression -inform-> clinical")


def test_validate_steps_must_meet(graph):
    path = [("expression", "informs", "clinical"), ("wsi", "rev_describes", "clinical")]
    with pytest.raises(
        MetaPathError, match="step 2 .* starts at 'wsi' but step 1 ends at 'clinical'"
    ):
        graph.validate_metapath(path)


@pytest.mark.parametrize(
    "path, message",
    [
        ([], "non-empty list"),
        ([("expression", "informs")], "step 1 must be a"),
        ([("expression", "informs", "clinicl")], "step 1 .*unknown modality 'clinicl'.*'clinical'"),
        ([("wsi", "intra", "wsi")], "intra-modal edges are not meta-path steps"),
    ],
)
def test_validate_other_errors(graph, path, message):
    with pytest.raises(MetaPathError, match=message):
        graph.validate_metapath(path)


def test_random_metapaths_seeded_and_walk_any_pair(graph):
    paths = graph.random_metapaths(3, length=2, seed=7)
    assert paths == graph.random_metapaths(3, length=2, seed=7)
    draws = {str(graph.random_metapaths(3, length=2, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    assert len({str(p) for p in paths}) == 3
    for p in paths:
        assert [r for _, r, _ in p] == [RANDOM, RANDOM]
        assert len({p[0][0], p[0][2], p[1][2]}) == 3
    with pytest.raises(MetaPathError, match="no relation 'random'"):
        graph.validate_metapath(paths[0])
    extended = graph.with_random_relations()
    assert all(extended.validate_metapath(p) == p for p in paths)
    assert ("expression", RANDOM, "wsi") in extended.edge_types  # not declared in graph
    assert set(graph.edge_types) < set(extended.edge_types)


def test_random_metapaths_bounds(graph):
    assert len(graph.random_metapaths(6, length=2)) == 6  # all 3! walks
    with pytest.raises(MetaPathError, match="1 <= n <= 6"):
        graph.random_metapaths(7, length=2)
    with pytest.raises(MetaPathError, match="need 4 distinct modalities; there are 3"):
        graph.random_metapaths(1, length=3)


def test_dict_round_trip(graph):
    data = graph.to_dict()
    assert data == {"modalities": MODALITIES, "relations": [list(t) for t in RELATIONS]}
    assert RelationGraph.from_dict(data) == graph
    extended = graph.with_random_relations()
    back = RelationGraph.from_dict(extended.to_dict())
    assert back == extended and back != graph
    with pytest.raises(
        CohortError,
        match="has keys \\['modalities', 'relations', 'random_relations'\\], got \\['modalites'\\]",
    ):
        RelationGraph.from_dict({"modalites": MODALITIES})


def test_from_cohort_falls_back_to_complete():
    class Fake:
        modalities = {"a": None, "b": None}
        relations: list = []

    assert RelationGraph.from_cohort(Fake()) == RelationGraph.complete(["a", "b"])
    Fake.relations = [("b", "explains", "a")]
    assert RelationGraph.from_cohort(Fake()).relations == [("b", "explains", "a")]
