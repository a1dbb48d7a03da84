"""plots.py: train and test accuracy, and zero flip rates shown (not dropped) on the log axis."""

from bitswarm.train.plots import flip_rate_series, plot_metrics


def _metrics(rates):
    return [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_accuracy": 0.5 + 0.1 * e,
             "test_accuracy": 0.4 + 0.1 * e, "flip_rate": list(r)} for e, r in enumerate(rates)]


def test_zero_flip_epochs_are_drawn_at_the_floor():
    log, floor, layers = flip_rate_series(_metrics([(0.0, 1e-3), (1e-4, 0.0), (0.0, 2e-4)]))
    assert log and floor == 1e-5
    nan = float("nan")
    assert [(x, [str(v) for v in y], z) for x, y, z in layers] == [
        ([1, 2, 3], [str(nan), "0.0001", str(nan)], [1, 3]),
        ([1, 2, 3], ["0.001", str(nan), "0.0002"], [2])]


def test_all_zero_rates_use_a_linear_axis():
    log, floor, layers = flip_rate_series(_metrics([(0.0,), (0.0,)]))
    assert not log and floor == 0.0 and layers == [([1, 2], [0.0, 0.0], [])]


def test_plots_written_and_readable(tmp_path):
    import matplotlib.image as mpimg

    paths = plot_metrics(_metrics([(0.0, 1e-3), (1e-4, 0.0)]), tmp_path, "golden digits")
    assert sorted(p.name for p in paths) == ["accuracy.png", "flip_rate.png", "loss.png"]
    for p in paths:
        assert mpimg.imread(p).shape[0] > 300
