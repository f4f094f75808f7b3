"""Type names shared across graphmed (after PyG's ``typing.py``)."""

from __future__ import annotations

NodeType = str
"""A node type is a modality name, e.g. ``"clinical"``."""

EdgeType = tuple[str, str, str]
"""``(source modality, relation, target modality)``."""

MetaPath = list[EdgeType]
"""A chain of edge types whose targets and sources meet, as in PyG ``AddMetaPaths``."""

KINDS: tuple[str, ...] = ("tabular", "vector", "bag", "graph", "text")
"""Modality kinds: a table of named features, a wide numeric vector, a bag of instances,
a graph per patient (nodes with features and edges), a text per patient."""

FOLDER_KINDS: tuple[str, ...] = ("bag", "graph")
"""Kinds stored as a folder of one file per patient (the others are one table)."""

INTRA = "intra"
"""Relation name of the intra-modal edges of every modality."""
