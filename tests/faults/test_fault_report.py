"""Issue 16 #11: the report explains its numbers, prints the console's numbers, shows defect labels only for the
datasets this package generated, and its plots name strategies and keeps as a person reads them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from fault_data import write_pool
from helpers import compose, load_recipe

from lightning_alchemist.config import data_config
from lightning_alchemist.data.sources import resolve_source
from lightning_alchemist.pipeline import sweep
from lightning_alchemist.pipeline.report import METRIC_MEANINGS, format_metric, summary_markdown
from lightning_alchemist.selection.plot import selection_title

METRICS = {"val_loss": 3.13372, "alignment": 0.0, "alignment_reference": 0.99609375, "alignment_ceiling": 0.01953125,
           "fid_judge": 41.25, "fid_judge_reference": 0.51, "fid_judge_ceiling": 12.9, "num_prompts": 256, "skipped": {}}


def fake_report(keep: float = 0.5) -> dict:
    return {"params": {"data": "shapes", "model": "star_tiny", "finetune": "full", "selection": "shift_gauss", "keep": keep,
                       "seed": 0, "rater_proxy": "star_tiny"},
            "metrics": dict(METRICS), "train": {"steps": 4, "samples_seen": 32, "seconds": 1.0, "log_dir": ""},
            "defects": {}, "stages": {}, "seconds": 2.0, "files": {}}


def test_every_metric_has_one_line_of_meaning_and_the_console_prints_the_files_digits(tmp_path, monkeypatch, capsys):
    page = summary_markdown(fake_report())
    for name in ("val_loss", "alignment", "alignment_reference", "alignment_ceiling", "fid_judge", "fid_judge_ceiling"):
        [row] = [line for line in page.splitlines() if line.startswith(f"| {name} |")]
        assert METRIC_MEANINGS[name] in row and format_metric(METRICS[name]) in row
        assert "\n" not in METRIC_MEANINGS[name]
    assert "perfect generator" in METRIC_MEANINGS["alignment_reference"] and "best this model" in METRIC_MEANINGS["alignment_ceiling"]

    import lightning_alchemist.pipeline.run as run

    monkeypatch.setattr(run, "run_pipeline", lambda cfg, run_dir: fake_report())
    load_recipe("train").train(compose("config", [f"out={tmp_path}"]))
    console = capsys.readouterr().out
    [line] = [ln for ln in console.splitlines() if ln.strip().startswith("val_loss ")]
    assert line.split()[1] == "3.1337" and "| val_loss | 3.1337 |" in page  # one name, one value: console = summary.md
    assert "val/loss" not in console


def test_a_labels_file_beside_a_users_shards_is_not_read_as_the_generated_datasets(tmp_path, monkeypatch, small_shapes):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = write_pool(tmp_path / "mine", num_shards=2, per_shard=4)
    pq.write_table(pa.table({"key": ["k00000"], "defect": ["blurry"]}), tmp_path / "mine" / "labels.parquet")
    assert resolve_source(data_config({"name": "wds", "urls": urls})).labels_path is None
    # the package's own generated shards keep their labels, also when read as plain shards
    generated = small_shapes.source
    assert generated.labels_path is not None
    again = resolve_source(data_config({"name": "wds", "urls": generated.pool_urls, "val_urls": generated.val_urls}))
    assert again.labels_path == generated.labels_path


def test_plot_titles_and_sweep_legends_read_as_values_not_dicts_or_rounded(tmp_path):
    title = selection_title({"strategy": "shift_gauss", "params": {"n": 0.2, "mu": 0.6, "sigma": 0.2}, "keep": 0.3})
    assert title == "shift_gauss (n=0.2, mu=0.6, sigma=0.2), keep=0.3" and "{" not in title
    for i, keep in enumerate((0.3, 0.5, 0.35)):
        run = tmp_path / str(i)
        (run / "report").mkdir(parents=True)
        (run / "logs").mkdir()
        (run / "logs" / "metrics.csv").write_text("step,val/loss\n1,3.2\n2,3.1\n")
        rep = fake_report(keep)
        rep["train"]["log_dir"] = str(run / "logs")
        (run / "report" / "metrics.json").write_text(json.dumps(rep))
    sweep.write_comparison(tmp_path)
    header, rows = sweep.comparison_rows(sweep.collect_reports(tmp_path))
    labels = sweep._plot(sweep.collect_reports(tmp_path), header, rows, tmp_path / "again.png")
    assert sorted(label.split()[1] for label in labels) == ["keep=0.3", "keep=0.35", "keep=0.5"]
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {k} |" in table for k in ("0.3", "0.35", "0.5"))


def test_infinite_ratings_select_and_plot_without_a_traceback(tmp_path):
    """Issue 16 #8: ratings holding ±inf ended the selection stage with numpy's 'range of [-inf, inf] is not finite'."""
    import numpy as np

    from lightning_alchemist.selection import Ratings, ShiftGaussian
    from lightning_alchemist.selection.recipe import select_and_write

    values = np.random.default_rng(0).standard_normal(100)
    values[[3, 7]] = np.inf, -np.inf
    paths = select_and_write(Ratings.from_arrays([f"k{i}" for i in range(100)], values), ShiftGaussian(), 0.5, 0, tmp_path)
    assert paths["histogram"].stat().st_size > 1000 and paths["selection"].is_file()


def test_rating_cost_sums_the_rating_stages_and_says_nothing_when_a_time_is_missing():
    from types import SimpleNamespace

    from lightning_alchemist.pipeline.report import cost_line, rating_cost

    stage = lambda seconds: SimpleNamespace(seconds=seconds)  # noqa: E731
    cost = rating_cost({"features": stage(50.0), "rater": stage(90.0), "ratings": stage(30.0), "train": stage(60.0)}, 60.0)
    # the encode stage serves the target too: not counted as rating
    assert cost == {"stages_s": {"rater": 90.0, "ratings": 30.0}, "rating_s": 120.0, "target_s": 60.0, "rating_over_target": 2.0}
    line = cost_line({"cost": cost})
    assert line.startswith("Rating cost: 120.0 s (rater 90.0 s, ratings 30.0 s) = 2.00x the target's training (60.0 s)")
    assert rating_cost({"selection": stage(1.0), "train": stage(60.0)}, 60.0) == {}  # random: nothing rated
    unmeasured = rating_cost({"rater": stage(None), "ratings": stage(30.0)}, 60.0)
    assert unmeasured["rating_s"] is None and unmeasured["rating_over_target"] is None and cost_line({"cost": unmeasured}) is None
    assert "Rating cost" not in summary_markdown(fake_report())  # a report without a cost block (older runs) still renders
