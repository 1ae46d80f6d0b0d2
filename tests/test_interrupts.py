"""A Ctrl-C that something swallows (as LLVM's ctypes callbacks do inside numba) is raised again later."""

import os
import signal
import sys

import pytest

from harness.runtime import interrupts


@pytest.fixture
def remembering(monkeypatch: pytest.MonkeyPatch):
    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(interrupts, "_seen", False)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's printing hook, not pytest's
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_raises_at_once(remembering) -> None:
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            pass


def test_a_swallowed_interrupt_is_raised_again(remembering) -> None:
    interrupts.raise_if_swallowed()  # nothing yet
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    except KeyboardInterrupt:
        pass  # what "Exception ignored on calling ctypes callback function" amounts to
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_swallowed()


class _RaisesWhenDropped:
    """Its __del__ raises: Python can only report that through sys.unraisablehook (as for ctypes)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


def test_the_swallowed_interrupt_is_not_reported_but_other_unraisables_are(remembering, capsys) -> None:
    _RaisesWhenDropped(KeyboardInterrupt())
    assert "KeyboardInterrupt" not in capsys.readouterr().err
    _RaisesWhenDropped(ValueError("kept"))
    assert "kept" in capsys.readouterr().err
