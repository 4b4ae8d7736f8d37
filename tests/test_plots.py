"""The figures say what the tables say: the same best run, the target, every method's curve in view."""
import numpy as np
import pandas as pd

from lhopt_cli.support import plots


def _capture(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def _curve(run_id, lr, schedule, losses, method="baseline"):
    return pd.DataFrame({"run_id": run_id, "lr0": lr, "schedule": schedule, "seed": 0, "method": method,
                         "step": np.arange(len(losses)) * 10, "valid_loss": losses})


def test_curves_name_the_paper_grids_best_mark_the_target_and_keep_a_stalled_run_in_view(monkeypatch, tmp_path):
    figures = _capture(monkeypatch)
    steps = 11
    grid = pd.concat([
        _curve("a", 1e-3, "cosine", np.linspace(2.0, 0.5, steps)),
        _curve("b", 1e-2, "constant", np.linspace(2.0, 0.8, steps)),
        _curve("x", 1e-1, "linear", np.linspace(2.0, 0.3, steps)),  # an extended lr: better, but not the paper grid's
    ])
    ours = pd.concat([_curve("p", np.nan, "lhopt", np.linspace(2.0, 0.45, steps), method="lhopt"),
                      _curve("s", np.nan, "sf", np.full(steps, 9.0), method="stalled")])
    plots.learning_curve_plot("t", grid, ours, tmp_path / "c.png", paper_lrs=[1e-3, 1e-2])
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best baseline (lr 0.001, cosine)" in labels  # the table's best of the paper grid, not lr 0.1
    target = next(float(label.rsplit(" ", 1)[1]) for label in labels if label.startswith("target: the envelope's final"))
    assert ax.get_ylim()[1] >= 9.0  # the stalled run is not cut off at the starting loss
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    # lhopt reaches the target once; the stalled run never
    assert len(dots) == 1 and np.isclose(dots[0].get_ydata()[0], target, rtol=1e-3)


def test_the_lr_panel_shows_the_lr_each_step_used_under_the_policys_decay(monkeypatch, tmp_path):
    figures = _capture(monkeypatch)
    log = pd.DataFrame({"step": [0, 50], "lr": [1e-3, 1e-2], "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                        "weight_decay": 0.01, "clip": 0.8, "restart": ["none", "save"]})
    log.to_csv(tmp_path / "decisions_t_s0.csv", index=False)
    plots.hyperparameter_plot("t", [tmp_path / "decisions_t_s0.csv"], tmp_path / "h.png", "linear", 100)
    lr_panel = figures[0].axes[0]
    used = [line for line in lr_panel.get_lines() if line.get_linestyle() == "--"]
    assert len(used) == 1
    values = used[0].get_ydata()
    assert values[0] == 1e-3 and np.isclose(values[50], 1e-2 * 0.5) and values[-1] < 2e-4  # x (1 - step / 100)
    assert "saved a checkpoint" in figures[0]._suptitle.get_text()


def test_the_curves_figure_draws_every_comparator_in_its_own_colour(monkeypatch, tmp_path):
    from lhopt_cli.commands.method_runs import EXTRA_BASELINES

    figures = _capture(monkeypatch)
    steps = 11
    grid = _curve("a", 1e-3, "cosine", np.linspace(2.0, 0.5, steps))
    methods = ["lhopt", *EXTRA_BASELINES]
    ours = pd.concat([_curve(m, np.nan, m, np.linspace(2.0, 0.4 + 0.05 * k, steps), method=m)
                      for k, m in enumerate(methods)])
    plots.learning_curve_plot("t", grid, ours, tmp_path / "c.png")
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(methods) <= set(labels)
    colours = {line.get_label(): line.get_color() for line in ax.get_lines() if line.get_label() in methods}
    assert len(set(colours.values())) == len(methods)


def test_a_blow_up_leaves_the_top_of_the_curves_figure_instead_of_flattening_the_others(monkeypatch, tmp_path):
    figures = _capture(monkeypatch)
    steps = 11
    grid = _curve("a", 1e-3, "cosine", np.linspace(2.0, 0.5, steps))
    spike = np.linspace(2.0, 0.6, steps)
    spike[2] = 400.0  # a range test's sweep blowing up, then recovering
    ours = pd.concat([_curve("p", np.nan, "lhopt", np.linspace(2.0, 0.45, steps), method="lhopt"),
                      _curve("r", np.nan, "range_test", spike, method="range_test")])
    plots.learning_curve_plot("t", grid, ours, tmp_path / "c.png")
    low, high = figures[0].axes[0].get_ylim()
    assert high <= plots.VIEW_ABOVE_START * 2.0 * 1.02 and low < 1.0  # the other curves keep the room


def test_the_scaling_figure_draws_each_frontier_over_its_points_and_reads_loss_as_plain_numbers():
    import numpy as np
    import pandas as pd

    from lhopt_cli.support.plots import scaling_curves_figure

    rows = []
    for method, sizes in (("baseline", (1e4, 1e5, 1e6)), ("replay", (1e4, 2e4))):
        for n in sizes:
            for c in np.logspace(np.log10(n * 1e3), np.log10(n * 1e5), 20):
                rows.append({"method": method, "params": n, "compute": c, "run_id": f"{method}-{n}",
                             "loss": 1.5 + 3.0 * (1e6 / c) ** 0.1})
    data = pd.DataFrame(rows)
    fig = scaling_curves_figure(data, {"baseline": (0.1, np.log(1e6)), "replay": (0.3, np.log(1e6))})
    ax = fig.axes[0]
    replay_line = next(line for line in ax.get_lines() if line.get_label().startswith("frontier replay"))
    spanned = data[data.method == "replay"].compute
    assert spanned.min() * 0.999 <= replay_line.get_xdata().min() and replay_line.get_xdata().max() <= spanned.max() * 1.001
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert labels and not any("10^" in t or "times" in t or "\\mathdefault" in t for t in labels), labels
