"""The host link's byte protocol, one home for both ends: a board over pyserial and the RTL in
simulation.

Protocol (8N1 UART, one image outstanding at a time)
---------------------------------------------------
Host → device, one **frame** per image::

    0xA5  p[0] p[1] ... p[N-1]

``SYNC = 0xA5`` then the image's ``N`` raw 8-bit pixels in the order the accelerator streams
them: row-major for an MLP (the model's ``input_shape`` flattened) and for a one-channel CNN;
channel-last (HWC raster, SPEC.md §14) for a CNN with ``C > 1`` channels, ``N = C·H·W``. Between frames the device
ignores every byte except ``SYNC``; inside a frame every byte is a pixel, ``0xA5`` included.

Device → host, one **reply** per frame, once the accelerator has classified it::

    0x5A  cls  s[0] ... s[C-1]

``REPLY = 0x5A``, the class byte (argmax, ties to the lowest index), then the ``C`` integer
scores ``z - θ`` of the output layer, each as ``ceil(W/8)`` bytes of little-endian two's
complement (``W`` = the output layer's ``z_width``, sign-extended to whole bytes). A reply is
``2 + C·ceil(W/8)`` bytes.

**Resynchronisation**: a host that does not know the device's state (after a reset of the host
program, say) sends ``N`` bytes of ``0x00`` — they complete a frame the device might be in the
middle of, and are ignored otherwise — waits for the link to fall silent and discards what
arrived. :meth:`HostLink.resync` does this.

Nothing here does I/O by itself: :class:`LinkFormat` encodes frames and decodes replies; the
:class:`HostLink` driver runs them over any :class:`Transport` (pyserial's ``Serial`` via
:class:`SerialTransport`, or a test double); the cocotb testbench drives the RTL's ``rx`` pin
with :meth:`LinkFormat.encode` and decodes its ``tx`` with :meth:`LinkFormat.decode`.
:class:`BoardBackend` plugs a link into :mod:`bitswarm.sim.driver`, so
``evaluate(BoardBackend(...), images, labels)`` compares a board with golden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.model import Model
from bitswarm.hw.plan import REPLY, SYNC

from .driver import Backend, InferenceResult, hw_order

__all__ = ["SYNC", "REPLY", "LinkError", "LinkFormat", "Transport", "SerialTransport",
           "HostLink", "BoardBackend"]

class LinkError(BitswarmError):
    """The device did not answer, or answered something that is not a reply."""


def _pos_int(v, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{name} must be a positive integer, not {v!r}")
    return v


@dataclass(frozen=True)
class LinkFormat:
    """Frame and reply layout for one model: ``n_pixels`` in, ``classes`` scores of
    ``score_width`` bits out."""

    n_pixels: int
    classes: int
    score_width: int

    def __post_init__(self):
        _pos_int(self.n_pixels, "n_pixels")
        _pos_int(self.score_width, "score_width")
        if _pos_int(self.classes, "classes") < 2 or self.classes > 256:
            raise ConfigError(f"classes must be in 2..256 (one class byte), not {self.classes}")

    @classmethod
    def for_model(cls, model: Model) -> "LinkFormat":
        lay = model.cfg.layers
        return cls(lay[0].in_size, lay[-1].n_out, lay[-1].z_width)

    @property
    def score_bytes(self) -> int:
        return -(-self.score_width // 8)

    @property
    def frame_len(self) -> int:
        return 1 + self.n_pixels

    @property
    def reply_len(self) -> int:
        return 2 + self.classes * self.score_bytes

    def encode(self, image) -> bytes:
        """The frame for one raw uint8 image (any shape with ``n_pixels`` elements), sent in
        its flattened order: a CNN's image must already be in HWC order
        (:func:`bitswarm.sim.driver.hw_order`; :class:`BoardBackend` does this)."""
        a = np.asarray(image)
        if a.size != self.n_pixels:
            raise ConfigError(f"an image must have {self.n_pixels} pixels, not {a.size}")
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255:
                raise ConfigError(f"pixels must be integers in 0..255 (uint8), found {a.dtype}")
            a = a.astype(np.uint8)
        return bytes([SYNC]) + a.reshape(-1).tobytes()

    def decode(self, reply: bytes) -> tuple[int, np.ndarray]:
        """``(class, scores[C] int64)`` from one reply; :class:`LinkError` if malformed."""
        if len(reply) != self.reply_len:
            raise LinkError(f"a reply has {self.reply_len} bytes, received {len(reply)}")
        if reply[0] != REPLY:
            raise LinkError(f"a reply starts with 0x{REPLY:02X}, received 0x{reply[0]:02X}")
        cls = reply[1]
        if cls >= self.classes:
            raise LinkError(f"class byte {cls} is not below {self.classes}")
        sb = self.score_bytes
        scores = np.array([int.from_bytes(reply[2 + j * sb:2 + (j + 1) * sb], "little", signed=True)
                           for j in range(self.classes)], dtype=np.int64)
        return cls, scores

    def reply_for(self, cls: int, scores) -> bytes:
        """The reply a correct device sends (the reference the gateware is compared with)."""
        sb = self.score_bytes
        body = b"".join(int(s).to_bytes(sb, "little", signed=True) for s in scores)
        return bytes([REPLY, int(cls)]) + body


class Transport(Protocol):
    """A byte pipe to the device."""

    def write(self, data: bytes) -> object: ...

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only when the read timed out."""
        ...

    def reset_input_buffer(self) -> None: ...


