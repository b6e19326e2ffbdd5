"""Progress output: a bar on a terminal, a line per 5% in a file (never tqdm's carriage returns), nothing when off."""

import io

from pyro_lvm.progress import Lines, bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_a_line_every_five_percent_and_no_carriage_returns():
    out = io.StringIO()
    b = bar(200, 0, "train", "step", file=out)
    assert isinstance(b, Lines)
    for _ in range(200):
        b.update(1)
        b.set_postfix(elbo="-1.00")
    b.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 and "\r" not in out.getvalue()
    assert lines[0].startswith("train: 10/200 (5%)") and lines[-1].startswith("train: 200/200 (100%)")
    assert lines[-1].endswith("elbo=-1.00")


def test_a_resumed_bar_counts_from_its_start_and_off_prints_nothing():
    out = io.StringIO()
    b = bar(100, 50, "train", "step", file=out)
    for _ in range(50):
        b.update(1)
    assert out.getvalue().splitlines()[0].startswith("train: 55/100 (55%)")
    quiet = io.StringIO()
    off = bar(100, 0, "train", "step", enabled=False, file=quiet)
    for _ in range(100):
        off.update(1)
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdm():
    from tqdm import tqdm

    b = bar(10, 0, "train", "step", file=_Terminal())
    assert isinstance(b, tqdm)
    b.close()
