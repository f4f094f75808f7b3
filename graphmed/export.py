"""Moved to :mod:`graphmed.inference.export`; this name keeps old imports working."""

from .inference.export import (
    METADATA_KEYS,
    PREFIX,
    ExportSummary,
    embed_frame,
    export_embeddings,
    pq,
    read_export_metadata,
)

__all__ = [
    "METADATA_KEYS",
    "PREFIX",
    "ExportSummary",
    "embed_frame",
    "export_embeddings",
    "pq",
    "read_export_metadata",
]
