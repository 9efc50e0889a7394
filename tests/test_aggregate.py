"""aggregate: one rendering of the ranking for the terminal, ranking.md and report.html."""

from imgclf.aggregate import MULTI_SEED_NOTE, ranking_markdown, ranking_table, run_name

ROWS = [
    {"rank": 1, "recipe": "adam", "status": "done", "seeds": 2, "test_accuracy": 0.9, "test_accuracy_std": 0.01,
     "test_accuracy_ci_low": 0.8, "test_accuracy_ci_high": 1.0, "test_f1": 0.89, "test_f1_std": 0.02,
     "test_precision": 0.9, "test_recall": 0.88, "better_than": "sgd", "steps": 40.0, "seconds": 12.34,
     "cpu_seconds": 23.9, "seconds_to_target": 3.21, "steps_to_target": 10},
    {"rank": "", "recipe": "boom", "status": "diverged", "seeds": 2, "diverged_epoch": 1, "steps": 3.0,
     "seconds": 0.5, "seconds_to_target": "", "steps_to_target": ""},
]


def test_ranking_table_reads_rows_and_their_csv_text_alike():
    header, body = ranking_table(ROWS, seeds=2, target=0.8)
    assert header == ["rank", "recipe", "test accuracy", "95% CI", "F1", "better than", "time to target",
                      "steps to target", "steps", "wall time", "CPU time"]
    assert body[0] == ["1", "adam", "90.00% ± 1.00%", "80.00% to 100.00%", "0.890 ± 0.020", "sgd", "3.2 s", "10",
                       "40", "12.3 s", "23.9 s"]
    assert body[1][:3] == ["-", "boom", "diverged at epoch 1"] and body[1][6] == "never"
    as_text = [{k: str(v) for k, v in r.items()} for r in ROWS]  # summary.csv gives strings
    assert ranking_table(as_text, seeds=2, target="0.8") == (header, body)
    assert all(len(r) == len(header) for r in body)


def test_single_seed_table_markdown_and_run_names():
    header, body = ranking_table(ROWS[:1], seeds=1)
    assert header == ["rank", "recipe", "test accuracy", "precision", "recall", "F1", "steps", "wall time", "CPU time"]
    md = ranking_markdown(ROWS, seeds=2, target=0.8)
    assert md.splitlines()[0].startswith("| rank | recipe |") and MULTI_SEED_NOTE in md
    assert MULTI_SEED_NOTE not in ranking_markdown(ROWS[:1], seeds=1)
    assert run_name("adam", 3, 1) == "adam" and run_name("adam", 3, 2) == "adam-seed3"
