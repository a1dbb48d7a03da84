"""The on-chip trainer behind a UART: training over the board's link (issue 19).

::

    rx ─► UARTRx ─► byte FIFO ─► command parser ─┬─► OnChipTrainer ─┐
                    (2 frames)   TRAIN/READ/INFO  └─► debug port ───┴─► reply register ─► UARTTx ─► tx

:class:`UARTTrainer` is the clock-agnostic core (pins ``rx``, ``tx``, ``led``; the tests simulate
it with a small divisor); :class:`TrainerBoardTop` puts it on an amaranth-boards platform with
the clocking, pins and LEDs of every board top (:class:`~bitswarm.hw.board.UARTBoard`).

Byte protocol (8N1; all multi-byte fields little-endian)
--------------------------------------------------------
Host → device, three commands:

=========  ==========================================  ==========================================
command    host sends                                  device replies
=========  ==========================================  ==========================================
TRAIN      ``0xA6``, label, ``N`` raw pixels           ``0x6A``, predicted class, error flag (0/1)
READ       ``0xA7``, kind, layer, row (2), word (2)    ``0x7A``, ``dbg_data`` (``ceil(D/8)`` bytes)
INFO       ``0xA8``                                    ``0x8A``, :class:`TrainerInfo` (below)
=========  ==========================================  ==========================================

- **TRAIN** trains one sample (one golden :func:`~bitswarm.golden.onchip.onchip_step`): the
  label byte (``0 .. C-1``; the host checks it), then the ``N = N_0`` pixels in the model's
  flattened input order. The reply carries the prediction made *before* the update and whether
  the margin rule found an error. Replies come in command order.
- **READ** is one debug-port query of :class:`~bitswarm.hw.onchip.OnChipTrainer`:
  ``(kind, layer, row, word)`` as in :func:`~bitswarm.hw.onchip.dbg_queries` (kind
  ``DBG_ROW`` = 0: weight bits and accumulators of one memory word of a row, ``DBG_THETA`` = 1:
  a threshold, ``DBG_LFSR`` = 2: the LFSR state); the reply is the port's ``dbg_data``
  (``D`` = ``dbg_width`` bits) as ``ceil(D/8)`` bytes. It is answered once every earlier
  TRAIN has been answered (the trainer is idle), so it reads the state after them. All of
  :func:`~bitswarm.hw.onchip.dbg_queries`, decoded by :func:`~bitswarm.hw.onchip.dbg_decode`,
  is the whole training state: weights, accumulators, thresholds and the LFSR.
- **INFO** identifies the bitstream (:class:`TrainerInfo`): protocol magic and version, layer
  sizes, swarm sizes, trainer fold, accumulator width, input lanes, ``dbg_data`` bytes, number
  of debug queries, the FIFO depth and timeout the host must respect, a 32-bit hash of the
  model (configuration, on-chip constants, invert bits, initial state) and fold the bitstream
  was built from (:func:`config_hash`), and the number of samples trained since configuration.
  The host refuses a bitstream whose INFO differs from its model file in one line.

Between commands every other byte is ignored. **Flow control**: the device buffers
``fifo_depth`` bytes (two TRAIN frames); a host keeps the bytes of commands it has sent but
whose reply it has not fully received at or below ``fifo_depth``, which lets it send the next
TRAIN frame while the device trains on the previous one (back-to-back samples at the line
rate; :class:`bitswarm.sim.hostlink.TrainerLink` does this). **Timeout**: a command whose bytes
stop arriving for ``timeout_bytes`` byte times (default 1000, 87 ms at 115200 baud) is dropped
unanswered, so a host that died mid-frame leaves no half frame: a new host waits that long,
flushes its input and starts with INFO. The trainer never sees a partial frame: a TRAIN
command is parsed only once all its ``N + 1`` bytes are in the FIFO.

Timing: a TRAIN frame leaves the FIFO at one byte per cycle into ``P``-pixel transfers (a
partial last one zero-padded); the trainer then needs
:func:`~bitswarm.hw.plan.cycles_per_sample` cycles, and the reply starts when the transmitter
is free. A READ waits for the trainer to be idle and the transmitter free, pulses ``dbg_en``,
captures ``dbg_data`` the next cycle and sends it. TRAIN and READ replies are loaded whole into
one shift register (``8·max(3, 1 + ceil(D/8))`` bits) that feeds the transmitter a byte at a
time; INFO's bytes come from a constant table (and the sample counter) one at a time.

Cost of the link (yosys ``synth_ice40`` on a 16-8-4 S=2 trainer): the trainer alone 2,367 LUT4,
1,261 FF, 12 block RAMs; with the link 2,853 LUT4, 1,708 FF, 13 block RAMs (the FIFO); placed on
the iCEBreaker 4,354 of 5,280 logic cells, Fmax 21.7 MHz (timing met at the default 12 MHz).

LEDs: ``led[0]`` toggles on every TRAIN reply, ``led[1]`` lights (sticky) on a UART overrun,
framing error or a byte dropped because the FIFO was full (a host that broke the flow-control
rule).
"""


