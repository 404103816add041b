from __future__ import annotations

import optuna
import pytest

from nas.pruning import ReportBoard, make_pruner


def test_board_hands_each_report_to_the_driver_once_and_each_verdict_back_once():
    board = ReportBoard()
    board.post(7, 100, 0.31)
    board.post(9, 100, 0.12)
    assert board.take() == [(7, 100, 0.31), (9, 100, 0.12)] and board.take() == []
    assert board.verdict(7, 100) is None  # not answered yet
    board.decide(7, 100, False)
    board.decide(9, 100, True)
    assert board.verdict(9, 100) is True and board.verdict(9, 100) is None
    assert board.verdict(7, 100) is False


def test_median_pruner_waits_for_five_trials_then_stops_the_laggards():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median"))
    for quality in (0.2, 0.4, 0.6, 0.8, 0.9):
        trial = study.ask()
        for step in (100, 200, 300):
            trial.report(quality * step / 300, step)
            assert not trial.should_prune()  # fewer than 5 completed trials: nothing is stopped
        study.tell(trial, quality)
    behind, ahead = study.ask(), study.ask()
    behind.report(0.1, 100)
    ahead.report(0.25, 100)  # median at step 100 of 0.2/0.4/0.6/0.8/0.9 thirds is 0.2
    assert behind.should_prune() and not ahead.should_prune()
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="unknown pruner 'asha'"):
        make_pruner("asha")
