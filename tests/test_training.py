import time

import pytest
import torch

from helpers.data import load_digits
from helpers.models import TinyResNet
from helpers.seeding import seed_everything
from helpers.training import History, evaluate, fit


def _train(epochs=8, **kwargs):
    seed_everything(0)
    data = load_digits(10)
    model = TinyResNet(10, depth=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=epochs)
    kwargs.setdefault("progress", False)
    history = fit(model, data, optimizer, epochs=epochs, scheduler=scheduler, **kwargs)
    return data, model, history


def test_digits_pipeline_learns_for_real():
    start = time.perf_counter()
    data, model, history = _train()
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(model, data.test)
    print(f"10-class digits: test accuracy {test_acc:.3f} after {seconds:.1f} s of CPU training")
    assert test_acc >= 0.95
    assert history.train_loss[-1] < history.train_loss[0] / 5
    assert len(history) == 8 and history.epoch == list(range(8))


def test_evaluate_restores_training_mode_and_matches_manual_accuracy():
    data = load_digits(3)
    model = TinyResNet(3, depth=1, width=8)
    model.train()
    loss, acc = evaluate(model, data.val)
    assert model.training
    model.eval()
    with torch.no_grad():
        manual = (model(data.val.X).argmax(1) == data.val.y).float().mean().item()
    assert acc == pytest.approx(manual)
    assert loss > 0


def test_callback_runs_every_epoch_and_can_stop_early():
    calls = []

    def callback(epoch, history):
        calls.append((epoch, len(history)))
        return epoch == 2

    _, _, history = _train(epochs=6, callback=callback)
    assert calls == [(0, 1), (1, 2), (2, 3)]
    assert len(history) == 3


def test_resume_continues_the_history():
    seed_everything(0)
    data = load_digits(2)
    model = TinyResNet(2, depth=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = fit(model, data, opt, epochs=2, progress=False)
    both = fit(model, data, opt, epochs=4, start_epoch=2, history=History.from_dict(first.to_dict()),
               progress=False)
    assert both.epoch == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="smaller than start_epoch"):
        fit(model, data, opt, epochs=1, start_epoch=2, progress=False)


def test_progress_bar_mode_gives_the_same_result(capfd):
    _, model_quiet, quiet = _train(epochs=2)
    _, model_bar, bar = _train(epochs=2, desc="test", progress=True)
    assert quiet.val_acc == bar.val_acc
    assert "test: 100%" in capfd.readouterr().err  # tqdm writes its bar to stderr in a terminal


def test_empty_loader_is_a_clear_error():
    data = load_digits(2)
    model = TinyResNet(2, depth=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="yielded no batches"):
        fit(model, data, opt, epochs=1, train_loader=[], progress=False)


def test_history_round_trips_through_plain_types():
    h = History()
    h.append(epoch=0, train_loss=1.0, train_acc=0.5, val_loss=0.9, val_acc=0.6, lr=0.1)
    d = h.to_dict()
    assert all(type(v) is list for v in d.values())
    assert History.from_dict(d) == h