class SerialTransport:
    """A pyserial port (``serial.serial_for_url``: device paths and pyserial URLs)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 2.0):
        import serial

        _pos_int(baud, "baud")
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive seconds, not {timeout!r}")
        try:
            self.serial = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise LinkError(f"cannot open {port}: {e}") from None

    def write(self, data: bytes) -> object:
        return self.serial.write(data)

    def read(self, n: int) -> bytes:
        return self.serial.read(n)

    def reset_input_buffer(self) -> None:
        self.serial.reset_input_buffer()

    def close(self) -> None:
        self.serial.close()


class HostLink:
    """Send images to a device and read its replies, one image at a time.

    Parameters
    ----------
    fmt : LinkFormat
    transport : Transport
    """

    def __init__(self, fmt: LinkFormat, transport: Transport):
        if not isinstance(fmt, LinkFormat):
            raise ConfigError(f"fmt must be a LinkFormat, not {fmt!r}")
        self.fmt = fmt
        self.transport = transport

    def resync(self, settle_s: float = 0.2) -> None:
        """Finish any half-received frame with zero pixels and drop whatever comes back."""
        self.transport.write(bytes(self.fmt.n_pixels))
        time.sleep(settle_s)
        self.transport.reset_input_buffer()

    def classify(self, image) -> tuple[int, np.ndarray]:
        """Send one image and return the device's ``(class, scores)``."""
        self.transport.write(self.fmt.encode(image))
        reply = self.transport.read(self.fmt.reply_len)
        if len(reply) < self.fmt.reply_len:
            raise LinkError(f"timed out: {len(reply)} of {self.fmt.reply_len} reply bytes arrived")
        return self.fmt.decode(reply)


class BoardBackend(Backend):
    """A board running the accelerator behind the UART link (a :mod:`bitswarm.sim.driver`
    backend). Images go out in the accelerator's order (:func:`~bitswarm.sim.driver.hw_order`:
    ``[n, C, H, W]`` CNN inputs become HWC rows). ``cycles_per_inference`` is the plan's cycle
    model: the link cannot measure it."""

    name = "board"

    def __init__(self, model: Model, link: HostLink, plan=None):
        super().__init__(model, plan)
        if link.fmt != LinkFormat.for_model(model):
            raise ConfigError("the link's format was made for a different model")
        self.link = link

    def infer(self, images) -> InferenceResult:
        t0 = time.perf_counter()
        res = [self.link.classify(img) for img in hw_order(self.model.cfg, images)]
        secs = time.perf_counter() - t0
        c = self.link.fmt.classes
        classes = np.array([r[0] for r in res], dtype=np.int64)
        scores = np.stack([r[1] for r in res]) if res else np.zeros((0, c), dtype=np.int64)
        return InferenceResult(classes, scores, self.plan.latency_cycles(),
                               float(self.plan.interval_bound()), secs)
