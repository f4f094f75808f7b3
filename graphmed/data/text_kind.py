"""The ``text`` modality kind: one clinical report or note per patient.

In memory a text modality is a DataFrame indexed by ``patient_id`` with one
column ``text``; on disk a ``.csv`` or ``.parquet`` table ``patient_id, text``.
A patient without a row, or with an empty text, misses the modality.

:func:`fit_text` turns the training patients' texts into a fitted state (a
TF-IDF vocabulary with its idf weights, and a truncated SVD of the TF-IDF
matrix); :func:`transform_text` projects any texts with that state and never
refits it, so a term seen only outside the training fold has no column.
With option ``encoder`` set to the folder of a sentence-transformers model
saved on this machine, the texts are embedded by that model instead (nothing
is fitted; nothing is downloaded).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CohortError

TEXT = "text"
"""The one column of a text modality."""

TFIDF = "tfidf"
TEXT_DEFAULTS: dict[str, Any] = {
    "encoder": TFIDF,
    "n_components": 32,
    "max_terms": 2000,
    "min_df": 2,
    "ngram_max": 2,
}
"""Defaults of a text modality's options (``docs/cohort-format.md``). ``encoder`` is
``"tfidf"`` or the folder of a sentence-transformers model saved on this machine."""


def text_present(frame: pd.DataFrame) -> pd.Index:
    """Patient ids whose text is a non-empty string."""
    values = frame[TEXT] if TEXT in frame.columns else pd.Series(dtype=object)
    has = values.map(lambda v: isinstance(v, str) and v.strip() != "")
    return frame.index[has.to_numpy(bool)]


def check_text_modality(mod: str, frame: Any, known: pd.Index, where) -> None:
    """Raise :class:`CohortError` naming the file and patient of the first problem.

    Args:
        mod: Modality name.
        frame: The modality's DataFrame (index ``patient_id``, column ``text``).
        known: The cohort's patient ids.
        where: The validator's ``_Where`` (names files in messages).
    """
    from .validate import _check_unknown, check_patient_ids, show

    name = where.table(mod)
    if not isinstance(frame, pd.DataFrame):
        raise CohortError(
            f"{name}: a text modality holds a DataFrame indexed by patient_id with one column "
            f"'text', got {type(frame).__name__}."
        )
    check_patient_ids(frame.index, name, where.is_file)
    if list(frame.columns) != [TEXT]:
        raise CohortError(
            f"{name}: a text modality has the columns patient_id and text, found "
            f"{['patient_id', *map(str, frame.columns)][:8]}. Keep one 'text' column per "
            "patient (join several notes into one text); put other columns in a tabular "
            "modality."
        )
    values = frame[TEXT]
    odd = values.notna() & ~values.map(lambda v: isinstance(v, str))
    if odd.any():
        pid = values.index[odd.to_numpy().argmax()]
        raise CohortError(
            f"{name}: the text of patient '{pid}' is {show(values[pid])}, not a string; a text "
            "modality holds one report (a string) per patient. Convert it with .astype(str), "
            "or leave it empty for a missing report."
        )
    _check_unknown(frame.index, known, name, where)
    if len(text_present(frame)) == 0 and not where.part:
        raise CohortError(
            f"{name}: modality '{mod}' has no patients at all (no non-empty text); expected at "
            "least one. Add its reports or remove the modality."
        )


def text_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with their defaults, checked; raises :class:`CohortError`."""
    out = {**TEXT_DEFAULTS, **{k: v for k, v in options.items() if k in TEXT_DEFAULTS}}
    if not isinstance(out["encoder"], str) or not out["encoder"].strip():
        raise CohortError(
            f"text option 'encoder' must be 'tfidf' or the folder of a sentence-transformers "
            f"model saved on this machine, got {out['encoder']!r}."
        )
    for key, low in (("n_components", 1), ("max_terms", 1), ("min_df", 1), ("ngram_max", 1)):
        value = out[key]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise CohortError(
                f"text option '{key}' must be an integer >= {low}, got {value!r} (default "
                f"{TEXT_DEFAULTS[key]})."
            )
    return out


