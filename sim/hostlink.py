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

Training over the link
----------------------
A trainer bitstream (:mod:`bitswarm.hw.onchip_board`, whose docstring is the protocol: TRAIN,
READ, INFO commands, flow control, timeout) is driven by :class:`TrainerLink`:
:meth:`~TrainerLink.identify` checks the INFO reply against the model file (a wrong bitstream
is one :class:`~bitswarm.golden.errors.ConfigError` line), :meth:`~TrainerLink.train` streams
labelled samples with as many commands in flight as the device's FIFO allows,
:meth:`~TrainerLink.read_state` reads the whole training state back through the debug port
(:func:`~bitswarm.hw.onchip.dbg_queries`, :func:`~bitswarm.hw.onchip.dbg_decode`). The same
class runs over a serial port and, in the cocotb test, over the simulated RTL's pins.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.model import Model
from bitswarm.hw.plan import REPLY, SYNC

from .driver import Backend, InferenceResult, hw_order

__all__ = ["SYNC", "REPLY", "LinkError", "LinkFormat", "Transport", "SerialTransport",
           "HostLink", "BoardBackend", "TrainerLink"]

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


class TrainerLink:
    """The on-chip trainer over its link (:mod:`bitswarm.hw.onchip_board`): identify, train,
    read back.

    Parameters
    ----------
    model : Model
        The model file the bitstream was built from (initial state, on-chip constants in its
        meta, invert bits: the RTL's constants that the read-back does not carry).
    transport : Transport
        The byte pipe (:class:`SerialTransport`, or a test double / simulated board).
    config : OnChipConfig, optional
        The on-chip constants (default from the model's meta).

    Raises
    ------
    ConfigError
        A model the trainer cannot take (a CNN, no accumulators or no on-chip constants).
    """

    def __init__(self, model: Model, transport: Transport, config=None):
        from bitswarm.hw.onchip_board import check_trainable

        self.model = model
        self.config = check_trainable(model, config)
        self.transport = transport
        self.info = None  # the device's TrainerInfo, once identified

    # -- bytes ---------------------------------------------------------------------------------
    def _read(self, n: int, what: str) -> bytes:
        b = bytes(self.transport.read(n))
        if len(b) < n:
            raise LinkError(f"timed out waiting for {what}: {len(b)} of {n} bytes arrived")
        return b

    def resync(self, settle_s: float) -> None:
        """Let the device drop any half-received command (its timeout) and drop what it sent."""
        time.sleep(settle_s)
        self.transport.reset_input_buffer()

    def _pipeline(self, cmds, reply_len: int, handle) -> None:
        """Send ``cmds`` keeping the unanswered bytes within the device's FIFO depth; each reply
        (``reply_len`` bytes) goes to ``handle(k, reply)`` in order."""
        depth = self._require_info().fifo_depth
        pending: deque[int] = deque()
        inflight, k = 0, 0
        for cmd in cmds:
            if len(cmd) > depth:
                raise ConfigError(f"a {len(cmd)}-byte command does not fit the device's {depth}-byte FIFO")
            while pending and inflight + len(cmd) > depth:
                handle(k, self._read(reply_len, f"reply {k}"))
                inflight -= pending.popleft()
                k += 1
            self.transport.write(cmd)
            pending.append(len(cmd))
            inflight += len(cmd)
        while pending:
            handle(k, self._read(reply_len, f"reply {k}"))
            pending.popleft()
            k += 1

    # -- INFO ----------------------------------------------------------------------------------
    def _require_info(self):
        if self.info is None:
            raise ConfigError("identify() the trainer before using it")
        return self.info

    def read_info(self):
        """Send INFO and parse the reply (:class:`~bitswarm.hw.onchip_board.TrainerInfo`)."""
        from bitswarm.hw.onchip_board import (
            CMD_INFO,
            INFO_MAGIC,
            PROTOCOL_VERSION,
            REPLY_INFO,
            TrainerInfo,
        )

        self.transport.write(bytes([CMD_INFO]))
        head = self._read(1 + TrainerInfo.PREFIX, "the INFO reply (is this a trainer bitstream?)")
        if head[0] != REPLY_INFO:
            raise LinkError(f"an INFO reply starts with 0x{REPLY_INFO:02X}, received 0x{head[0]:02X} "
                            "(not a trainer bitstream?)")
        try:
            if head[1:4] != INFO_MAGIC or head[4] != PROTOCOL_VERSION:
                TrainerInfo.from_bytes(head[1:])  # raises: the magic or version is wrong
            n = TrainerInfo.length(head[5]) - TrainerInfo.PREFIX
            return TrainerInfo.from_bytes(head[1:] + self._read(n, "the INFO reply"))
        except ConfigError as e:
            raise LinkError(str(e)) from None

    def identify(self, *, fresh: bool = True):
        """Read INFO and refuse (one-line :class:`ConfigError`) a bitstream not built from this
        model, on-chip constants and a fold this host can read back; with ``fresh``, also one that
        has trained since it was configured (its state is no longer the model file's)."""
        from bitswarm.hw.onchip import dbg_queries
        from bitswarm.hw.onchip_board import config_hash

        info = self.read_info()
        cfg = self.model.cfg

        def arch(lays):
            return "-".join(str(v) for v in [lays[0][0], *(e[1] for e in lays)]) + \
                " (S=" + ",".join(str(e[2]) for e in lays) + ")"

        mine = tuple((lay.n_in, lay.n_out, lay.swarm) for lay in cfg.layers)
        theirs = tuple(e[:3] for e in info.layers)
        if mine != theirs:
            raise ConfigError(f"the board's trainer is {arch(theirs)}, the model {arch(mine)}: "
                              "not the bitstream of this model")
        if info.acc_width != cfg.flip.acc_width:
            raise ConfigError(f"the board's trainer has {info.acc_width}-bit accumulators, the model "
                              f"{cfg.flip.acc_width}-bit")
        try:
            fold = info.fold()
            fold.check(cfg)
        except ConfigError as e:
            raise ConfigError(f"the board reports a fold this model cannot have: {e}") from None
        if info.queries != len(dbg_queries(cfg, fold)):
            raise ConfigError(f"the board's debug port has {info.queries} state words, this host "
                              f"expects {len(dbg_queries(cfg, fold))} (another bitswarm version?)")
        want = config_hash(self.model, self.config, info.in_lanes, fold)
        if info.config_hash != want:
            raise ConfigError(f"the board's trainer was built from another model file, on-chip "
                              f"constants or fold (config hash 0x{info.config_hash:08x}, the model "
                              f"gives 0x{want:08x})")
        if fresh and info.samples:
            raise ConfigError(f"the board has trained {info.samples} samples since it was "
                              "configured, so its state is no longer the model file's; reconfigure "
                              "the board and run again")
        self.info = info
        return info

    # -- TRAIN ---------------------------------------------------------------------------------
    def train(self, xs, ys, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Train on samples ``xs`` (uint8, ``[K, ...]`` with ``N_0`` pixels each, in the model's
        flattened order) with labels ``ys``; returns the per-sample ``(pred, error)`` arrays.
        ``progress(done, errors)`` is called after every reply."""
        from bitswarm.hw.onchip_board import CMD_TRAIN, REPLY_TRAIN

        self._require_info()
        cfg = self.model.cfg
        n0, c = cfg.layers[0].n_in, cfg.layers[-1].n_out
        xs = np.asarray(xs)
        ys = np.asarray(ys).reshape(-1)
        if len(xs) != len(ys):
            raise ConfigError(f"{len(xs)} samples but {len(ys)} labels")
        if xs.dtype != np.uint8 or (len(xs) and xs[0].size != n0):
            raise ConfigError(f"samples must be {n0} uint8 pixels each, found {xs.dtype} {list(xs.shape[1:])}")
        if len(ys) and (not np.issubdtype(ys.dtype, np.integer) or ys.min() < 0 or ys.max() >= c):
            raise ConfigError(f"labels must be classes in 0..{c - 1}")
        preds = np.zeros(len(ys), dtype=np.int64)
        errs = np.zeros(len(ys), dtype=np.int64)

        def cmds():
            for x, y in zip(xs, ys, strict=True):
                yield bytes([CMD_TRAIN, int(y)]) + np.ascontiguousarray(x).reshape(-1).tobytes()

        def handle(k, r):
            if r[0] != REPLY_TRAIN or r[1] >= c or r[2] > 1:
                raise LinkError(f"sample {k}: {r.hex()} is not a TRAIN reply (0x{REPLY_TRAIN:02X}, a "
                                f"class below {c}, an error flag)")
            preds[k], errs[k] = r[1], r[2]
            if progress is not None:
                progress(k + 1, int(errs[:k + 1].sum()))

        self._pipeline(cmds(), 3, handle)
        return preds, errs

    # -- READ ----------------------------------------------------------------------------------
    def read(self, queries) -> list[int]:
        """``dbg_data`` for each debug query ``(kind, layer, row, word)``."""
        from bitswarm.hw.onchip_board import CMD_READ, REPLY_READ

        info = self._require_info()
        db = info.dbg_bytes
        vals: list[int] = []

        def cmds():
            for q in queries:
                kind, layer, row, word = (tuple(q) + (0,))[:4]
                yield bytes([CMD_READ, kind, layer]) + int(row).to_bytes(2, "little") + \
                    int(word).to_bytes(2, "little")

        def handle(k, r):
            if r[0] != REPLY_READ:
                raise LinkError(f"query {k}: a READ reply starts with 0x{REPLY_READ:02X}, received "
                                f"0x{r[0]:02X}")
            vals.append(int.from_bytes(r[1:], "little"))

        self._pipeline(cmds(), 1 + db, handle)
        return vals

    def read_state(self) -> Model:
        """The whole training state (weights, accumulators, thresholds, LFSR) as a :class:`Model`
        (the model file's configuration and invert bits)."""
        from bitswarm.hw.onchip import dbg_decode, dbg_queries

        fold = self._require_info().fold()
        cfg = self.model.cfg
        q = dbg_queries(cfg, fold)
        return dbg_decode(cfg, q, self.read(q), [v.clone() for v in self.model.invert], fold=fold)
