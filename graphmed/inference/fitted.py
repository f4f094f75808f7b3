"""What was fitted on a training cohort that a model needs to read any cohort."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor
from ..graph.build import PatientGraphs, build_graphs
from ..graph.relations import RelationGraph

if TYPE_CHECKING:
    from ..train.options import ModelRecipe


@dataclass
class FittedData:
    """Preprocessing, relations and label classes fitted on a training cohort.

    Attributes:
        preprocessor: The fitted :class:`CohortPreprocessor`.
        relations: The relation graph of the training cohort.
        label_classes: Label column -> its sorted training classes.
        recipe: The option groups the model was built with; its ``graph``
            group says how cohorts become patient graphs.
    """

    preprocessor: CohortPreprocessor
    relations: RelationGraph
    label_classes: dict[str, list[Any]]
    recipe: ModelRecipe

    def graphs(self, cohort: Cohort) -> PatientGraphs:
        """Patient graphs of ``cohort`` with the training-fitted preprocessing."""
        g = self.recipe.graph
        return build_graphs(
            cohort,
            self.preprocessor,
            max_instances=g.max_instances,
            bag_pooling=g.bag_pooling,
            chunk_size=g.chunk_size,
            max_tokens=g.max_tokens,
            seed=self.recipe.train.seed,
            label_classes=self.label_classes,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "preprocessor": self.preprocessor.to_dict(),
            "relations": self.relations.to_dict(),
            "label_classes": self.label_classes,
        }
