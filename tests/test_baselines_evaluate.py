"""The evaluation command: table rows, paper numbers beside ours, output files; random scores n/2."""

import csv

import pytest

from rl2_lightning.baselines.common import RandomPolicy
from functools import partial

from rl2_lightning.baselines.registry import baseline_policies
from rl2_lightning.envs import BernoulliBandit, TrialEnvFactory
from rl2_lightning.evaluate import main
from rl2_lightning.evaluation import evaluate
from rl2_lightning.evaluation.paper import PAPER_RESULTS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_policy_scores_half_of_n(tmp_path):
    n = 10
    rows = evaluate(
        TrialEnvFactory(partial(BernoulliBandit, num_arms=5), n),
        policies={"random": RandomPolicy(5), "rl2": lambda: RandomPolicy(5)},
        out_dir=tmp_path,
        baselines=False,
        verbose=False,
    )
    by_key = {r["key"]: r for r in rows}
    rand = by_key["random"]
    # E[p] = 1/2 per pull: the mean over 1000 tasks is n/2 up to sampling noise
    assert abs(rand["mean"] - n / 2) < 2 * rand["ci95"]
    assert rand["paper"] == PAPER_RESULTS["bandit_k5_n10"]["random"] == 5.0
    expected = "within" if abs(rand["mean"] - 5.0) <= rand["ci95"] else ("above" if rand["mean"] > 5.0 else "below")
    assert rand["vs_paper"] == expected
    # the paper's RL² scored 6.7: a random "RL²" is below it
    assert by_key["rl2"]["paper"] == 6.7 and by_key["rl2"]["vs_paper"] == "below"
    assert sum(r["best"] for r in rows) >= 1 and len(rand["per_episode"]) == n
    for ext in ("md", "csv", "png"):
        assert (tmp_path / f"bandit_k5_n10.{ext}").stat().st_size > 0
    with open(tmp_path / "bandit_k5_n10.csv") as f:
        assert [r["key"] for r in csv.DictReader(f)] == ["random", "rl2"]


def test_every_paper_column_has_a_baseline():
    bandit = baseline_policies({"family": "bandit", "num_arms": 5}, 10)
    tabular = baseline_policies({"family": "tabular", "num_states": 10, "num_actions": 5, "episode_steps": 10}, 10)
    assert set(PAPER_RESULTS["bandit_k5_n10"]) - {"rl2"} == set(bandit)
    assert set(PAPER_RESULTS["tabular_n10"]) - {"rl2"} <= set(tabular)
    assert {"psrl_bayes", "greedy_bayes"} <= set(tabular) and "random_bayes" not in tabular


def test_cli_tabular(tmp_path, capsys):
    rows = main(["--family", "tabular", "--episodes", "3", "--out", str(tmp_path)])
    by_key = {r["key"]: r for r in rows}
    # episodes of 10 steps with mean reward 1 per step: random earns about 30 in three episodes
    assert 28 < by_key["random"]["mean"] < 32
    # planners act at random in the first episode (nothing known yet), then exploit what they saw
    first = {k: r["per_episode"][0] for k, r in by_key.items()}
    assert abs(first["greedy_bayes"] - first["random"]) < 0.5
    assert by_key["greedy_bayes"]["mean"] > by_key["random"]["mean"] + 3
    assert "tabular_n3" in capsys.readouterr().out


def test_spread_replays_a_method_over_seeds_and_a_grid():
    """ε = 1 is the random policy (n/2 in expectation); greedier play scores higher; seeds change the run only."""
    from rl2_lightning.baselines.spread import heldout_scores

    scores = heldout_scores("bandit_k5_n10", "egreedy", "epsilon", [0.0, 1.0], [0, 1, 0])
    (g0, _), (g1, _), (g0_again, _) = scores[0.0]
    (r0, ci), _, _ = scores[1.0]
    assert abs(r0 - 5.0) <= ci + 0.05  # uniform play on the 1000 held-out tasks: about n * mean(p)
    assert g0 > r0 + 1.0
    assert g0 == g0_again and g0 != g1  # seed 0 twice is the same run; seed 1 another


def test_results_document_cells_on_a_hand_made_example():
    """docs/results.md's cells: ours ± CI (best in bold), the paper's number and the mark, by hand."""
    from rl2_lightning.baselines.results import _row_cells, _table

    rows = [
        {"key": "random", "mean": 5.04, "ci95": 0.11, "paper": 5.0, "vs_paper": "within"},
        {"key": "gittins", "mean": 6.90, "ci95": 0.12, "paper": 6.6, "vs_paper": "above"},
        {"key": "ucb1", "mean": 6.40, "ci95": 0.13, "paper": 6.7, "vs_paper": "below"},
    ]
    assert _row_cells(rows, ["random", "gittins", "ucb1", "ts"], True) == [
        "5.04 ± 0.11 (5.0) ✓", "**6.90 ± 0.12** (6.6) ▲", "6.40 ± 0.13 (6.7) ▼", "",
    ]
    assert _row_cells(rows, ["random", "rl2"], True)[1] == "–"  # RL² without a shipped policy: marked, not blank
    table = _table({"bandit_k5_n10": rows}, ["bandit_k5_n10", "bandit_k10_n10"], ["random", "gittins"],
                   ["Random", "Gittins"], ("n, k", lambda s: s))
    assert table.splitlines()[2].startswith("| bandit_k5_n10 | 5.04 ± 0.11 (5.0) ✓ | **6.90 ± 0.12** (6.6) ▲ | ")
    assert len(table.splitlines()) == 3  # a setting without results gets no row
