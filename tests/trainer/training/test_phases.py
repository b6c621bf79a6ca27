"""Phases share one step axis."""

from trainer.training.phases import plan_phases, steps_per_epoch


def test_phases_follow_each_other_on_one_step_axis():
    per_epoch = steps_per_epoch(train_records=100, global_batch=32)
    assert per_epoch == 3 and steps_per_epoch(100, 32, wanted=7) == 7
    head, fine_tune = plan_phases([("head", 2, 1e-3, "none"), ("fine_tune", 3, 1e-5,
                                                               "conv5_3")], per_epoch)
    assert (head.name, head.trainable_from, head.first_step, head.steps) == ("head", "none",
                                                                             0, 6)
    assert (fine_tune.trainable_from, fine_tune.first_epoch, fine_tune.first_step) == (
        "conv5_3", 2, 6)
    only_fine_tune = plan_phases([("head", 0, 1e-3, "none"), ("fine_tune", 3, 1e-5, "all")], 5)
    assert [p.name for p in only_fine_tune] == ["fine_tune"]
