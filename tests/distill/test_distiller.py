import copy

import pytest
import torch
from torch import nn

from nnshrink.distill import Distiller, auto_feature_pairs, distill
from nnshrink.distill.losses import at_loss, kd_loss
from nnshrink.models import create
from nnshrink.train import evaluate, fit


@pytest.fixture
def pair(tiny_convnet):
    teacher = tiny_convnet
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        nn.init.normal_(p, 0, 0.1)
    return teacher, student


def _batches(n=3, size=8):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, 1, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


@pytest.mark.parametrize("method", ["kd", "fitnets", "at", "sp", "rkd"])
def test_gradients_reach_only_the_student(pair, method):
    teacher, student = pair
    teacher.train()
    x, y = _batches(1)[0]
    features = None if method != "rkd" else {"pool": "pool"}
    d = Distiller(teacher, student, method, features, example_inputs=x[:2])
    loss, logits = d.criterion(d, x, y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.fc.parameters())
    assert logits.shape == (8, 10)
    assert not teacher.training  # frozen in eval mode
    d.train()
    assert d.student.training and not d.teacher.training


def test_kd_criterion_equals_the_pure_loss(pair):
    teacher, student = pair
    x, y = _batches(1)[0]
    d = Distiller(teacher, student, "kd", temperature=5.0, alpha=0.7)
    teacher.eval(), student.eval()
    expected = kd_loss(student(x), teacher(x).detach(), y, temperature=5.0, alpha=0.7)
    torch.testing.assert_close(d.loss(x, y), expected)
    # no labels: the soft term alone
    torch.testing.assert_close(d.loss(x), kd_loss(student(x), teacher(x), temperature=5.0))


def test_at_criterion_is_ce_plus_attention_terms(pair):
    teacher, student = pair
    teacher.eval(), student.eval()
    x, y = _batches(1)[0]
    d = Distiller(teacher, student, "at", {"bn1": "bn1", "bn2": "bn2"}, example_inputs=x[:2])
    loss = d.loss(x, y)
    torch.testing.assert_close(d.last_terms["ce"], nn.functional.cross_entropy(student(x), y))
    at = sum(
        at_loss(getattr(student, n)(inp), getattr(teacher, n)(inp_t))
        for n, inp, inp_t in [
            ("bn1", student.conv1(x), teacher.conv1(x)),
            (
                "bn2",
                student.conv2(torch.relu(student.bn1(student.conv1(x)))),
                teacher.conv2(torch.relu(teacher.bn1(teacher.conv1(x)))),
            ),
        ]
    )
    torch.testing.assert_close(loss, d.last_terms["ce"] + at)


def test_state_dict_and_parameters_exclude_the_teacher(pair):
    teacher, student = pair
    d = Distiller(
        teacher, student, "fitnets", {"conv2": "conv1"}, example_inputs=torch.randn(2, 1, 8, 8)
    )
    names = set(d.state_dict())
    assert all(n.startswith(("student.", "regressors.")) for n in names)
    assert isinstance(d.regressors["conv2"], nn.Conv2d)  # 16 -> 8 channel 1x1 regressor
    assert d.regressors["conv2"].weight.shape == (8, 16, 1, 1)
    ids = {id(p) for p in d.parameters()}
    assert not ids & {id(p) for p in teacher.parameters()}


def test_auto_pairs_on_cifar_resnets():
    x = torch.randn(2, 1, 16, 16)
    pairs = auto_feature_pairs(
        create("resnet32", in_channels=1), create("resnet20", in_channels=1), x
    )
    assert pairs == {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"}


def test_bad_arguments(pair):
    teacher, student = pair
    with pytest.raises(ValueError, match="choose from"):
        Distiller(teacher, student, "dark-knowledge")
    with pytest.raises(ValueError, match="feature pairs"):
        Distiller(teacher, student, "at")
    with pytest.raises(ValueError, match="different modules"):
        Distiller(teacher, teacher)
    with pytest.raises(ValueError, match=r"same \(H, W\)"):
        Distiller(teacher, student, "at", {"conv1": "pool"}, example_inputs=torch.randn(2, 1, 8, 8))


def test_fit_with_distiller_criterion_trains_the_student(pair):
    teacher, student = pair
    batches = _batches()
    d = Distiller(teacher, student, "kd", alpha=1.0)
    before = float(d.loss(batches[0][0]).detach())
    fit(d, batches, epochs=3, lr=0.05, criterion=d.criterion, progress=False)
    after = float(d.loss(batches[0][0]).detach())
    assert after < before
    assert set(evaluate(d, batches)) >= {"top1", "loss"}
    assert all(p.grad is None for p in teacher.parameters())


def test_stagewise_fitnets_trains_the_hint_then_kd(pair):
    teacher, student = pair
    batches = _batches()
    guided_before = student.conv1.weight.detach().clone()
    fc_before = student.fc.weight.detach().clone()
    d = Distiller(
        teacher, copy.deepcopy(student), "fitnets", {"conv1": "conv1"}, example_inputs=batches[0][0]
    )
    d.stage = "hint"
    loss, _ = d.criterion(d, *batches[0])
    loss.backward()
    assert set(d.last_terms) == {"fitnets"}
    # stage 1 trains the layers up to the guided layer (and the regressor) only
    assert d.student.conv1.weight.grad is not None and d.student.fc.weight.grad is None
    assert d.regressors["conv1"].weight.grad is not None
    result = distill(
        teacher,
        student,
        batches,
        method="fitnets",
        features={"conv1": "conv1"},
        epochs=1,
        hint_epochs=1,
        progress=False,
        lr=0.01,
    )
    assert result.hint_history is not None and len(result.hint_history.epochs) == 1
    assert len(result.history.epochs) == 1
    assert not torch.equal(student.conv1.weight, guided_before)
    assert not torch.equal(student.fc.weight, fc_before)
    assert result.distiller.stage == "joint"
    assert float(loss.detach()) > 0


@pytest.mark.parametrize("method", ["rkd", "sp"])
def test_relation_methods_on_mlps_relate_the_last_layers(method):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 10))
    x = torch.randn(6, 1, 4, 4)
    d = Distiller(teacher, student, method, example_inputs=x)
    assert d.features == {"3": "3"}  # no spatial maps: the outputs, which any shapes pair
    loss = d.loss(x, torch.randint(0, 10, (6,)))
    loss.backward()
    assert torch.isfinite(loss) and student[1].weight.grad is not None
