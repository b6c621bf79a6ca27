from trainer.training import progress
from trainer.training.progress import RunClock, format_duration


def test_run_clock_extrapolates_this_process_pace_to_the_steps_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    clock = RunClock(total_steps=400)
    assert clock.remaining(0) == ""  # not started
    clock.start(100)  # resumed a quarter of the way in
    assert clock.remaining(100) == ""  # no pace yet
    now[0] += 30.0
    assert clock.remaining(200) == "about 1m 00s left"  # 100 steps in 30 s, 200 to go
    clock.start(200)  # a later phase does not restart the clock
    now[0] += 30.0
    assert clock.remaining(300) == "about 30s left"
    assert clock.remaining(400) == ""


def test_durations_read_as_a_person_would_say_them():
    assert [format_duration(s) for s in (4.4, 65, 3599.6, 7260)] == [
        "4s", "1m 05s", "1h 00m", "2h 01m"]
