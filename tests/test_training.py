import copy
import time

import pytest
import torch
from torch import nn

from helpers.data import load_digits, make_loader
from helpers.models import TinyResNet
from helpers.modify import freeze, set_batchnorm_eval
from helpers.report import measured
from helpers.seeding import seed_everything
from helpers.training import History, evaluate, fit, frozen_batchnorm, one_cycle, train_mode


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


def test_progress_summary_prints_the_accuracy_as_a_measurement(capsys):
    _, _, history = _train(epochs=1, desc="summary", progress=True)
    out = capsys.readouterr().out
    assert out == f"summary: epoch 1/1 done, validation accuracy {measured(history.val_acc[-1])}\n"
    assert "≈" in out


def _tiny_run(scheduler_step, epochs=3):
    seed_everything(0)
    data = load_digits(2)
    model = TinyResNet(2, depth=1, width=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = make_loader(data.train, 64, shuffle=True)
    steps = len(loader) if scheduler_step == "batch" else 1
    sched = one_cycle(opt, max_lr=1e-2, epochs=epochs, steps_per_epoch=steps)
    lrs = []

    def record(epoch, history):
        lrs.append(opt.param_groups[0]["lr"])

    history = fit(model, data, opt, epochs=epochs, scheduler=sched, scheduler_step=scheduler_step,
                  train_loader=loader, callback=record, progress=False)
    return history, sched, lrs, len(loader)


def test_one_cycle_steps_per_batch_and_history_keeps_the_lr_at_each_epoch_start():
    history, sched, lrs, per_epoch = _tiny_run("batch")
    assert sched.last_epoch == 3 * per_epoch == sched.total_steps  # every planned step taken
    # the lr at the start of each epoch is the schedule's value at that batch
    reference = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-2)
    ref = one_cycle(reference, max_lr=1e-2, epochs=3, steps_per_epoch=per_epoch)
    planned = []
    for _ in range(3 * per_epoch):
        planned.append(reference.param_groups[0]["lr"])
        reference.step()
        ref.step()
    assert history.lr == [planned[e * per_epoch] for e in range(3)]
    assert lrs[:-1] == history.lr[1:]  # the lr after an epoch is where the next one starts
    # the last epoch starts at a useful learning rate, not the schedule's floor
    assert history.lr[-1] > 1e-2 / 10
    # stepped per epoch, a one-cycle planned per epoch starts its last epoch near zero
    per_epoch_history, _, _, _ = _tiny_run("epoch", epochs=3)
    assert per_epoch_history.lr[-1] < 1e-2 / 1000


def test_bad_schedule_arguments_are_clear():
    data = load_digits(2)
    model = TinyResNet(2, depth=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler_step must be 'epoch' or 'batch', got 'step'"):
        fit(model, data, opt, epochs=1, scheduler_step="step", progress=False)
    with pytest.raises(ValueError, match=r"steps_per_epoch must be a positive integer, got 0 "
                                         r"\(steps_per_epoch is len\(train_loader\)\)"):
        one_cycle(opt, max_lr=0.1, epochs=2, steps_per_epoch=0)


def test_resume_with_per_batch_schedule_is_bit_exact():
    def run(stop_after=None, resume_from=None):
        seed_everything(0)
        data = load_digits(3)
        model = TinyResNet(3, depth=1, width=8, dropout=0.2)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loader = make_loader(data.train, 64, seed=0)
        sched = one_cycle(opt, max_lr=1e-2, epochs=3, steps_per_epoch=len(loader))
        history, start = History(), 0
        if resume_from is not None:
            model.load_state_dict(resume_from["model"])
            opt.load_state_dict(resume_from["optimizer"])
            sched.load_state_dict(resume_from["scheduler"])
            torch.set_rng_state(resume_from["rng"])
            history, start = History.from_dict(resume_from["history"]), resume_from["epoch"] + 1
        saved = {}

        def callback(epoch, hist):
            saved.update(model=copy.deepcopy(model.state_dict()), optimizer=copy.deepcopy(opt.state_dict()),
                         scheduler=sched.state_dict(), rng=torch.get_rng_state(), epoch=epoch,
                         history=copy.deepcopy(hist.to_dict()))
            return epoch == stop_after

        history = fit(model, data, opt, epochs=3, scheduler=sched, scheduler_step="batch",
                      train_loader=loader, start_epoch=start, history=history, callback=callback,
                      progress=False)
        return model, history, saved

    straight, straight_history, _ = run()
    _, _, checkpoint = run(stop_after=0)
    resumed, resumed_history, _ = run(resume_from=checkpoint)
    assert resumed_history == straight_history
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def _bn_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 2))


def _stats(bn):
    return bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)


@pytest.mark.parametrize("how", ["requires_grad", "set_batchnorm_eval"])
def test_fit_keeps_frozen_batchnorm_frozen(how):
    seed_everything(0)
    data = load_digits(2)
    net = _bn_net()
    bn = net[1]
    if how == "requires_grad":
        freeze(bn)
    else:
        net.train()
        set_batchnorm_eval(net)
    before = _stats(bn)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    fit(net, data, opt, epochs=2, progress=False)
    (mean0, var0, count0), (mean1, var1, count1) = before, _stats(bn)
    assert torch.equal(mean0, mean1) and torch.equal(var0, var1) and count0 == count1
    assert not bn.training and net.training and net[0].training
    assert frozen_batchnorm(net) == [bn]


def test_fit_still_updates_trainable_batchnorm_even_after_model_eval():
    seed_everything(0)
    data = load_digits(2)
    net = _bn_net()
    net.eval()  # the whole model in eval mode is no sign of a frozen layer
    assert frozen_batchnorm(net) == []
    before = _stats(net[1])
    fit(net, data, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False)
    assert net[1].training
    assert int(net[1].num_batches_tracked) == before[2] + len(make_loader(data.train, 64))
    assert not torch.equal(net[1].running_mean, before[0])


def test_frozen_batchnorm2d_needs_nothing_and_train_mode_says_what_it_kept():
    from torchvision.ops import FrozenBatchNorm2d

    net = nn.Sequential(nn.Conv2d(1, 4, 3), FrozenBatchNorm2d(4), nn.BatchNorm1d(3))
    freeze(net[2])
    assert train_mode(net) == [net[2]]
    assert net.training and net[1].training and not net[2].training


def test_evaluate_restores_each_layer_mode():
    net = _bn_net()
    net.train()
    set_batchnorm_eval(net)
    evaluate(net, load_digits(2).val)
    assert net.training and not net[1].training
