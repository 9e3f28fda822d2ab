"""``beamline-ls bench gating``: a seed that gave too few triggers for an SD is shown
as such (a max over SDs silently skipped it), and its options are checked."""

import math

import pytest

from beamline_ls.gating import bench
from beamline_ls.gating.score import Score

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core


def _score(sd: float, beats: float, triggers: int) -> Score:
    return Score(n_frames=1600, n_triggers=triggers, sd_rad=sd, beats=beats, n_beats=96,
                 duplicates=0, early=0, panic=0, t_lock_s=1.0, est_err_rad=0.03,
                 locked_phase=1.0)


def test_a_seed_without_an_sd_is_named_in_the_row():
    rows = [(_score(0.032, 1.0, 100), 1.0, 0), (_score(math.nan, 0.01, 1), 1.0, 0),
            (_score(0.028, 1.0, 100), 1.0, 0)]
    line = bench.table({("faint", "procedural", 40.0): rows}, 40.0)[-1]
    assert "0.032 (0.030) + 1 seed(s) with < 2 triggers" in line, line
    assert "NO:" in line and "beats < 95 %" in line and "SD > 0.05" in line, line


def test_no_speed_table_with_zero_frames_and_a_negative_count_is_refused(capsys):
    assert bench.main(["--seconds", "2", "--seeds", "1", "--fps", "80", "--cases",
                       "noise-only", "--jobs", "1", "--speed-frames", "0"]) == 0
    out = capsys.readouterr().out
    assert "| noise-only | 80 |" in out and "frame size" not in out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--speed-frames", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_a_seed_that_never_locked_is_named_in_the_lock_column():
    never = Score(n_frames=1600, n_triggers=0, sd_rad=math.nan, beats=0.0, n_beats=96,
                  duplicates=0, early=0, panic=0, t_lock_s=math.nan, est_err_rad=math.nan,
                  locked_phase=math.nan)
    rows = [(_score(0.03, 1.0, 100), 1.0, 0), (never, 1.0, 0)]
    line = bench.table({("faint", "procedural", 40.0): rows}, 40.0)[-1]
    assert "| never in 1 seed(s) |" in line and "lock > 3 s" in line, line
