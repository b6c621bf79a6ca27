"""SIGTERM outside training: a stop Python drops still stops the job before anything is
swapped in (the case of a SIGTERM delivered inside jax's garbage-collector callback)."""

import subprocess
import sys
import textwrap

from tests.support.trainer_data import REPO_ROOT

# Runs in its own process: it installs the process's SIGTERM handler.
STOP_DROPPED_IN_A_GC_CALLBACK = textwrap.dedent("""
    import gc, os, signal
    from trainer.training.preemption import (
        PreemptionWatch, StoppedBySigterm, raise_if_sigterm_received,
        stop_on_sigterm_between_steps)

    stop_on_sigterm_between_steps()

    def callback(phase, info):
        if phase == "start":
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside the callback

    gc.callbacks.append(callback)
    gc.collect()  # Python prints and drops what the handler raised
    gc.callbacks.remove(callback)
    print("went on after the stop")
    watch = PreemptionWatch()
    print("training would stop at once:", watch.requested_here())
    watch.close()
    try:
        raise_if_sigterm_received()
    except StoppedBySigterm as e:
        print("commit refused:", e)
""")


def test_a_stop_dropped_in_a_gc_callback_still_stops_training_and_commits():
    run = subprocess.run([sys.executable, "-c", STOP_DROPPED_IN_A_GC_CALLBACK], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "went on after the stop" in run.stdout  # the case: the exception was dropped
    assert "training would stop at once: True" in run.stdout
    assert "commit refused: stopped by SIGTERM outside training" in run.stdout
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
