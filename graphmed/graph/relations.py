"""The relation graph between modalities, and the meta-paths that walk it.

A cohort declares relations such as ``("expression", "informs", "clinical")``.
:class:`RelationGraph` holds them as a networkx ``MultiDiGraph`` with one node
per modality and one edge per directed edge type (the edge key is the
relation). Each declared relation also gets its reverse, ``rev_<relation>``,
so that messages flow both ways; intra-modal edges (relation ``"intra"``) are
implicit and never declared.

Meta-paths are chains of edge types whose ends meet, e.g.
``expression -informs-> clinical -describes-> wsi``: enumerated, parsed from a
string or a list of triples, and validated with errors naming the bad step.

Random meta-paths (the ablation of knowledge-guided ones) step along the
reserved relation ``"random"`` between any two modalities, so the model must
treat those edge types as extra relations: build patient graphs and the model
from :meth:`RelationGraph.with_random_relations` when using them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from ..errors import CohortError, MetaPathError, did_you_mean
from ..typing import INTRA, EdgeType, MetaPath

RANDOM = "random"
"""Relation name of the edge types used by random meta-paths."""

REVERSE_PREFIX = "rev_"


def reverse_relation(relation: str) -> str:
    """Name of the reverse of ``relation``: ``"informs"`` <-> ``"rev_informs"``."""
    if relation.startswith(REVERSE_PREFIX):
        return relation[len(REVERSE_PREFIX) :]
    return REVERSE_PREFIX + relation


def _is_triple(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 3 and all(type(x) is str for x in item)


class RelationGraph:
    """Modalities as nodes, typed relations as directed edges.

    Args:
        modalities: Modality names (node types), in the cohort's order.
        relations: Declared ``(source, relation, target)`` triples. Duplicates
            are dropped. Each one also adds its reverse ``(target,
            "rev_<relation>", source)`` unless that reverse, or the same
            relation in the other direction, is declared too.
        random_relations: Also add ``(a, "random", b)`` for every ordered pair
            ``a != b``, the edge types of :meth:`random_metapaths` (default
            False; see :meth:`with_random_relations`).

    Raises:
        CohortError: A relation names an unknown modality, links a modality to
            itself, or uses a reserved relation name (``"intra"``, ``"random"``).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        relations: Iterable[Sequence[str]] = (),
        random_relations: bool = False,
    ) -> None:
        self.modalities: tuple[str, ...] = tuple(modalities)
        if not self.modalities:
            raise CohortError("a relation graph needs at least one modality, got none")
        dupes = sorted({m for m in self.modalities if self.modalities.count(m) > 1})
        if dupes:
            raise CohortError(f"modalities must be unique; repeated: {', '.join(dupes)}")
        self.relations: list[EdgeType] = []
        for item in relations:
            triple = self._check_relation(item)
            if triple not in self.relations:
                self.relations.append(triple)
        self._graph = nx.MultiDiGraph()
        self._graph.add_nodes_from(self.modalities)
        declared = set(self.relations)
        for a, r, b in self.relations:
            self._graph.add_edge(a, b, key=r, relation=r, reverse=False)
        for a, r, b in self.relations:
            if (b, r, a) in declared or (b, reverse_relation(r), a) in declared:
                continue
            rev = reverse_relation(r)
            self._graph.add_edge(b, a, key=rev, relation=rev, reverse=True)
        self.random_relations = random_relations
        if random_relations:
            for a, b in itertools.permutations(self.modalities, 2):
                self._graph.add_edge(a, b, key=RANDOM, relation=RANDOM, reverse=False)

    @classmethod
    def complete(cls, modalities: Sequence[str], relation: str = "related") -> RelationGraph:
        """Relate every pair of modalities: ``(a, relation, b)`` for ``a`` before ``b``."""
        return cls(modalities, [(a, relation, b) for a, b in itertools.combinations(modalities, 2)])

    @classmethod
    def from_cohort(cls, cohort: Any, relation: str = "related") -> RelationGraph:
        """The cohort's declared relations, or :meth:`complete` when it declares none."""
        modalities = list(cohort.modalities)
        if cohort.relations:
            return cls(modalities, cohort.relations)
        return cls.complete(modalities, relation)

    def _check_relation(self, item: Sequence[str]) -> EdgeType:
        if not _is_triple(item):
            raise CohortError(
                f"a relation must be a (source, relation, target) triple of strings, got {item!r}"
            )
        a, r, b = item
        for m in (a, b):
            self._check_modality(m, f"relation {(a, r, b)!r} names ", CohortError)
        if a == b:
            raise CohortError(
                f"relation {(a, r, b)!r} links '{a}' to itself; intra-modal edges are implicit "
                f"(relation '{INTRA}') and must not be declared"
            )
        if r in (INTRA, RANDOM):
            raise CohortError(f"relation {(a, r, b)!r} uses the reserved relation name '{r}'")
        return (a, r, b)

    # ------------------------------------------------------------------ views
    @property
    def edge_types(self) -> list[EdgeType]:
        """Every directed edge type, reverses included, intra-modal excluded; sorted."""
        return sorted((a, r, b) for a, b, r in self._graph.edges(keys=True))

    @property
    def edge_types_with_intra(self) -> list[EdgeType]:
        """:attr:`edge_types` plus ``(m, "intra", m)`` for every modality; sorted."""
        return sorted(self.edge_types + [(m, INTRA, m) for m in self.modalities])

    def neighbours(self, modality: str) -> list[str]:
        """Modalities one edge away from ``modality`` (either direction), sorted."""
        self._check_modality(modality, "", CohortError)
        return sorted(set(nx.all_neighbors(self._graph, modality)))

    def _out(self, src: str) -> list[EdgeType]:
        return [t for t in self.edge_types if t[0] == src]

    def relations_between(self, src: str, dst: str) -> list[str]:
        """Relation names of the edge types from ``src`` to ``dst``, sorted."""
        return sorted(self._graph[src][dst]) if self._graph.has_edge(src, dst) else []

    def to_networkx(self) -> nx.MultiDiGraph:
        """A copy of the underlying graph (edge key = relation name)."""
        return self._graph.copy()

    def to_dict(self) -> dict[str, Any]:
        """Modalities and declared relations (not reverses), as plain lists."""
        out: dict[str, Any] = {"modalities": list(self.modalities)}
        out["relations"] = [list(t) for t in self.relations]
        if self.random_relations:
            out["random_relations"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RelationGraph:
        """Inverse of :meth:`to_dict`."""
        keys = ["modalities", "relations", "random_relations"]
        if set(data) - set(keys) or "modalities" not in data:
            raise CohortError(
                f"a relation graph dict has keys {keys}, got {sorted(map(str, data))}"
            )
        return cls(
            data["modalities"], data.get("relations", ()), data.get("random_relations", False)
        )

    def with_random_relations(self) -> RelationGraph:
        """This graph plus ``(a, "random", b)`` for every ordered pair ``a != b``.

        The edge types that :meth:`random_metapaths` walk; build patient graphs
        and the model from this graph when using random meta-paths.
        """
        return RelationGraph(self.modalities, self.relations, random_relations=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RelationGraph):
            return NotImplemented
        return self.modalities == other.modalities and self.edge_types == other.edge_types

    def __repr__(self) -> str:
        return f"RelationGraph.from_dict({self.to_dict()})"

    def _check_modality(self, name: str, where: str, error: type = MetaPathError) -> None:
        if name not in self.modalities:
            raise error(
                f"{where}unknown modality '{name}'; modalities: {', '.join(self.modalities)}."
                f"{did_you_mean(name, self.modalities)}"
            )

    # ------------------------------------------------------------- meta-paths
    def enumerate_metapaths(self, max_length: int = 2, min_length: int = 2) -> list[MetaPath]:
        """Every simple walk (no modality visited twice) along the edge types.

        Args:
            max_length: Most steps in a meta-path (default 2).
            min_length: Fewest steps in a meta-path (default 2).

        Returns:
            Meta-paths sorted by length, then by their edge types.
        """
        if not 1 <= min_length <= max_length:
            raise MetaPathError(
                f"expected 1 <= min_length <= max_length, got min_length={min_length}, "
                f"max_length={max_length}"
            )
        found: list[MetaPath] = []
        out = {m: self._out(m) for m in self.modalities}

        def walk(path: MetaPath, seen: set[str]) -> None:
            if len(path) >= min_length:
                found.append(list(path))
            if len(path) == max_length:
                return
            for step in out[path[-1][2]]:
                if step[2] not in seen:
                    walk([*path, step], seen | {step[2]})

        for step in self.edge_types:
            walk([step], {step[0], step[2]})
        return sorted(found, key=lambda p: (len(p), p))

    def validate_metapath(self, path: Sequence[Sequence[str]]) -> MetaPath:
        """Check that every step is an edge type and that consecutive steps meet.

        Returns:
            The meta-path as a list of tuples.

        Raises:
            MetaPathError: Naming the first bad step (1-based) and what would fit.
        """
        if isinstance(path, str) or not path:
            raise MetaPathError(f"a meta-path is a non-empty list of edge types, got {path!r}")
        steps: MetaPath = []
        for i, step in enumerate(path, start=1):
            if not _is_triple(step):
                raise MetaPathError(
                    f"meta-path step {i} must be a (source, relation, target) triple, got {step!r}"
                )
            a, r, b = step
            where = f"meta-path step {i} {(a, r, b)!r}"
            for m in (a, b):
                self._check_modality(m, f"{where}: ")
            if steps and steps[-1][2] != a:
                raise MetaPathError(
                    f"{where} starts at '{a}' but step {i - 1} ends at '{steps[-1][2]}'; "
                    "consecutive steps must meet"
                )
            if r not in self.relations_between(a, b):
                hint = " (intra-modal edges are not meta-path steps)" if r == INTRA else ""
                raise MetaPathError(
                    f"{where}: no relation '{r}' from '{a}' to '{b}'{hint}; relations from "
                    f"'{a}': {self._out(a)}.{did_you_mean(r, self.relations_between(a, b))}"
                )
            steps.append((a, r, b))
        return steps

    def parse_metapath(self, spec: str | Sequence[Sequence[str]]) -> MetaPath:
        """Read a meta-path from a list of triples or a compact string, and validate it.

        Args:
            spec: ``[("expression", "informs", "clinical"), ...]``, or
                ``"expression -informs-> clinical -describes-> wsi"``, or
                ``"expression->clinical->wsi"`` where the relation between each
                pair is unique. :meth:`metapath_name` output parses back.

        Raises:
            MetaPathError: Unknown modality, missing or ambiguous relation, or
                steps that do not meet.
        """
        if not isinstance(spec, str):
            return self.validate_metapath(spec)
        parts = [p.strip() for p in spec.split("->")]
        if len(parts) < 2 or not all(parts):
            raise MetaPathError(
                f"cannot read meta-path {spec!r}; expected 'a -relation-> b -relation-> c' "
                "or 'a->b->c'"
            )
        hops = [self._split_hop(p, spec) for p in parts[:-1]]
        last = parts[-1]
        self._check_modality(last, f"meta-path {spec!r}: ")
        targets = [m for m, _ in hops[1:]] + [last]
        steps: MetaPath = []
        for (a, rel), b in zip(hops, targets):
            if rel is None:
                options = self.relations_between(a, b)
                if not options:
                    raise MetaPathError(
                        f"meta-path {spec!r}: no relation from '{a}' to '{b}'; relations from "
                        f"'{a}': {self._out(a)}"
                    )
                if len(options) > 1:
                    found = ", ".join(f"'{a} -{o}-> {b}'" for o in options)
                    raise MetaPathError(
                        f"meta-path {spec!r}: relation from '{a}' to '{b}' is ambiguous; "
                        f"write one of: {found}"
                    )
                rel = options[0]
            steps.append((a, rel, b))
        return self.validate_metapath(steps)

    def _split_hop(self, part: str, spec: str) -> tuple[str, str | None]:
        # Split "modality -relation" at a hyphen that leaves a known modality,
        # so that hyphenated modality names still parse.
        if part in self.modalities:
            return part, None
        for i in reversed(range(len(part))):  # longest modality first: "gene-expr-informs"
            if part[i] == "-" and part[:i].strip() in self.modalities and part[i + 1 :].strip():
                return part[:i].strip(), part[i + 1 :].strip()
        head = part.split("-")[0].strip()
        self._check_modality(head, f"meta-path {spec!r}: ")
        raise MetaPathError(f"cannot read {part!r} in meta-path {spec!r}")

    def random_metapaths(self, n: int, length: int = 2, seed: int = 0) -> list[MetaPath]:
        """``n`` distinct random simple walks over any modality pairs (the ablation).

        Steps are ``(a, "random", b)``; they follow no declared relation, so
        patient graphs and the model must come from :meth:`with_random_relations`.

        Args:
            n: Number of meta-paths, at most the number of simple walks of ``length``.
            length: Steps per meta-path (default 2).
            seed: Seed of the draw; the same seed gives the same (sorted) meta-paths.
        """
        if not 1 <= length < len(self.modalities):
            raise MetaPathError(
                f"random meta-paths of length {length} need {length + 1} distinct modalities; "
                f"there are {len(self.modalities)}"
            )
        walks = list(itertools.permutations(self.modalities, length + 1))
        if not 0 < n <= len(walks):
            raise MetaPathError(
                f"expected 1 <= n <= {len(walks)} random meta-paths of length {length}, got {n}"
            )
        chosen = random.Random(seed).sample(walks, n)
        return sorted([(a, RANDOM, b) for a, b in itertools.pairwise(w)] for w in chosen)

    @staticmethod
    def metapath_name(path: Sequence[Sequence[str]]) -> str:
        """Readable name, e.g. ``"expr-informs->clinical-describes->wsi"``."""
        return path[0][0] + "".join(f"-{r}->{b}" for _, r, b in path)
