import matplotlib

matplotlib.use("Agg")

from helpers.data import load_digits  # noqa: E402
from helpers.models import TinyResNet  # noqa: E402
from helpers.plots import plot_history, plot_predictions, predict  # noqa: E402
from helpers.training import History  # noqa: E402


def test_plot_history_draws_one_line_per_run_in_each_panel():
    h = History(epoch=[0, 1], train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[0.9, 0.6],
                val_acc=[0.6, 0.9], lr=[0.1, 0.1])
    fig = plot_history(h, h, labels=["a", "b"], title="t")
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 2
    assert list(acc_ax.lines[0].get_ydata()) == [0.6, 0.9]


def test_plot_predictions_titles_are_the_predictions():
    data = load_digits(3)
    model = TinyResNet(3, depth=1, width=8)
    fig = plot_predictions(model, data.test, data.class_names, n=8, columns=4)
    pred = predict(model, data.test.X[:8]).tolist()
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split()[0] for t in titles] == [data.class_names[p] for p in pred]
    assert model.training  # predict() put the model back in training mode


def test_the_curves_speak_the_learners_language_with_every_glyph_drawn(monkeypatch):
    import io
    import warnings

    h = History(epoch=[0, 1], train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[0.9, 0.6],
                val_acc=[0.6, 0.9], lr=[0.1, 0.1])
    english = plot_history(h)
    assert english.axes[0].get_xlabel() == "epoch"
    assert english.axes[0].get_legend().get_texts()[0].get_text() == "run 1 (train)"
    monkeypatch.setenv("COURSE_LANG", "zh")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing from font(s)"
        fig = plot_history(h, title="两次训练")
        fig.savefig(io.BytesIO(), format="png")
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_xlabel(), loss_ax.get_title(), acc_ax.get_title()) == ("轮", "训练损失", "验证准确率")
    assert loss_ax.get_legend().get_texts()[0].get_text() == "第 1 次运行（训练）"