import json
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.files import tensor_digest
from bitswarm.golden.model import Model
from bitswarm.golden.onchip import OnChipConfig

from .board import UARTBoard
from .onchip import OnChipTrainer, dbg_queries
from .plan import TrainerFold
from .uart import UARTRx, UARTTx, _check_divisor

__all__ = ["CMD_TRAIN", "REPLY_TRAIN", "CMD_READ", "REPLY_READ", "CMD_INFO", "REPLY_INFO",
           "INFO_MAGIC", "PROTOCOL_VERSION", "READ_ARGS", "DEFAULT_TIMEOUT_BYTES", "TRAINER_CLOCK_HZ",
           "TrainerInfo", "config_hash", "check_trainable", "UARTTrainer", "TrainerBoardTop"]

#: TRAIN: ``CMD_TRAIN label p[0] .. p[N-1]`` → ``REPLY_TRAIN pred error``.
CMD_TRAIN, REPLY_TRAIN = 0xA6, 0x6A
#: READ: ``CMD_READ kind layer row(2) word(2)`` → ``REPLY_READ dbg_data(ceil(D/8))``.
CMD_READ, REPLY_READ = 0xA7, 0x7A
#: INFO: ``CMD_INFO`` → ``REPLY_INFO`` + :meth:`TrainerInfo.to_bytes`.
CMD_INFO, REPLY_INFO = 0xA8, 0x8A
#: First bytes of an INFO payload, then :data:`PROTOCOL_VERSION`.
INFO_MAGIC = b"BST"
PROTOCOL_VERSION = 1
#: Byte times of silence after which a partly received command is dropped.
DEFAULT_TIMEOUT_BYTES = 1000
#: Default core clock of a trainer board top: the board's oscillator (no PLL). The link, not the
#: clock, bounds training over UART: at 115200 baud a 64-pixel TRAIN frame takes 5.7 ms on the
#: wire, a sample ~70-1000 trainer cycles (6-80 us at 12 MHz); ``clock_hz`` overrides it.
TRAINER_CLOCK_HZ = {"icebreaker": 12e6, "ulx3s": 25e6, "arty": 100e6}
#: Bytes of a READ command after its command byte: kind, layer, row (2), word (2).
READ_ARGS = 6


