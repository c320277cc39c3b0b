"""Progress: a bar on a terminal, one plain line per interval (10 s or 10 %) otherwise — and never a carriage return
in a log. Unit tests on a fake clock, plus `mfapr eval-bag` run as a child process with its output piped."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from mfapr_ros.core.progress import LineProgress, StatusLine, progress


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_every_tenth_of_the_total_and_a_final_line() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(200, "eval-bag", "msg", file=out, clock=clock)
    for _ in range(200):
        clock.t += 0.01
        bar.set_postfix_str("12 bundles")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # the first update, then 10 %, 20 %, ... 100 %: 11 lines, no duplicate final line
    assert len(lines) == 11, lines
    assert lines[0].startswith("eval-bag: 1/200 msg (0 %)")
    assert lines[5].startswith("eval-bag: 100/200 msg (50 %), 100.0 msg/s, elapsed 1 s, 12 bundles")
    assert [int(re.match(r"eval-bag: (\d+)/", x).group(1)) for x in lines] == [1, *range(20, 201, 20)]


def test_plain_lines_every_interval_without_a_total_and_postfix_like_tqdm() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(None, "play", "msg", file=out, clock=clock, interval_s=10.0)
    for _ in range(35):  # one message per second for 35 s
        clock.t += 1.0
        bar.update(1)
    bar.set_postfix(loss="0.123", epoch=2)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [int(re.match(r"play: (\d+) msg", x).group(1)) for x in lines] == [1, 11, 21, 31, 35]
    assert lines[-1].endswith("elapsed 35 s, loss=0.123, epoch=2")
    bar.close()  # idempotent
    assert len(out.getvalue().splitlines()) == 5


def test_terminal_gets_the_bar_and_disabled_gets_nothing() -> None:
    from tqdm import tqdm

    bar = progress(10, "train", "step", file=io.StringIO(), tty=True)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(10, "train", "step", file=io.StringIO()), LineProgress)  # StringIO: not a terminal
    assert progress(10, "x", enabled=False) is None
    resumed = progress(100, "train", "step", initial=40, file=(out := io.StringIO()), tty=False)
    resumed.update(1)
    assert out.getvalue().startswith("train: 41/100 step (41 %)")


def test_status_line_terminal_and_log() -> None:
    tty = io.StringIO()
    s = StatusLine(tty, tty=True)
    s("synth: 1/10 frames")
    s("synth: 2/10 frames")
    s.close()
    assert tty.getvalue() == "\rsynth: 1/10 frames\rsynth: 2/10 frames\n"
    log, clock = io.StringIO(), _Clock()
    s = StatusLine(log, tty=False, clock=clock, interval_s=10.0)
    for k in range(1, 26):
        clock.t = float(k)
        s(f"synth: {k}/25 frames")
    s.close()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == ["synth: 1/25 frames", "synth: 11/25 frames", "synth: 21/25 frames",
                                           "synth: 25/25 frames"]


def test_eval_bag_output_in_a_log_has_no_carriage_return(tmp_path, ros_env) -> None:
    """A progress user run as a child process with stdout/stderr piped (a log, not a terminal): plain lines with the
    figures, no '\\r'."""
    pytest.importorskip("torch")
    from helpers import ROOT, make_checkpoint

    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag

    ckpt = make_checkpoint(tmp_path, 4)
    bag = tmp_path / "bag"
    write_synth_bag(bag, SynthBagSpec([f"/cam{i}/image_raw" for i in range(4)], frames=8, size=32))
    env = {**ros_env, "PYTHONPATH": f"{ROOT}:{ROOT / '.pp'}"}
    proc = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", "eval-bag", "--checkpoint", str(ckpt), "--bag",
                           str(bag), "--out", str(tmp_path / "rep"), "--device", "cpu", "--no-plots"],
                          capture_output=True, env=env, timeout=300)
    text = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, text
    assert "\r" not in text
    lines = [x for x in text.splitlines() if x.startswith("eval-bag: ")]
    assert lines and re.match(r"eval-bag: 32/32 msg \(100 %\), [\d.]+ msg/s, elapsed \d+ s, \d+ bundles", lines[-1])
