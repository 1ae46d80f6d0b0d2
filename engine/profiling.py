"""A profiled forward pass: the model's kernel table with every entry wrapped in a timer.

The forward pass calls its kernels through a table (a frozen dataclass of callables: the stages "embed",
"layer" and "logits", then the steps of a layer, named as the profile names them). `TimedKernels` copies the
table with timed wrappers, so a profiled pass runs the same code as a plain one and the plain table stays
untouched: no timing call and no allocation on the unprofiled path.
"""

import time
from collections.abc import Callable
from dataclasses import fields, replace

STAGES = ("embed", "layer", "logits")


class TimedKernels:
    """`ops`: a copy of a kernel table that times stages, each layer and, with `by_kernel`, each layer step.

    A step is charged the time since the previous step ended (or its layer began): the Python dispatch between
    two kernel calls counts to the step that follows it, and a layer's steps add up to nearly its time.
    """

    def __init__(self, table: object, by_kernel: bool) -> None:
        self.by_kernel = by_kernel
        self.spans: dict[str, tuple[float, float]] = {}  # stage -> (start, end)
        self.layers: list[float] = []  # seconds of each layer, in order
        self.steps: dict[str, float] = {}  # layer step -> seconds summed over layers
        self._last = 0.0  # when the previous step ended
        timed = {
            "embed": self._stage("embed", table.embed),
            "layer": self._layer(table.layer),
            "logits": self._stage("logits", table.logits),
        }
        if by_kernel:
            steps = (f.name for f in fields(table) if f.name not in STAGES)
            timed.update({name: self._step(name, getattr(table, name)) for name in steps})
        self.ops = replace(table, **timed)

    def report(self) -> dict[str, object]:
        """Seconds: "embed", "forward" (the layers), "logits", "layers" (each) and, by kernel, "kernels"."""
        (embed0, embed1), (logits0, logits1) = self.spans["embed"], self.spans["logits"]
        out: dict[str, object] = {"embed": embed1 - embed0, "forward": logits0 - embed1}
        out.update(logits=logits1 - logits0, layers=self.layers)
        if self.by_kernel:
            out["kernels"] = self.steps
        return out

    def _stage(self, name: str, fn: Callable) -> Callable:
        def timed(*args: object) -> None:
            start = time.perf_counter()
            fn(*args)
            self.spans[name] = (start, time.perf_counter())

        return timed

    def _layer(self, fn: Callable) -> Callable:
        def timed(*args: object) -> None:
            start = self._last = time.perf_counter()
            fn(*args)
            self.layers.append(time.perf_counter() - start)

        return timed

    def _step(self, name: str, fn: Callable) -> Callable:
        def timed(*args: object) -> None:
            fn(*args)
            now = time.perf_counter()
            self.steps[name] = self.steps.get(name, 0.0) + now - self._last
            self._last = now

        return timed