def check_trainable(model: Model, config: OnChipConfig | None = None) -> OnChipConfig:
    """The on-chip constants of ``model`` (default from its meta), or one-line
    :class:`ConfigError`: a CNN, a model without on-chip constants or without accumulators, or
    more than 256 classes (one class byte on the link)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a bitswarm.golden.Model, not {model!r}")
    model.cfg.require_dense("the on-chip trainer")
    if config is None:
        try:
            config = OnChipConfig.from_meta(model.cfg.meta)
        except ConfigError as e:
            raise ConfigError(f"{e}; train the model with `bitswarm train --votes integer`") from None
    config.check(model.cfg)
    if model.acc is None:
        raise ConfigError("the on-chip trainer needs a model with accumulators (training state); "
                          "train it with `bitswarm train --votes integer`")
    c = model.cfg.layers[-1].n_out
    if c > 256:
        raise ConfigError(f"the link sends the class as one byte: at most 256 classes, the model has {c}")
    return config


def _check_link_limits(cfg, fold: TrainerFold) -> None:
    """The protocol's field widths: READ rows and words, INFO sizes (one-line ConfigError; S
    fits its byte, golden allows at most 32)."""
    lays = cfg.layers
    if len(lays) > 255:
        raise ConfigError(f"the link numbers layers with one byte: at most 255, the model has {len(lays)}")
    for i, lay in enumerate(lays):
        rows, words = lay.swarm * lay.n_out, fold.words(cfg, i)
        if rows > 1 << 16 or words > 1 << 16 or lay.n_in >= 1 << 16:
            raise ConfigError(f"layer {i} exceeds the link's fields (N < 65536, S*M and words per "
                              f"row <= 65536): N = {lay.n_in}, S*M = {rows}")


def config_hash(model: Model, config: OnChipConfig, in_lanes: int, fold: TrainerFold) -> int:
    """32 bits of a SHA-256 over everything a trainer bitstream is built from: the model
    configuration, the on-chip constants, input lanes and fold (canonical JSON) and the initial
    state tensors (weights, thresholds, invert bits, accumulators, LFSR state)."""
    cfg = model.cfg
    header = json.dumps({"cfg": cfg.to_dict(), "onchip": config.to_dict(), "in_lanes": int(in_lanes),
                         "fold": [list(e) for e in fold.layers]}, sort_keys=True, default=str)
    lfsr = model.lfsr_state if model.lfsr_state is not None else cfg.flip.lfsr.seed
    tensors = {"lfsr": np.array([lfsr], dtype=np.int64)}
    for i in range(len(cfg.layers)):
        tensors[f"w{i}"] = model.weights[i].cpu().numpy().astype(np.uint8)
        tensors[f"theta{i}"] = model.theta[i].cpu().numpy().astype(np.int64)
        tensors[f"invert{i}"] = model.invert[i].cpu().numpy().astype(np.uint8)
        tensors[f"acc{i}"] = model.acc[i].cpu().numpy().astype(np.int64)
    return int(tensor_digest("bitswarm-trainer", header, tensors)[:8], 16)


@dataclass(frozen=True)
class TrainerInfo:
    """What INFO returns: a trainer bitstream's identity and link parameters.

    Byte layout of :meth:`to_bytes` (after the ``REPLY_INFO`` byte; little-endian)::

        "BST" version(1) L(1)                      6 bytes: INFO_PREFIX (L = layers)
        per layer: n_in(2) n_out(2) swarm(1) pe(2) simd(2)
        acc_width(1) in_lanes(2) dbg_bytes(2) queries(4) fifo_depth(2) timeout_bytes(2)
        config_hash(4) samples(4)

    ``samples`` counts the TRAIN commands answered since configuration (mod 2^32); everything
    else is fixed when the bitstream is built (:meth:`for_trainer`).
    """

    layers: tuple[tuple[int, int, int, int, int], ...]  # (n_in, n_out, swarm, pe, simd)
    acc_width: int
    in_lanes: int
    dbg_bytes: int
    queries: int
    fifo_depth: int
    timeout_bytes: int
    config_hash: int
    samples: int = 0

    #: Bytes before the per-layer entries (after the reply byte): magic, version, layer count.
    PREFIX = 5
    PER_LAYER = 9
    TAIL = 21

    @classmethod
    def length(cls, n_layers: int) -> int:
        """Payload bytes (without the reply byte) for ``n_layers`` layers."""
        return cls.PREFIX + cls.PER_LAYER * n_layers + cls.TAIL

    @classmethod
    def for_trainer(cls, model: Model, config: OnChipConfig, in_lanes: int, fold: TrainerFold, *,
                    dbg_width: int, fifo_depth: int, timeout_bytes: int, samples: int = 0
                    ) -> "TrainerInfo":
        cfg = model.cfg
        lays = tuple((lay.n_in, lay.n_out, lay.swarm, fold.pe(i), fold.simd(i))
                     for i, lay in enumerate(cfg.layers))
        return cls(lays, cfg.flip.acc_width, in_lanes, -(-dbg_width // 8), len(dbg_queries(cfg, fold)),
                   fifo_depth, timeout_bytes, config_hash(model, config, in_lanes, fold), samples)

    def to_bytes(self) -> bytes:
        def le(v, n):
            return int(v).to_bytes(n, "little")

        out = bytearray(INFO_MAGIC + bytes([PROTOCOL_VERSION, len(self.layers)]))
        for n_in, n_out, s, pe, simd in self.layers:
            out += le(n_in, 2) + le(n_out, 2) + le(s, 1) + le(pe, 2) + le(simd, 2)
        out += (le(self.acc_width, 1) + le(self.in_lanes, 2) + le(self.dbg_bytes, 2)
                + le(self.queries, 4) + le(self.fifo_depth, 2) + le(self.timeout_bytes, 2)
                + le(self.config_hash, 4) + le(self.samples, 4))
        return bytes(out)

    @classmethod
    def from_bytes(cls, b: bytes) -> "TrainerInfo":
        """Parse an INFO payload; :class:`ConfigError` naming what is wrong."""
        b = bytes(b)
        if len(b) < cls.PREFIX or b[:3] != INFO_MAGIC:
            raise ConfigError(f"not a bitswarm trainer: INFO starts {b[:3]!r}, expected {INFO_MAGIC!r}")
        if b[3] != PROTOCOL_VERSION:
            raise ConfigError(f"the trainer speaks protocol version {b[3]}, this host {PROTOCOL_VERSION}")
        n = b[4]
        if len(b) != cls.length(n):
            raise ConfigError(f"INFO for {n} layers has {cls.length(n)} bytes, received {len(b)}")

        def le(off, k):
            return int.from_bytes(b[off:off + k], "little")

        lays, o = [], cls.PREFIX
        for _ in range(n):
            lays.append((le(o, 2), le(o + 2, 2), le(o + 4, 1), le(o + 5, 2), le(o + 7, 2)))
            o += cls.PER_LAYER
        return cls(tuple(lays), le(o, 1), le(o + 1, 2), le(o + 3, 2), le(o + 5, 4), le(o + 9, 2),
                   le(o + 11, 2), le(o + 13, 4), le(o + 17, 4))

    def fold(self) -> TrainerFold:
        """The trainer fold the bitstream was built with."""
        return TrainerFold(tuple((pe, simd) for _, _, _, pe, simd in self.layers))


class UARTTrainer(wiring.Component):
    """:class:`~bitswarm.hw.onchip.OnChipTrainer` with a UART host link (module docstring).

    Parameters
    ----------
    model : bitswarm.golden.Model
        Initial training state (binary MLP with accumulators and on-chip constants in its meta).
    config : OnChipConfig, optional
        The step's constants (default: from ``model.cfg.meta``).
    divisor : int
        Clock cycles per UART bit (``f_clk / baud``; :func:`~bitswarm.hw.uart.uart_divisor`).
    in_lanes : int, optional
        Pixels per trainer input transfer (default the trainer's).
    fold : TrainerFold, optional
        The trainer's fold (default :meth:`TrainerFold.default`).
    timeout_bytes : int
        Byte times of silence after which a partly received command is dropped.

    Members
    -------
    rx : In(1)
        Serial line from the host (idle 1).
    tx : Out(1)
        Serial line to the host (idle 1).
    led : Out(2)
        ``led[0]`` toggles per TRAIN reply; ``led[1]`` is a sticky error flag (UART overrun,
        framing error, FIFO overflow).

    Raises
    ------
    TypeError, ConfigError
        A CNN, a model without accumulators or on-chip constants, more than 256 classes, a bad
        divisor, lane count, fold or timeout.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    led: Out(2)

    def __init__(self, model: Model, config: OnChipConfig | None = None, *, divisor: int,
                 in_lanes: int | None = None, fold: TrainerFold | None = None,
                 timeout_bytes: int = DEFAULT_TIMEOUT_BYTES):
        try:
            self._config = check_trainable(model, config)
            self._divisor = _check_divisor(divisor)
            if (not isinstance(timeout_bytes, int) or isinstance(timeout_bytes, bool)
                    or not 1 <= timeout_bytes < 1 << 16):
                raise ConfigError(f"timeout_bytes must be an integer in 1..65535, not {timeout_bytes!r}")
            self._fold = TrainerFold.resolve(model.cfg, fold)
            _check_link_limits(model.cfg, self._fold)
            trainer = OnChipTrainer(model, self._config, in_lanes=in_lanes, fold=self._fold)
        except Exception:
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        trainer._MustUse__silence = True  # elaborated with this core; inspected-only otherwise
        self._model, self._trainer, self._timeout = model, trainer, timeout_bytes
        self._fifo_depth = 2 * self.train_frame_len
        self._info = TrainerInfo.for_trainer(
            model, self._config, trainer.in_lanes, self._fold, dbg_width=trainer.dbg_width,
            fifo_depth=self._fifo_depth, timeout_bytes=timeout_bytes)
        super().__init__()

    @property
    def model(self) -> Model:
        return self._model

    @property
    def config(self) -> OnChipConfig:
        return self._config

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def trainer(self) -> OnChipTrainer:
        return self._trainer

    @property
    def fold(self) -> TrainerFold:
        return self._fold

    @property
    def info(self) -> TrainerInfo:
        """The INFO reply's content (with ``samples = 0``)."""
        return self._info

    @property
    def train_frame_len(self) -> int:
        """Bytes of a TRAIN command: command byte, label, ``N`` pixels."""
        return 2 + self._model.cfg.layers[0].n_in

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    def elaborate(self, platform):
        m = Module()
        tr = self._trainer
        m.submodules.urx = urx = UARTRx(self._divisor)
        m.submodules.utx = utx = UARTTx(self._divisor)
        m.submodules.rxq = rxq = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        m.submodules.trainer = tr
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        # -- receiver → FIFO (a byte the full FIFO cannot take is dropped and flagged) ------
        m.d.comb += [rxq.w_data.eq(urx.o_stream.payload.data), rxq.w_en.eq(urx.o_stream.valid),
                     urx.o_stream.ready.eq(1)]
        arrived = urx.o_stream.valid
        with m.If(urx.overrun | urx.frame_err | (urx.o_stream.valid & ~rxq.w_rdy)):
            m.d.sync += self.led[1].eq(1)

        # -- replies: TRAIN and READ loaded whole into a shift register, INFO from a table --
        db = -(-tr.dbg_width // 8)
        n_reply = max(3, 1 + db)
        sreg = Signal(8 * n_reply)
        left = Signal(range(n_reply + 1))  # shift-register bytes still to send
        samples = Signal(32)
        info = bytes([REPLY_INFO]) + self._info.to_bytes()
        info_rom = Array([Const(b, 8) for b in info[:-4]] + [samples[8 * k:8 * k + 8] for k in range(4)])
        info_idx = Signal(range(len(info) + 1), init=len(info))  # INFO bytes sent (all: none pending)
        info_busy = Signal()
        u = utx.i_stream
        m.d.comb += info_busy.eq(info_idx != len(info))
        with m.If(info_busy):
            m.d.comb += [u.payload.data.eq(info_rom[info_idx]), u.valid.eq(1)]
            with m.If(u.ready):
                m.d.sync += info_idx.eq(info_idx + 1)
        with m.Else():
            m.d.comb += [u.payload.data.eq(sreg[:8]), u.valid.eq(left != 0)]
            with m.If(u.valid & u.ready):
                m.d.sync += [sreg.eq(sreg >> 8), left.eq(left - 1)]
        tx_free = (left == 0) & ~info_busy
        o = tr.o_stream
        pred8, err8 = Signal(8), Signal(8)
        m.d.comb += [pred8.eq(o.payload.pred), err8.eq(o.payload.error)]
        with m.If(tx_free & o.valid):  # a TRAIN reply
            m.d.comb += o.ready.eq(1)
            m.d.sync += [sreg.eq(Cat(Const(REPLY_TRAIN, 8), pred8, err8)), left.eq(3),
                         samples.eq(samples + 1), self.led[0].eq(~self.led[0])]
        # READ / INFO replies wait until every TRAIN before them has been answered
        quiet = tr.idle & ~o.valid & tx_free

        self._parser(m, rxq, arrived, quiet, sreg, left, info_idx, db)
        return m

    def _parser(self, m, rxq, arrived, quiet, sreg, left, info_idx, db):
        tr = self._trainer
        n_pix = self._model.cfg.layers[0].n_in
        p = tr.in_lanes
        ti = tr.i_stream
        byte = rxq.r_data

        # silence counter: cycles without a received byte while a command waits for its bytes
        limit = self._timeout * 10 * self._divisor
        silent = Signal(range(limit + 1))
        waiting = Signal()
        timed_out = Signal()
        m.d.comb += timed_out.eq(silent == limit)
        with m.If(arrived | ~waiting):
            m.d.sync += silent.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += silent.eq(silent + 1)

        label = Signal.like(ti.payload.label)
        slice_ = Signal(8 * p)
        lane = Signal(range(max(2, p)))
        remaining = Signal(range(n_pix + 1))
        pending = Signal()
        args = Signal(8 * READ_ARGS)
        nargs = Signal(range(READ_ARGS + 1))
        m.d.comb += [ti.payload.pixels.as_value().eq(slice_), ti.payload.label.eq(label),
                     ti.valid.eq(pending)]

        def shift_in(value):
            m.d.sync += slice_.eq(value if p == 1 else (slice_ >> 8) | (value << (8 * p - 8)))
            with m.If(lane == p - 1):
                m.d.sync += [lane.eq(0), pending.eq(1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        with m.FSM(name="cmd"):
            with m.State("IDLE"):
                m.d.comb += rxq.r_en.eq(1)
                with m.If(rxq.r_rdy):
                    with m.If(byte == CMD_TRAIN):
                        m.next = "TRAIN_WAIT"
                    with m.Elif(byte == CMD_READ):
                        m.d.sync += nargs.eq(0)
                        m.next = "READ_ARGS"
                    with m.Elif(byte == CMD_INFO):
                        m.next = "INFO"
            with m.State("TRAIN_WAIT"):  # the whole frame (label + N pixels) in the FIFO first
                m.d.comb += waiting.eq(1)
                with m.If(rxq.r_level >= n_pix + 1):
                    m.d.comb += rxq.r_en.eq(1)
                    m.d.sync += [label.eq(byte), remaining.eq(n_pix), lane.eq(0)]
                    m.next = "TRAIN"
                with m.Elif(timed_out):
                    m.next = "DISCARD"
            with m.State("TRAIN"):
                with m.If(pending):
                    with m.If(ti.ready):
                        m.d.sync += pending.eq(0)
                        with m.If(remaining == 0):
                            m.next = "IDLE"
                with m.Elif(remaining == 0):  # zero-pad a partial last transfer
                    shift_in(Const(0, 8))
                with m.Elif(rxq.r_rdy):
                    m.d.comb += rxq.r_en.eq(1)
                    m.d.sync += remaining.eq(remaining - 1)
                    shift_in(byte)
            with m.State("READ_ARGS"):
                m.d.comb += waiting.eq(1)
                with m.If(nargs == READ_ARGS):
                    m.next = "READ_WAIT"
                with m.Elif(rxq.r_rdy):
                    m.d.comb += rxq.r_en.eq(1)
                    m.d.sync += [args.eq(Cat(args[8:], byte)), nargs.eq(nargs + 1)]
                with m.Elif(timed_out):
                    m.next = "IDLE"  # the bytes that came were consumed; nothing is left behind
            with m.State("READ_WAIT"):
                with m.If(quiet):
                    m.d.comb += [tr.dbg_en.eq(1), tr.dbg_kind.eq(args[0:8]),
                                 tr.dbg_layer.eq(args[8:16]), tr.dbg_row.eq(args[16:32])]
                    if getattr(tr, "dbg_word", None) is not None:
                        m.d.comb += tr.dbg_word.eq(args[32:48])
                    m.next = "READ_CAPTURE"
            with m.State("READ_CAPTURE"):  # dbg_data is valid one cycle after dbg_en
                m.d.sync += [sreg.eq(Cat(Const(REPLY_READ, 8), tr.dbg_data)), left.eq(1 + db)]
                m.next = "IDLE"
            with m.State("INFO"):
                with m.If(quiet):
                    m.d.sync += info_idx.eq(0)
                    m.next = "IDLE"
            with m.State("DISCARD"):  # a TRAIN frame that stopped: drop what came of it
                m.d.comb += rxq.r_en.eq(1)
                with m.If(~rxq.r_rdy):
                    m.next = "IDLE"


class TrainerBoardTop(UARTBoard):
    """:class:`UARTTrainer` on an amaranth-boards platform (clocking, UART pins and LEDs of
    :class:`~bitswarm.hw.board.UARTBoard`; no ports of its own).

    Parameters
    ----------
    model : bitswarm.golden.Model
    board : str
        A key of :data:`~bitswarm.hw.board.BOARDS`.
    config : OnChipConfig, optional
    in_lanes : int, optional
    fold : TrainerFold, optional
    baud : int
        UART rate (default 115200).
    clock_hz : float, optional
        Core clock (default :data:`TRAINER_CLOCK_HZ`, the oscillator; another one comes from a
        PLL).

    Raises
    ------
    ConfigError
        As :class:`~bitswarm.hw.board.UARTBoard` and :class:`UARTTrainer`.
    """

    def __init__(self, model: Model, board: str, config: OnChipConfig | None = None, *,
                 in_lanes: int | None = None, fold: TrainerFold | None = None,
                 baud: int = 115200, clock_hz: float | None = None):
        if clock_hz is None and board in TRAINER_CLOCK_HZ:
            clock_hz = TRAINER_CLOCK_HZ[board]

        def check():
            self._core = UARTTrainer(model, config, divisor=self._divisor, in_lanes=in_lanes, fold=fold)
            self._core._MustUse__silence = True  # elaborated by core(); inspected-only otherwise

        super().__init__(board, baud=baud, clock_hz=clock_hz, check=check)

    @property
    def trainer_core(self) -> UARTTrainer:
        return self._core

    def core(self) -> UARTTrainer:
        return self._core
