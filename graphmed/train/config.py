"""The experiment configuration: what a YAML file under ``configs/`` names.

Each section is a plain dataclass; :func:`load_experiment` reads a YAML file,
applies ``--set a.b=value`` overrides and checks every key (an unknown key is
an error that suggests the close match). Library modules never read this
object themselves: the builders in :mod:`graphmed.train.builder` turn it into
constructor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..configuration import FieldValueError, check_range, from_dict, load_config, to_dict
from ..errors import ConfigError


@dataclass
class GraphConfig:
    """How cohorts become cached patient graphs."""

    max_instances: int = 64
    bag_pooling: Literal["subsample", "prototypes"] = "subsample"
    chunk_size: int = 8
    max_tokens: int | None = 32
    """Cap on the nodes of a vector modality: wider ones get chunks of
    ``ceil(width / max_tokens)`` columns (``None``: always ``chunk_size``)."""
    max_features: int | None = 2000
    screen_features: int | None = None
    """Keep this many columns of each vector modality, those with the largest univariate
    Cox score on the training fold (after the variance cap); ``None``: no screening."""
    token_order: Literal["columns", "correlation"] = "columns"
    """Which columns of a vector modality share a chunk node: ``columns`` (in the given
    order) or ``correlation`` (reordered by a clustering of the columns on their correlation
    over the training fold, so each chunk holds correlated genes)."""
    standardize_bags: bool = True

    def __post_init__(self) -> None:
        check_range(self, "max_instances", low=1)
        check_range(self, "chunk_size", low=1)
        check_range(self, "max_tokens", low=1, allow_none=True)
        check_range(self, "max_features", low=1, allow_none=True, hint="null keeps every column")
        check_range(self, "screen_features", low=1, allow_none=True, hint="null: no screening")


@dataclass
class ModelConfig:
    """The network (:class:`graphmed.nn.GraphMedNet`) and its ablation switches."""

    hidden: int = 128
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    completion: Literal["prompt", "zero"] = "prompt"
    n_prompts: int = 5
    n_bank: int = 5
    prompt_bank: bool = True
    modality_dropout: float = 0.25
    steering: Literal["cosine", "mse", "none"] = "cosine"
    steering_weight: float = 0.1
    heterogeneous: bool = True
    metapath_level: bool = True
    metapaths: Any = "auto"
    """``"auto"`` (enumerated from the relation graph), ``"random"`` or a list of specs."""
    metapath_max_length: int = 2
    linear_path: bool = True
    """Add a frozen elastic-net Cox model on the inputs (fitted on the training patients,
    alpha by inner CV) to the survival head; the graph learns the rest."""
    linear_refit: bool = False
    """After training (and the blend), refit the linear path on the whole training fold
    instead of keeping its fit on the fitting part (the validation part left out)."""
    linear_inputs: Literal["all", "tabular"] = "tabular"
    """What the linear path reads: only the tabular modalities (the clinical table; a
    cohort without one gets no linear path), or every modality."""
    linear_summaries: bool = True
    """The linear path also reads three whole-profile summaries (mean, mean absolute
    value, share above the training mean) of each vector modality it does not read
    itself, e.g. the mutation burden (``docs/model.md``, item 8)."""
    bag_tokens: int | None = 16
    """Pool each bag to this many nodes before the graph (gated attention, linear in the
    bag size); ``None`` keeps one node per instance (attention quadratic in the bag)."""
    graph_conv: Literal["gatv2", "gin"] = "gatv2"
    """Message passing over the edges of a ``graph`` modality (e.g. cell graphs):
    ``GATv2Conv`` or ``GINConv`` (``docs/model.md``, "Graph and text modalities")."""

    def __post_init__(self) -> None:
        for key in ("hidden", "heads", "n_prompts", "n_bank", "metapath_max_length"):
            check_range(self, key, low=1)
        check_range(self, "layers", low=0)
        check_range(self, "bag_tokens", low=1, allow_none=True)
        check_range(self, "dropout", low=0, high=1, high_open=True)
        check_range(self, "modality_dropout", low=0, high=1, high_open=True)
        check_range(self, "steering_weight", low=0)


@dataclass
class TaskConfig:
    """Heads and their loss weights."""

    survival: Literal["cox", "discrete", "none"] = "discrete"
    n_bins: int = 4
    alpha: float = 0.4
    survival_weight: float = 1.0
    label: str | None = None
    label_weight: float = 1.0

    def __post_init__(self) -> None:
        check_range(self, "n_bins", low=1)
        check_range(self, "alpha", low=0, high=1)
        check_range(self, "survival_weight", low=0)
        check_range(self, "label_weight", low=0)


@dataclass
class TrainConfig:
    """Optimisation, early stopping and the device."""

    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    prompt_lr: float = 2e-4
    weight_decay: float = 1e-4
    patience: int = 20
    val_fraction: float = 0.2
    monitor: Literal["loss", "c_index"] = "loss"
    feature_noise: float = 0.0
    linear_blend: bool = True
    """With a linear Cox path: after early stopping, choose on the validation part how much
    of the graph part to keep, ``risk = linear + w * graph`` with ``w`` in 0, 1/4, .., 1."""
    ensemble: int = 3
    """Members trained per model, each with its own seed and validation part; their
    outputs are averaged (risks, logits) and their embeddings set side by side.
    Training takes ``ensemble`` times as long; 1 trains a single model."""
    pretrain_epochs: int = 0
    """Epochs of masked-modality pretraining before the survival loss (0: none): hide a
    share of each training patient's modalities and rebuild them from the others
    (:mod:`graphmed.train.pretrain`; no label is read)."""
    pretrain_mask: float = 0.5
    """Share of each patient's present modalities hidden per pretraining batch."""
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    progress: bool = True
    compile: bool = False
    """Run the training forward pass through ``torch.compile`` (``graphmed.train.accel``)."""
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    """The ``torch.compile`` backend: ``inductor`` (fused kernels; the default),
    ``aot_eager`` (traced, no code generation: quick to compile, for tests) or ``eager``."""
    cuda_graphs: bool = False
    """Capture the forward and backward of the training step in CUDA graphs, one per batch
    size, and replay them (CUDA only: refused on the CPU, with fp16 and with
    ``--distributed``)."""

    def __post_init__(self) -> None:
        if self.compile and self.cuda_graphs:
            raise FieldValueError(
                "cuda_graphs",
                "cannot be combined with {0}: choose one ({0} with the inductor backend "
                "fuses kernels; cuda_graphs replays the eager step's kernels)",
                ["compile"],
            )
        if self.cuda_graphs and self.precision == "fp16":
            raise FieldValueError(
                "cuda_graphs",
                "does not work with {0} fp16 (its loss scaler reads the gradients on the "
                "host in every step); use bf16 or fp32",
                ["precision"],
            )
        for key in ("epochs", "batch_size", "patience", "ensemble"):
            check_range(self, key, low=1)
        check_range(self, "lr", low=0, low_open=True)
        check_range(self, "prompt_lr", low=0)
        check_range(self, "weight_decay", low=0)
        check_range(self, "feature_noise", low=0)
        check_range(self, "pretrain_epochs", low=0)
        check_range(self, "pretrain_mask", low=0, high=1, low_open=True, high_open=True)
        check_range(self, "val_fraction", low=0, high=1, low_open=True, high_open=True)


