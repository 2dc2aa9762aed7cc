"""Table-2-style evaluation: interval and step arithmetic, the world's verdict, and the evaluator
on short real episodes (expert and in-process modes)."""
import json
import os

import pytest

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.task.evaluation import (PAPER_TABLE2, EpisodeOutcome, counted_steps, planner_end_reason,
                                                   summarise, table_markdown, wilson_interval, world_verdict)
from sim2real_vla_ros.tools import evaluate


def test_wilson_interval_matches_known_values_and_stays_in_0_1():
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(46, 50)  # the paper's single-arm pour
    assert 0.80 < low < 0.82 and 0.96 < high < 0.97
    assert wilson_interval(0, 50)[0] == 0.0 and 0.0 < wilson_interval(0, 50)[1] < 0.08
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] > 0.92


def test_failures_count_the_step_limit_and_successes_their_own_steps():
    ok = EpisodeOutcome("pour_water_single", 0, True, 120.0)
    slow = EpisodeOutcome("pour_water_single", 1, True, 260.0)
    failed = EpisodeOutcome("pour_water_single", 2, False, 40.0, model_claimed_done=True, detail="lift")
    assert counted_steps(ok, 200) == 120.0 and counted_steps(slow, 200) == 200.0 and counted_steps(failed, 200) == 200
    row = summarise("pour_water_single", [ok, slow, failed, EpisodeOutcome("other", 0, True, 1.0)], 200)
    assert (row.episodes, row.successes, row.mean_steps) == (3, 2, round((120 + 200 + 200) / 3, 2))
    assert (row.claimed_done, row.claimed_but_failed) == (1, 1) and row.failures == {"lift": 1}
    assert row.paper["sim2real_vla"] == (46, 50)
    table = table_markdown("expert", [row])
    assert "| pour_water_single (200) | 2/3 |" in table[2] and "46/50" in table[2]


def test_every_task_has_the_papers_numbers():
    assert set(PAPER_TABLE2) == set(tasks.load_tasks())


def test_the_world_decides_and_a_model_claim_that_disagrees_is_flagged():
    assert world_verdict(False, "succeeded")["agree"] is False
    assert "DISAGREEMENT" in world_verdict(False, "succeeded")["line"]
    assert world_verdict(True, "succeeded") == {"task_completed": True, "planner_claimed_done": True, "agree": True,
                                               "line": world_verdict(True, "succeeded")["line"]}
    assert world_verdict(True, "running")["agree"] is False  # the world is done, the model did not notice
    assert world_verdict(None, "succeeded")["task_completed"] is None
    assert planner_end_reason("succeeded").startswith("planner claimed done")
    assert "failed" in planner_end_reason("failed")


def test_the_evaluator_runs_expert_episodes_and_writes_its_table_and_page(tmp_path):
    args = evaluate.parse_args(["--task", "table_rearrangement", "--episodes", "2", "--mode", "expert",
                                "--workers", "1", "--out", str(tmp_path)])
    lines = []
    result = evaluate.evaluate(args, progress=lines.append)
    assert len(lines) == 2 and all("table_rearrangement seed" in line for line in lines)
    row = result["tasks"]["table_rearrangement"]
    assert row["episodes"] == 2 and row["successes"] == sum(e["success"] for e in result["episodes"])
    with open(tmp_path / "evaluation.json", encoding="utf-8") as stream:
        assert json.load(stream)["tasks"]["table_rearrangement"]["step_limit"] == 250
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<table>" in page and "table_rearrangement (250)" in page and "44/50" in page
    assert os.path.exists(tmp_path / "evaluation.md")


@pytest.mark.integration
def test_the_evaluator_runs_one_in_process_episode_and_judges_it_by_the_simulator(tmp_path):
    args = evaluate.parse_args(["--task", "pour_water_single", "--episodes", "1", "--mode", "in-process",
                                "--workers", "1", "--out", str(tmp_path)])
    result = evaluate.evaluate(args, progress=lambda line: None)
    episode, row = result["episodes"][0], result["tasks"]["pour_water_single"]
    assert episode["model_claimed_done"] in (True, False) and episode["success"] in (True, False)
    # Whatever the planner claims, the world decides; a claim the simulator contradicts is counted.
    assert row["successes"] == int(episode["success"])
    assert row["claimed_but_failed"] == int(episode["model_claimed_done"] and not episode["success"])
    assert row["mean_steps"] == (min(episode["steps"], 200.0) if episode["success"] else 200.0)


def test_unknown_tasks_and_bad_counts_are_refused():
    with pytest.raises(tasks.UnknownTaskError):
        evaluate.parse_args(["--task", "make_coffee"])
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--episodes", "0"])


@pytest.mark.skipif(__import__("sim2real_vla_ros.tools.run_page", fromlist=["x"]).chromium_binary() is None,
                    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_evaluation_page_loads_in_a_real_browser(tmp_path):
    from sim2real_vla_ros.tools import run_page

    args = evaluate.parse_args(["--task", "table_rearrangement", "--episodes", "1", "--mode", "expert",
                                "--workers", "1", "--out", str(tmp_path)])
    evaluate.evaluate(args, progress=lambda line: None)
    checked = run_page.check_in_chromium(str(tmp_path / "report.html"), str(tmp_path / "page.png"))
    assert checked["exit_codes"] == (0, 0) and not checked["errors"], checked
    assert checked["non_white_fraction"] > 0.01 and checked["dom_chars"] > 1000, checked
