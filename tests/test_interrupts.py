"""A Ctrl-C that something swallows (as LLVM's ctypes callbacks do inside numba) is raised again later."""

import os
import signal
import sys
import time

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


class _InterruptedWhenDropped:
    """Its __del__ is running when SIGINT arrives: the handler's KeyboardInterrupt is raised inside it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the handler runs here and ends the sleep


def test_an_interrupt_dropped_in_a_finalizer_is_delivered_again_at_once(remembering, capsys) -> None:
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _InterruptedWhenDropped()
        while time.monotonic() - start < 5:  # long work after the finalizer: the interrupt must land in it
            pass
    assert time.monotonic() - start < 1
    assert "KeyboardInterrupt" not in capsys.readouterr().err


def test_other_unraisables_are_still_reported(remembering, capsys) -> None:
    _RaisesWhenDropped(ValueError("kept"))
    assert "kept" in capsys.readouterr().err