@dataclass
class EvalConfig:
    """Cross-validation, metrics and baselines."""

    folds: int = 5
    repeats: int = 1
    seed: int = 0
    horizons: list[float] | None = None
    test_missing: dict[str, float] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=lambda: ["coxnet", "rsf"])
    bootstrap: int = 1000
    risk_groups: Literal["median", "tertiles"] = "median"

    def __post_init__(self) -> None:
        check_range(self, "folds", low=2, hint="cross-validation needs two folds or more")
        check_range(self, "repeats", low=1)
        check_range(self, "bootstrap", low=0)
        for i, t in enumerate(self.horizons or []):
            if not t > 0:
                raise FieldValueError("horizons", f"must be positive times, got {t!r} at [{i}]")
        for mod, rate in self.test_missing.items():
            if not 0 <= rate <= 1:
                raise FieldValueError(
                    "test_missing", f"rate of '{mod}' must be in [0, 1], got {rate!r}"
                )


@dataclass
class ExperimentConfig:
    """Everything a run needs besides the cohort."""

    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Read a YAML experiment config (or the defaults) and apply ``a.b=value`` overrides.

    Every value is checked against its range (:class:`ConfigError` naming the
    key), and so are the combinations of :func:`check_experiment`.
    """
    return check_experiment(load_config(ExperimentConfig, path, list(overrides)))


def check_experiment(config: ExperimentConfig) -> ExperimentConfig:
    """Check the values that must fit together; return ``config`` unchanged.

    Single values are checked where their section is built; these checks join
    keys, so a search space may still draw a combination that fails here
    (its trial fails, the study goes on).

    Raises:
        ConfigError: ``model.heads`` does not divide ``model.hidden``.
    """
    model = config.model
    if model.hidden % model.heads:
        fits = [h for h in range(1, model.hidden + 1) if model.hidden % h == 0][:8]
        raise ConfigError(
            f"'model.heads' must divide 'model.hidden': hidden={model.hidden} is not divisible "
            f"by heads={model.heads}; use heads in {fits} or change model.hidden"
        )
    return config


def experiment_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """The config of plain ``data`` (as :func:`experiment_to_dict` writes), values checked."""
    return from_dict(ExperimentConfig, data)


def experiment_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return to_dict(config)
