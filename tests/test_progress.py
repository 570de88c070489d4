"""Progress without a terminal: plain lines with elapsed time and an estimate, never silence."""
import io

from prunedsl.runtime.progress import PlainProgress, format_seconds, progress_bar


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plain_progress_logs_start_steps_eta_and_end():
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(range(20), total=None, desc="prune", unit="block", clock=clock, stream=out)
    for _ in bar:
        clock.t += 3.0  # each block takes 3 s
    lines = out.getvalue().splitlines()
    assert lines[0] == "prunedsl: prune: started of 20 blocks"
    # one line every tenth of the way (2 blocks), the last step is reported by the end line
    assert lines[1] == "prunedsl: prune: 2/20 blocks, 6s elapsed, ~54s left"
    assert len(lines) == 1 + 9 + 1
    assert lines[-1] == "prunedsl: prune: done, 20 blocks in 1m00s"


def test_plain_progress_logs_slow_steps_by_time():
    clock, out = Clock(), io.StringIO()
    with PlainProgress(None, total=1000, desc="perplexity", unit="win", clock=clock, stream=out) as bar:
        clock.t += 61.0
        bar.update(1)  # far less than a tenth, but a minute has passed
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("prunedsl: perplexity: 1/1000 wins, 1m01s elapsed, ~16h55m")
    assert lines[-1].startswith("prunedsl: perplexity: done, 1 wins")


def test_progress_false_prints_nothing(capsys):
    for _ in progress_bar(range(3), desc="x", progress=False):
        pass
    assert capsys.readouterr().err == ""


def test_not_a_terminal_gives_plain_lines(capsys):
    for _ in progress_bar(range(3), desc="calibrate", unit="block"):
        pass
    err = capsys.readouterr().err  # capsys's stderr is not a TTY
    assert "prunedsl: calibrate: started of 3 blocks" in err and "done, 3 blocks" in err


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.4, 61, 3725)] == ["0s", "59s", "1m01s", "1h02m05s"]
