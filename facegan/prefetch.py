"""Batches moved to the device ahead of the step that needs them, in a background thread.

The training step on a GPU is short enough (a few ms) that fetching a batch from the loader's
queue, copying it to the device and converting it to float in the main thread costs a visible
share of each step. A thread does that work `depth` batches ahead, on a side CUDA stream; the
step's stream waits only for the copy of the batch it takes. The order of batches is the
loader's: the stream, and exact resume, are unchanged.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

import torch


class DevicePrefetcher:
    def __init__(self, loader: Iterable[dict], device: torch.device,
                 convert: Callable[[torch.Tensor], torch.Tensor], depth: int = 3):
        self.device, self.convert = device, convert
        self.source = iter(loader)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._fill, name="facegan-prefetch", daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        try:
            while not self.stopping.is_set():
                images = next(self.source)["image"]
                if self.side is None:
                    self._put((self.convert(images.to(self.device)), None))
                    continue
                with torch.cuda.stream(self.side):
                    images = self.convert(images.to(self.device, non_blocking=True))
                    ready = torch.cuda.Event()
                    ready.record(self.side)
                self._put((images, ready))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(error)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        images, ready = item
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            images.record_stream(current)  # the allocator must not reuse it before the step ran
        return images

    def close(self) -> None:
        """Stop the thread and the loader's workers (again: nothing)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.thread.join()
        del self.source
