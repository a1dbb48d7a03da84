"""Board tops: the accelerator behind a UART host link, for iCEBreaker, ULX3S and Arty A7.

::

    rx ─► UARTRx ─► frame parser ─► Accelerator ─► reply serializer ─► UARTTx ─► tx
                    (SYNC, N pixels → SIMD_0-pixel slices)   (0x5A, class, C scores)

Byte protocol (8N1, one image outstanding; the full text and the host side live in
:mod:`bitswarm.sim.hostlink`): the host sends ``0xA5`` and the image's ``N`` raw pixels; the
device answers ``0x5A``, the class byte and the ``C`` scores, each ``ceil(W/8)`` bytes of
little-endian two's complement. ``N`` is the first layer's input size, ``C·H·W`` for a CNN, whose
pixels arrive in the order the accelerator streams them (HWC raster, SPEC §14). Between frames every byte but ``0xA5`` is ignored, so ``N``
zero bytes always bring host and device back in step.

:class:`UARTAccelerator` is the clock-agnostic core (pins ``rx``, ``tx``, ``led``); the tests
simulate it with a small divisor. :class:`BoardTop` puts it on an ``amaranth-boards``
platform: its base :class:`UARTBoard` (shared with the on-chip trainer's board top,
:mod:`bitswarm.hw.onchip_board`) requests the UART and two LEDs and derives the ``sync`` clock
domain.

Clocking (``BoardSpec.clock_hz``, chosen from place-and-route results, see
``bench/results/boards.md``):

- **iCEBreaker** (12 MHz oscillator): the ``SB_PLL40_PAD`` on the clock pad (pin 35) makes the
  core clock, 36 MHz by default (the default digits model's optimizer fold reaches ~40 MHz);
  parameters from :func:`ice40_pll` (the ``icepll`` search: ``f = 12 MHz · (DIVF+1) / ((DIVR+1) · 2^DIVQ)``, VCO 533..1066 MHz, PFD 10..133 MHz).
- **ULX3S** (25 MHz oscillator): an ``EHXPLLL`` makes 75 MHz by default (builds reach 80-120 MHz,
  see ``bench/results/boards.md``; :func:`ecp5_pll`, the ``ecppll`` search:
  ``f = 25 MHz · CLKFB_DIV / CLKI_DIV``, VCO = ``f · CLKOP_DIV`` in 400..800 MHz).
- **Arty A7** (100 MHz oscillator): the board clock, no PLL (Vivado flow, not run here).

With a PLL the ``sync`` domain is held in reset until the PLL has locked and then for
``2^10`` more cycles (iCE40 block RAM reads garbage for a few microseconds after
configuration); without one, the platform's default domain (which does the same) is used.

LEDs: ``led[0]`` toggles on every reply, ``led[1]`` lights (sticky) on a UART overrun or
framing error.
"""


import importlib
from dataclasses import dataclass

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import Model

from .accel import Accelerator
from .plan import REPLY, SYNC, AccelPlan
from .uart import UARTRx, UARTTx, _check_divisor, uart_divisor

__all__ = ["SYNC", "REPLY", "BoardSpec", "BOARDS", "UARTAccelerator", "UARTBoard", "BoardTop",
           "ice40_pll", "ecp5_pll", "board_spec"]

_POR_BITS = 10


@dataclass(frozen=True)
class BoardSpec:
    """A supported board: its amaranth-boards platform, oscillator and default core clock."""

    name: str
    platform: str  # "module:Class" in amaranth_boards
    family: str  # "ice40", "ecp5" or "xilinx7"
    osc_hz: float
    clock_hz: float
    constraints: str  # raw constraint file in constraints/
    artifact: str  # bitstream suffix produced by the open flow ("" = not built here)

    def platform_class(self):
        mod, cls = self.platform.split(":")
        return getattr(importlib.import_module(mod), cls)


BOARDS: dict[str, BoardSpec] = {
    "icebreaker": BoardSpec("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform",
                            "ice40", 12e6, 36e6, "icebreaker.pcf", "bin"),
    "ulx3s": BoardSpec("ulx3s", "amaranth_boards.ulx3s:ULX3S_85F_Platform",
                       "ecp5", 25e6, 75e6, "ulx3s.lpf", "bit"),
    "arty": BoardSpec("arty", "amaranth_boards.arty_a7:ArtyA7_35Platform",
                      "xilinx7", 100e6, 100e6, "arty_a7_35t.xdc", ""),
}


def board_spec(name: str) -> BoardSpec:
    """The :class:`BoardSpec` called ``name``; :class:`ConfigError` naming the choices."""
    if name not in BOARDS:
        raise ConfigError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