def fit_text(texts: list[str], options: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Fit TF-IDF and truncated SVD on training ``texts``.

    Args:
        texts: The training patients' reports (non-empty strings).
        options: The modality's options (``n_components``, ``max_terms``,
            ``min_df``, ``ngram_max``; see :data:`TEXT_DEFAULTS`).

    Returns:
        The fitted state (plain lists: ``vocabulary`` in column order, ``idf``,
        ``components`` ``(k, V)``, ``ngram_max``) and the training projections
        ``(len(texts), k)``.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    opts = text_options(options)
    if opts["encoder"] != TFIDF:  # a pretrained model: nothing is fitted
        folder = str(Path(opts["encoder"]).expanduser().resolve())
        embedded = _embed(folder, texts)
        return {"encoder": folder, "dim": int(embedded.shape[1])}, embedded
    # A term must appear in min_df reports, but a small training fold keeps every term.
    min_df = opts["min_df"] if len(texts) >= 10 * opts["min_df"] else 1
    vec = TfidfVectorizer(
        max_features=opts["max_terms"],
        min_df=min_df,
        ngram_range=(1, opts["ngram_max"]),
        sublinear_tf=True,
    )
    try:
        tfidf = vec.fit_transform(texts)
    except ValueError as err:  # no term at all
        raise CohortError(
            f"text modality: the training reports hold no word to build a vocabulary from "
            f"({err}); check the text column."
        ) from err
    n_terms = tfidf.shape[1]
    k = min(opts["n_components"], n_terms - 1, len(texts) - 1)
    if k >= 1:
        components = TruncatedSVD(k, random_state=0).fit(tfidf).components_
    else:  # one term or one report: the TF-IDF weights themselves
        components = np.eye(n_terms)
    vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    state = {
        "vocabulary": vocab,
        "idf": vec.idf_.tolist(),
        "components": components.tolist(),
        "ngram_max": int(opts["ngram_max"]),
    }
    return state, np.asarray(tfidf @ components.T)


def transform_text(state: dict[str, Any], texts: list[str]) -> np.ndarray:
    """``(len(texts), k)`` projections of ``texts`` with a fitted state (never refitted).

    The TF-IDF weighting is recomputed from the stored vocabulary and idf (as
    scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` does), so a term
    outside the vocabulary is ignored.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    if "encoder" in state:
        if not texts:
            return np.zeros((0, int(state["dim"])))
        return _embed(state["encoder"], texts)
    vocab = {t: i for i, t in enumerate(state["vocabulary"])}
    components = np.asarray(state["components"], dtype=np.float64)
    if not texts:
        return np.zeros((0, len(components)))
    counts = CountVectorizer(vocabulary=vocab, ngram_range=(1, state["ngram_max"])).transform(texts)
    tf = counts.astype(np.float64)
    tf.data = 1.0 + np.log(tf.data)
    weighted = tf.multiply(np.asarray(state["idf"])[None, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1))).ravel()
    weighted = weighted.multiply(1.0 / np.where(norms > 0, norms, 1.0)[:, None]).tocsr()
    return np.asarray(weighted @ components.T)


@lru_cache(maxsize=4)
def _sentence_model(folder: str):
    """The sentence-transformers model saved in ``folder``, loaded without any download."""
    if not Path(folder).is_dir():
        raise CohortError(
            f"text option 'encoder': {folder} is not a folder. Give the folder of a "
            "sentence-transformers model saved on this machine (SentenceTransformer(name)"
            ".save(folder) where a network is at hand), or 'tfidf'; graphmed never downloads "
            "a model."
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise CohortError(
            f"text option 'encoder': {folder} needs the sentence-transformers package, which "
            "is not installed (pip install sentence-transformers), or use 'tfidf'."
        ) from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model folder names no hub files
    return SentenceTransformer(folder, device="cpu", local_files_only=True)


def _embed(folder: str, texts: list[str]) -> np.ndarray:
    """``(len(texts), dim)`` float64 embeddings of ``texts`` by the model in ``folder``."""
    model = _sentence_model(folder)
    out = np.asarray(model.encode(list(texts), convert_to_numpy=True), dtype=np.float64)
    if out.ndim != 2 or len(out) != len(texts) or not np.isfinite(out).all():
        raise CohortError(
            f"text option 'encoder': the model in {folder} returned embeddings of shape "
            f"{out.shape} (or non-finite values) for {len(texts)} reports; expected one finite "
            "vector per report."
        )
    return out
