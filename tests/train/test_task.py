import pytest
import torch
from torch import nn

from nnshrink.train.task import Task, loss_criterion, task_from_references


def test_classification_is_the_default():
    task = Task()
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    data = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))]
    result = task.evaluate(model, data)
    assert result["top1"] == 0.5 and task.headline == "top1" and task.higher_is_better
    assert task.drop({"top1": 0.9}, {"top1": 0.85}) == pytest.approx(0.05)


def test_metric_reference_declares_headline_and_direction():
    from tests.usercode import make_data, make_model

    task = task_from_references("tests.usercode:error_rate", "torch.nn:CrossEntropyLoss")
    _, test = make_data()
    result = task.evaluate(make_model(), test)
    assert task.headline == "error" and not task.higher_is_better and 0 <= result["error"] <= 1
    assert task.drop({"error": 0.1}, {"error": 0.15}) == pytest.approx(0.05)  # worse is positive
    loss, out = task.criterion(make_model(), torch.zeros(2, 1, 12, 12), torch.tensor([0, 1]))
    assert out.shape == (2, 3) and loss.dim() == 0


def test_missing_headline_is_one_clear_error():
    task = Task(metric=lambda model, loader: {"mse": 1.0}, headline="mae")
    with pytest.raises(ValueError, match="without its headline key 'mae'"):
        task.evaluate(nn.Identity(), [])


def test_loss_criterion_wraps_output_target_losses():
    value, out = loss_criterion(nn.MSELoss())(nn.Identity(), torch.ones(3), torch.zeros(3))
    assert float(value) == 1.0 and torch.equal(out, torch.ones(3))
