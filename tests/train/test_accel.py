"""The launch-efficient step paths (``train.compile``, ``train.cuda_graphs``) equal the eager step.

``torch.compile`` runs here with the ``aot_eager`` backend (it traces forward
and backward as inductor does, without generating code, which would take
about 90 s on this CPU). The CUDA-graph capture itself needs a GPU; what runs
on the CPU is everything around it: the flat batch it captures, the loss of
that flat batch, the batch sizes per epoch and the refusals.
"""

import copy

import pytest
import torch

import graphmed
from graphmed.errors import ConfigError, GraphMedError
from graphmed.train import accel
from graphmed.train.builder import build_model
from graphmed.train.config import load_experiment
from graphmed.train.trainer import make_adamw

DETERMINISTIC = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "model.dropout=0",
    "model.modality_dropout=0",
    "train.ensemble=1",  # one model: one compiled step
]


@pytest.fixture(scope="module")
def setup(synthetic_fit):
    """The default model (prompts, meta-paths, linear path) on 40 synthetic patients."""
    cohort, fitted, graphs = synthetic_fit(40, seed=1, censoring=0.3, overrides=DETERMINISTIC)
    torch.manual_seed(0)
    model = build_model(fitted, graphs, cohort)
    return model, graphs


def _steps(model, forward, graphs, n_steps=3):
    opt = make_adamw(model.parameters(), lr=1e-2)
    losses = []
    for step in range(n_steps):
        batch = graphs.batch(torch.arange(step * 8, step * 8 + 16) % len(graphs))
        loss, _ = model.loss(batch, forward(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_compiled_training_steps_equal_eager(setup):
    model, graphs = setup
    eager, compiled = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    # fullgraph=True: a graph break in the forward pass would raise here
    forward = accel.compile_forward(compiled, backend="aot_eager")
    with torch.no_grad():
        batch = graphs.batch(torch.arange(16))
        torch.testing.assert_close(forward(batch).heads["survival"], eager(batch).heads["survival"])
    want = _steps(eager, eager, graphs)
    got = _steps(compiled, forward, graphs)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    # the compiled callable shares the model's weights; its state_dict keys are unchanged
    assert list(compiled.state_dict()) == list(model.state_dict())


def test_the_flat_batch_loss_equals_the_eager_loss(setup):
    """What a CUDA graph captures: the loss as a function of the batch's flat tensors."""
    model, graphs = setup
    model = copy.deepcopy(model).train()
    batch = graphs.batch(torch.arange(12))
    tensors, spec = accel.flatten_batch(batch)
    rebuilt = accel.unflatten_batch(tensors, spec)
    for name in ("x", "node_mask", "labels", "edge_index", "edge_mask", "edge_attr"):
        assert getattr(rebuilt, name).keys() == getattr(batch, name).keys()
    assert torch.equal(rebuilt.index, batch.index) and torch.equal(rebuilt.time, batch.time)

    want = model.loss(batch, model(batch))[0]
    want.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    got = accel.FlatLoss(model, spec)(*tensors)
    got.backward()
    torch.testing.assert_close(got, want)
    for name, g in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, g, msg=name)


def test_an_epoch_has_at_most_two_batch_signatures(setup):
    """One graph is captured per signature: the chunking gives two sizes at most."""
    _, graphs = setup
    for n, size in [(100, 32), (40, 16), (64, 64), (7, 3), (1000, 64), (5, 64)]:
        sizes = accel.batch_sizes(n, size)
        assert 1 <= len(sizes) <= 2, (n, size, sizes)
    assert accel.batch_sizes(100, 32) == [34, 32]
    assert accel.batch_sizes(64, 32) == [32]
    same = [accel.flatten_batch(graphs.batch(torch.arange(i, i + 8)))[1] for i in (0, 9)]
    other = accel.flatten_batch(graphs.batch(torch.arange(5)))[1]
    assert same[0] == same[1] != other  # padded to the cohort's layout: only B differs


def test_cuda_graphs_are_refused_off_cuda_and_under_distributed():
    cpu = torch.device("cpu")
    accel.check_accel(True, False, cpu, distributed=True)  # compile works anywhere
    with pytest.raises(GraphMedError, match=r"train.cuda_graphs needs a CUDA device.*=false"):
        accel.check_accel(False, True, cpu, distributed=False)
    with pytest.raises(GraphMedError, match=r"does not work with --distributed"):
        accel.check_accel(False, True, torch.device("cuda"), distributed=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.compile=true", "train.cuda_graphs=true"], r"'train.cuda_graphs' cannot be"),
        (["train.cuda_graphs=true", "train.precision=fp16"], r"'train.precision' fp16"),
        (["train.compile_backend=inductr"], r"train.compile_backend"),
        (["train.compile=maybe"], r"train.compile"),
    ],
)
def test_bad_accel_options_are_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(None, overrides)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_training_steps_equal_eager_on_cuda(setup):
    model, graphs = setup
    graphs = graphs.to("cuda")
    eager = copy.deepcopy(model).cuda().train()
    graphed = copy.deepcopy(model).cuda().train()
    step = accel.GraphedLoss(graphed)

    def run(m, loss_of):
        opt = make_adamw(m.parameters(), lr=1e-2)
        out = []
        for i in range(4):
            idx = torch.arange(i * 8, i * 8 + (16 if i < 3 else 10), device="cuda") % len(graphs)
            loss = loss_of(graphs.batch(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out.append(float(loss))
        return out

    want = run(eager, lambda b: eager.loss(b, eager(b))[0])
    got = run(graphed, step)
    assert len(step.graphs) == 2  # batches of 16 and of 10
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=1e-4)
    for a, b in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)


def test_the_trainer_compiles_its_step_when_asked(monkeypatch):
    """train.compile through the real Trainer: the fit equals the eager fit (aot_eager)."""
    from graphmed.train.fit import fit_fold_model

    calls, real = [], accel.compile_forward
    monkeypatch.setattr(accel, "compile_forward", lambda m, b: calls.append(b) or real(m, b))
    cohort = graphmed.make_synthetic_cohort(30, bag_size=(2, 6), censoring=0.3, seed=2)
    fits = []
    for extra in ([], ["train.compile=true", "train.compile_backend=aot_eager"]):
        config = load_experiment(
            None,
            DETERMINISTIC
            + ["model.linear_path=false", "train.epochs=2", "train.batch_size=24"]
            + ["train.progress=false", "train.device=cpu", *extra],
        )
        fits.append(fit_fold_model(cohort, config))
    eager, compiled = fits
    assert calls == ["aot_eager"]  # once, for the compiled fit only
    for a, b in zip(eager.history.history, compiled.history.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