# -- PLL parameter searches -----------------------------------------------------------------
def ice40_pll(f_in: float, f_out: float) -> dict:
    """iCE40 ``SB_PLL40`` (SIMPLE feedback) settings closest to ``f_out`` (the icepll search).

    Returns ``{"divr", "divf", "divq", "filter_range", "f_out"}`` (``f_out`` achieved).

    Raises
    ------
    ConfigError
        If no legal setting comes within 1 % of ``f_out``.
    """
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                if best is None or abs(f - f_out) < abs(best[0] - f_out):
                    best = (f, divr, divf, divq, pfd)
    if best is None or abs(best[0] - f_out) > 0.01 * f_out:
        raise ConfigError(f"the iCE40 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    f, divr, divf, divq, pfd = best
    fr = 1 + sum(pfd >= t for t in (17e6, 26e6, 44e6, 66e6, 101e6))
    return {"divr": divr, "divf": divf, "divq": divq, "filter_range": fr, "f_out": f}


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """ECP5 ``EHXPLLL`` settings (CLKOP feedback) closest to ``f_out`` (the ecppll search).

    Returns ``{"clki_div", "clkfb_div", "clkop_div", "f_out", "vco"}``; among equally
    close settings the one with the VCO nearest 600 MHz.

    Raises
    ------
    ConfigError
        If no legal setting comes within 1 % of ``f_out``.
    """
    best = None  # key: (frequency error, distance of the VCO from 600 MHz), as ecppll
    for clki in range(1, 129):
        pfd = f_in / clki
        if pfd < 3.125e6:
            break
        for fb in range(1, 81):
            f = pfd * fb
            if not 3.125e6 <= f <= 400e6:
                continue
            for op in range(1, 129):
                vco = f * op
                if 400e6 <= vco <= 800e6:
                    key = (abs(f - f_out), abs(vco - 600e6))
                    if best is None or key < best[0]:
                        best = (key, f, clki, fb, op, vco)
    if best is not None:
        best = best[1:]
    if best is None or abs(best[0] - f_out) > 0.01 * f_out:
        raise ConfigError(f"the ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    f, clki, fb, op, vco = best
    return {"clki_div": clki, "clkfb_div": fb, "clkop_div": op, "f_out": f, "vco": vco}


# -- the clock-agnostic core ----------------------------------------------------------------
def _check_core(model, plan) -> AccelPlan:
    """Validate a model and plan for the host link; returns the plan (default: auto)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a bitswarm.golden.Model, not {model!r}")
    c = model.cfg.layers[-1].n_out
    if c > 256:
        raise ConfigError(f"the host link sends the class as one byte: at most 256 classes, "
                          f"the model has {c}")
    if plan is None:
        return AccelPlan.auto(model.cfg)
    if not isinstance(plan, AccelPlan):
        raise TypeError(f"plan must be an AccelPlan, not {plan!r}")
    if plan.cfg.to_dict() != model.cfg.to_dict():
        raise ConfigError("the plan was made for a different model configuration")
    return plan


class UARTAccelerator(wiring.Component):
    """The accelerator with a UART host link (the protocol above).

    Parameters
    ----------
    model : bitswarm.golden.Model
    plan : AccelPlan, optional
        Folding of the accelerator (default :meth:`AccelPlan.auto`).
    divisor : int
        Clock cycles per UART bit (``f_clk / baud``; :func:`~bitswarm.hw.uart.uart_divisor`).

    Members
    -------
    rx : In(1)
        Serial line from the host (idle 1).
    tx : Out(1)
        Serial line to the host (idle 1).
    led : Out(2)
        ``led[0]`` toggles per reply; ``led[1]`` is a sticky UART error flag.

    Timing: a frame's pixels are packed into ``SIMD_0``-pixel slices as they arrive (a partial
    last slice is zero-padded, one cycle per missing lane) and each slice is handed to the
    accelerator, which accepts it within a few cycles when idle; the reply starts one cycle after
    the accelerator's result (``plan.latency_cycles()`` after the last slice) and takes
    ``10 · divisor`` cycles per byte. While a slice or a reply waits, the link does not read the
    receiver, so a host that sends a second frame before the first reply risks an overrun (hence
    one image outstanding).

    Raises
    ------
    TypeError, ConfigError
        On a bad model, plan or divisor; or more than 256 classes (one class byte).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    led: Out(2)

    def __init__(self, model: Model, plan: AccelPlan | None = None, *, divisor: int):
        try:
            plan = _check_core(model, plan)
            self._divisor = _check_divisor(divisor)
        except Exception:
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        # the subcomponents are built in elaborate(): nothing is left unused if this is not
        self._model, self._plan = model, plan
        super().__init__()

    @property
    def model(self) -> Model:
        return self._model

    @property
    def plan(self) -> AccelPlan:
        return self._plan

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self._divisor)
        m.submodules.utx = utx = UARTTx(self._divisor)
        m.submodules.accel = accel = Accelerator(self._model, self._plan)
        lay = self._model.cfg.layers
        n_pix, simd = lay[0].in_size, self.plan.folds[0].simd
        classes, zw = lay[-1].n_out, lay[-1].z_width
        sb = -(-zw // 8)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        # -- frame parser: SYNC, then n_pix pixels shifted into a SIMD_0-lane slice ----------
        active = Signal()
        pending = Signal()  # slice complete, offered to the accelerator
        remaining = Signal(range(n_pix + 1))
        lane = Signal(range(max(2, simd)))
        slice_ = Signal(8 * simd)
        byte = urx.o_stream.payload.data
        ai = accel.i_stream
        m.d.comb += [ai.valid.eq(pending), ai.payload.x.as_value().eq(slice_)]

        def shift_in(value):
            m.d.sync += slice_.eq(value if simd == 1 else (slice_ >> 8) | (value << (8 * simd - 8)))
            with m.If(lane == simd - 1):
                m.d.sync += [lane.eq(0), pending.eq(1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        with m.If(~active):
            m.d.comb += urx.o_stream.ready.eq(1)
            with m.If(urx.o_stream.valid & (byte == SYNC)):
                m.d.sync += [active.eq(1), remaining.eq(n_pix), lane.eq(0)]
        with m.Elif(pending):
            with m.If(ai.ready):
                m.d.sync += pending.eq(0)
                with m.If(remaining == 0):
                    m.d.sync += active.eq(0)
        with m.Elif(remaining == 0):  # zero-pad a partial last slice
            shift_in(Const(0, 8))
        with m.Else():
            m.d.comb += urx.o_stream.ready.eq(1)
            with m.If(urx.o_stream.valid):
                m.d.sync += remaining.eq(remaining - 1)
                shift_in(byte)

        # -- reply serializer: the whole reply loaded into a shift register, one byte out at a
        # time (no byte-select multiplexer between the accelerator's result and the UART) -----
        ao = accel.o_stream
        cls8 = Signal(8)
        m.d.comb += cls8.eq(ao.payload.cls)
        reply = [Const(REPLY, 8), cls8]
        for j in range(classes):
            ext = Signal(signed(8 * sb), name=f"score_ext{j}")
            m.d.comb += ext.eq(ao.payload.scores[j])
            reply += [ext[8 * k:8 * k + 8] for k in range(sb)]
        sreg = Signal(8 * len(reply))
        left = Signal(range(len(reply) + 1))  # bytes still to send
        m.d.comb += [utx.i_stream.payload.data.eq(sreg[:8]), utx.i_stream.valid.eq(left != 0)]
        with m.If(utx.i_stream.valid & utx.i_stream.ready):
            m.d.sync += [sreg.eq(sreg >> 8), left.eq(left - 1)]
        with m.If((left == 0) & ao.valid):
            m.d.comb += ao.ready.eq(1)
            m.d.sync += [sreg.eq(Cat(*reply)), left.eq(len(reply)),
                         self.led[0].eq(~self.led[0])]
        with m.If(urx.overrun | urx.frame_err):
            m.d.sync += self.led[1].eq(1)
        return m


# -- the platform top -----------------------------------------------------------------------
class UARTBoard(wiring.Component):
    """A UART core (pins ``rx``, ``tx``, ``led[2]``) on an amaranth-boards platform: the clocking
    (PLL and power-on reset, module docstring), the UART pins and two LEDs. No ports of its own.

    The base of every board top: :class:`BoardTop` (the accelerator) and
    :class:`~bitswarm.hw.onchip_board.TrainerBoardTop` (the on-chip trainer) differ only in the
    core that :meth:`core` builds (at elaboration, so nothing is left unused by an inspected top).

    Parameters
    ----------
    board : str
        A key of :data:`BOARDS`.
    baud : int
        UART rate (default 115200); the divisor is derived from the core clock.
    clock_hz : float, optional
        Core clock; default the board's ``clock_hz``. A PLL is instantiated when it differs from
        the oscillator.
    check : callable, optional
        Called after the clocking checks (a subclass validates its core's arguments there), so
        that every failing constructor leaves nothing to warn about.

    Raises
    ------
    ConfigError
        Unknown board, a baud rate the clock cannot make, or a clock the PLL cannot make (or a
        PLL requested on a board without one here).
    """

    def __init__(self, board: str, *, baud: int = 115200, clock_hz: float | None = None,
                 check=None):
        try:
            self._spec = board_spec(board)
            f = float(clock_hz) if clock_hz is not None else self._spec.clock_hz
            self._pll = None
            if f != self._spec.osc_hz:
                if self._spec.family == "ice40":
                    self._pll = ice40_pll(self._spec.osc_hz, f)
                elif self._spec.family == "ecp5":
                    self._pll = ecp5_pll(self._spec.osc_hz, f)
                else:
                    raise ConfigError(f"{board}: only the {self._spec.osc_hz / 1e6:g} MHz board clock "
                                      f"is supported, not {f / 1e6:g} MHz")
                f = self._pll["f_out"]
            self._clock_hz = f
            self._baud = baud
            self._divisor = uart_divisor(f, baud)
            if check is not None:
                check()
        except Exception:
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        super().__init__({})

    @property
    def spec(self) -> BoardSpec:
        return self._spec

    @property
    def clock_hz(self) -> float:
        """The core clock actually made (the PLL's achieved frequency)."""
        return self._clock_hz

    @property
    def pll(self) -> dict | None:
        return self._pll

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def baud(self) -> int:
        return self._baud

    def core(self) -> wiring.Component:
        """The UART core (``rx``, ``tx``, ``led``) at :attr:`divisor`; subclasses build it."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        if self._pll is not None:
            self._clocking(m, platform)
        m.submodules.core = core = self.core()
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.led0_buf = led0 = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led1_buf = led1 = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [
            core.rx.eq(rx_buf.i),
            tx_buf.o.eq(core.tx),
            led0.o.eq(core.led[0]),
            led1.o.eq(core.led[1]),
        ]
        return m

    def _clocking(self, m: Module, platform) -> None:
        spec, p = self._spec, self._pll
        clk = Signal()
        lock = Signal()
        if spec.family == "ice40":
            pad = platform.request(platform.default_clk, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=p["divr"], p_DIVF=p["divf"], p_DIVQ=p["divq"],
                p_FILTER_RANGE=p["filter_range"],
                i_PACKAGEPIN=pad.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            m.submodules.osc_buf = osc = io.Buffer(
                "i", platform.request(platform.default_clk, 0, dir="-"))
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{spec.osc_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{p['f_out'] / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["clki_div"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["clkop_div"],
                p_CLKOP_CPHASE=p["clkop_div"] - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["clkfb_div"],
                i_CLKI=osc.i, i_CLKFB=clk, i_RST=Const(0), i_STDBY=Const(0),
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
                o_CLKOP=clk, o_LOCK=lock)
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.domains.sync = cd_sync = ClockDomain("sync")
        timer = Signal(_POR_BITS + 1)
        m.d.comb += [ClockSignal("por").eq(clk), cd_sync.clk.eq(clk),
                     cd_sync.rst.eq(~timer[_POR_BITS])]
        with m.If(~lock):
            m.d.por += timer.eq(0)
        with m.Elif(~timer[_POR_BITS]):
            m.d.por += timer.eq(timer + 1)
        platform.add_clock_constraint(clk, self._clock_hz)


class BoardTop(UARTBoard):
    """:class:`UARTAccelerator` on an amaranth-boards platform (:class:`UARTBoard`: clocking,
    pins; no ports of its own).

    Parameters
    ----------
    model : bitswarm.golden.Model
    board : str
        A key of :data:`BOARDS`.
    plan : AccelPlan, optional
    baud : int
        UART rate (default 115200); the divisor is derived from the core clock.
    clock_hz : float, optional
        Core clock; default the board's ``clock_hz``. A PLL is instantiated when it differs from
        the oscillator.

    Raises
    ------
    ConfigError
        Unknown board, a baud rate the clock cannot make, or a clock the PLL cannot make (or a
        PLL requested on a board without one here); a bad model or plan.
    """

    def __init__(self, model: Model, board: str, plan: AccelPlan | None = None, *,
                 baud: int = 115200, clock_hz: float | None = None):
        def check():
            self._plan = _check_core(model, plan)
            self._model = model

        super().__init__(board, baud=baud, clock_hz=clock_hz, check=check)

    @property
    def plan(self) -> AccelPlan:
        return self._plan

    def core(self) -> UARTAccelerator:
        return UARTAccelerator(self._model, self._plan, divisor=self._divisor)
