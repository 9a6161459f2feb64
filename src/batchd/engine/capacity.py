"""Capacity seeking: how many tries one worker keeps at one backend.

A continuous-batching server (vLLM, SGLang, llama.cpp, TGI) runs up to some number
of sequences at once and queues the rest. Below that knee more requests in flight
add throughput (each step costs a little more, but serves more sequences); above it
they only wait in the server's queue, which delays everyone else's requests. The
:class:`Controller` finds the knee and holds there, from the answers' timings alone
or, when the server publishes its load (``/metrics``), from that.

**From timings** (BBR-like, in rounds). Each answer gives a *unit latency* ``u``
(seconds per output token, or per request when the answer has no usage). A round
opens when the pipe is full at the round's limit; the first try sent into the full
pipe is the last in line at the server, so it is the first to show a queue, and a
round lasts about one answer's latency.

- *startup*: from 1 in flight, the limit grows x8, x4 or x2 per round while
  throughput (Little's law: in flight / latency) grows at least as load ** KNEE_GAIN,
  or while its tries come back within :data:`MIN_QUEUE_SECONDS` of the last level's
  latency, so a 256-sequence server is reached within four round trips, and an
  upstream that answers in milliseconds is driven to the ceiling;
- *search*: the knee lies between the last two levels. A line through the levels
  startup found free (a step costs a + b x running) gives the no-queue latency; where
  it meets the saturated rate is the first guess, then a geometric bisection: a level
  is *queued* when the slow tail of its tries comes back :data:`QUEUE_RISE` times
  (and :data:`MIN_QUEUE_SECONDS`) later than the line says;
- *hold*: stay there; every :data:`HOLD_ROUNDS` rounds probe 5% up and keep it only
  if no queue shows; a queue at the held level (someone else loads the server) cuts
  in proportion, and after a few cuts that do not help the slower server is taken as
  the new normal.

**From the server's load** (``running``/``waiting`` gauges, polled): startup grows
at most x4 per round; a standing queue above a small lead (``max(1, running / 16)``) takes back
our share of the excess at once; below half the lead the limit grows by 1/16.

**Background mode** keeps the server's per-token latency within ``slowdown`` of
what it is with us idle (measured on our own tries with at most
:data:`IDLE_IN_FLIGHT` in flight, re-measured by draining to one try every
:data:`IDLE_REFRESH` seconds), grows below :data:`BACKGROUND_AIM` of that bound
(half the way to where the latency line reaches it, per round), backs off
multiplicatively above it, and keeps a publishing server's queue empty.

**429** (every mode) cuts the limit to :data:`RATE_CUT` of the tries in flight, once
per round trip (answers to tries sent before the last cut do not cut again), pauses
new tries for the ``Retry-After`` asked, and remembers where it happened so that the
probes near that level are rare. Refused again at that same level (a probe back to it),
the upstream limits requests in flight: the limit holds one below it, with no cut.

The controller is pure bookkeeping on a clock passed in, so tests drive it in
simulated time; :mod:`batchd.engine.limits` wires it to real tries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

from batchd.engine.tries import Level, Ticket

Phase = Literal["startup", "search", "hold", "background", "fixed"]

INITIAL = 1
"""First limit of a backend (background mode starts at 1)."""
KNEE_GAIN = 0.5
"""Startup ends when throughput grows less than load**KNEE_GAIN (doubling: +41%)."""
FULL = 0.95
"""Without a latency line: a level getting this share of the saturated rate is past the knee."""
QUEUE_RISE = 1.15
"""A try back this much later than the no-queue latency line says has queued."""
MIN_QUEUE_SECONDS = 0.02
"""...and at least this many seconds later: a wait of a few milliseconds is nobody's
concern, and where answers come back that fast (a cache, a tiny model, a proxy) the
wait is mostly our own event loop's, which more tries in flight make cheaper per try."""
HOLD_ROUNDS = 3
"""Rounds at the knee between probes."""
RATE_CUT = 0.85
"""A 429 leaves this share of the tries that were in flight."""
HOLD_SECONDS = 0.5
"""After a 429 cut, no growth for this long (several workers would each overshoot)."""
IDLE_IN_FLIGHT = 2
BACKGROUND_AIM = 0.85
"""Background mode grows while its tries' per-token latency is below this share of the
bound (``slowdown`` x idle), and holds between it and the bound."""
IDLE_REFRESH = 30.0
LOAD_POLLS = 4
"""Server gauges: the queue is the least of this many readings (a standing queue)."""
LOAD_FRESH = 2.0
"""Server load gauges older than this (seconds) are not used."""
RETRY_AFTER_CAP = 60.0
RAMP_SHARE = 0.1
RAMP_MIN = 0.1
"""Startup spreads a raise over this share of an answer's latency, and at least this
many seconds (a refusal's round trip through a busy event loop is some milliseconds)."""

class Controller:
    """The limit of one backend in one worker (see the module docstring)."""

    def __init__(
        self,
        ceiling: int,
        *,
        adaptive: bool = True,
        background: bool = False,
        slowdown: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.adaptive = adaptive
        self.background = background
        self.slowdown = max(1.0, slowdown)
        self.clock = clock
        self.phase: Phase = (
            "fixed" if not adaptive else "background" if background else "startup"
        )
        start = self.ceiling if not adaptive else 1 if background else INITIAL
        self.limit = float(min(self.ceiling, start))
        self._ramp_from = self.limit
        self._ramp_start = -math.inf
        self._ramp_time = 0.0
        self._latency = 0.0
        self.in_flight = 0
        self.epoch = 0
        self.cuts = 0
        """Times the limit was cut after a 429."""
        self.refused = 0
        self.paused_until = 0.0
        self.server_running: int | None = None
        self.server_waiting: int | None = None
        self._load_at = -math.inf
        self._waits: list[int] = []
        # Rounds.
        self._seq = 0
        self._filled_seq: int | None = 0
        self._round_seq = 0
        self._post: list[float] = []
        self._round_end: float | None = None
        self._fill_time = self._last = clock()
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._window_tries = 0
        self._area = 0.0
        self._samples: list[tuple[int, float]] = []
        self._prev: Level | None = None
        self._free: list[Level] = []
        self._shift = 0.0
        self._lo = self._hi = 1.0
        self._hi_rate = math.inf
        self._before_probe = 1.0
        self._cuts_in_row = 0
        self._rounds_held = 0
        self._probe: Literal["up"] | None = None
        self._rate_cap: float | None = None
        self._cap_probes = 0
        self._hold_until = -math.inf
        # Background mode.
        self._idle_unit: float | None = None
        self._idle_at = -math.inf
        self._draining_from: float | None = None

    # ------------------------------------------------------------------ tries

    def send(self) -> Ticket:
        self._account()
        self.in_flight += 1
        self._seq += 1
        if self._filled_seq is None and self.in_flight >= int(self.limit):
            # Tries sent from now on find the pipe full at this round's limit.
            self._fill()
        return Ticket(self.clock(), self.epoch, self._seq, self.in_flight)

    def done(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        retry_after: float | None = None,
        tokens: int | None = None,
    ) -> None:
        self._account()
        n = self.in_flight
        self.in_flight = max(0, n - 1)
        if not self.adaptive:
            return
        if status == 429:
            self._refused(ticket, n, retry_after)
            return
        if status is None or status >= 500:
            return  # no answer, or a failure: says nothing about capacity
        now = self.clock()
        unit = max(1e-6, (now - ticket.sent) / max(1, tokens or 1))
        if self.background and max(n, ticket.load) <= IDLE_IN_FLIGHT:
            self._idle_sample(unit, now)
        if self._filled_seq is None:
            return
        if ticket.seq >= self._round_seq:
            # Only tries sent into the full pipe at this limit speak for it.
            self._window_tokens += max(1, tokens or 1)
            self._window_seconds += now - ticket.sent
            self._window_tries += 1
        if ticket.seq >= self._filled_seq:
            # The first try sent into the full pipe is back: it waited behind all that
            # was in flight, so it is the first to show a queue at the server. Past
            # startup (where a rough figure will do) the round goes on for as long
            # again and judges by the slow tail of all tries sent since the fill: a
            # server that finishes requests in lockstep (equal lengths) queues only
            # the last of each burst of tries, and those come back a turnover later.
            self._post.append(unit)
            if self.phase == "startup":
                self._latency = now - ticket.sent
                self._end_round(now, unit)
                return
            if self._round_end is None:
                self._round_end = now + 1.5 * (now - ticket.sent)
            if now >= self._round_end:
                tail = sorted(self._post)[int(0.9 * (len(self._post) - 1))]
                self._end_round(now, tail)

    def on_load(self, running: int, waiting: int) -> None:
        """The server's own gauges (polled from its ``/metrics``)."""
        self.server_running, self.server_waiting = running, waiting
        self._load_at = self.clock()
        # A standing queue, not the tries that just arrived and wait for the next
        # step: the least of the readings since the limit last changed.
        self._waits.append(waiting)
        del self._waits[:-LOAD_POLLS]
        if not self.adaptive or len(self._waits) < 2 or self.clock() < self._hold_until:
            return
        standing = min(self._waits)
        share = self.in_flight / max(1, running + waiting)
        lead = 0 if self.background else max(1, running // 16)
        if standing > lead:
            if self.phase in ("startup", "search"):
                self.phase = "hold"
            self._set(min(self.limit, self.in_flight - max(1.0, (standing - lead) * share)))
        elif (
            self.phase == "hold"
            and standing <= lead // 2
            and self.in_flight >= int(self.limit) - 1
            and (self._rate_cap is None or self.limit + 1 < self._rate_cap)
        ):
            self._set(self.limit + max(1.0, self.limit / 16))

    def set_ceiling(self, ceiling: int) -> None:
        old, self.ceiling = self.ceiling, max(1, ceiling)
        if not self.adaptive:
            self.limit = float(self.ceiling)
        elif self.ceiling > old and self.limit >= old and self.phase == "hold":
            # Held at the old ceiling, not at a knee: follow it up (a queue there is
            # judged at the next round), short of where the upstream refused before.
            cap = self._rate_cap if self._rate_cap is not None else math.inf
            self._enter_hold(max(self.limit, min(float(self.ceiling), cap - 1)))
        self.limit = min(self.limit, float(self.ceiling))

    @property
    def window(self) -> float:
        """Tries that may be in flight right now: the limit, except while startup raises
        it, spread over a tenth of an answer's latency (at least 0.1 s), so that a rate-limited
        upstream refuses the few tries sent before its first 429 is back, not the
        whole raise."""
        if self._ramp_time <= 0:
            return self.limit
        done = (self.clock() - self._ramp_start) / self._ramp_time
        if done >= 1:
            self._ramp_time = 0.0
            return self.limit
        return self._ramp_from + (self.limit - self._ramp_from) * done

    @property
    def load_known(self) -> bool:
        return self.clock() - self._load_at < LOAD_FRESH

    @property
    def queue_estimate(self) -> float:
        """The server's queue: its gauge when known, else our tries above the knee."""
        if self.load_known and self.server_waiting is not None:
            return float(self.server_waiting)
        if self.phase != "hold":
            return 0.0
        return max(0.0, self.in_flight - self._lo)

    # --------------------------------------------------------------- internal

    def _set(self, limit: float) -> None:
        old = self.window
        self.limit = max(1.0, min(float(self.ceiling), limit))
        if self.phase == "startup" and self.limit > old:
            self._ramp_from, self._ramp_start = old, self.clock()
            self._ramp_time = max(RAMP_MIN, RAMP_SHARE * self._latency)
        else:
            self._ramp_time = 0.0
        self._waits.clear()  # judge the gauges afresh at the new limit
        self._new_round()

    def _new_round(self) -> None:
        # The window opens at the next send that fills the pipe: after a cut, only once
        # the tries above the new limit have drained.
        self._filled_seq = None
        self._post = []
        self._round_end = None

    def _fill(self) -> None:
        self._filled_seq = self._seq
        self._fill_time = self._last = self.clock()
        self._area = 0.0
        self._round_seq = self._seq
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._window_tries = 0

    def _account(self) -> None:
        now = self.clock()
        self._area += self.in_flight * (now - self._last)
        self._last = now

    def _refused(self, ticket: Ticket, n: int, retry_after: float | None) -> None:
        self.refused += 1
        now = self.clock()
        if retry_after:
            self.paused_until = max(self.paused_until, now + min(retry_after, RETRY_AFTER_CAP))
        # Where the upstream refused: the tries in flight when this one was sent
        # (a burst sent at once is refused from its first try over the limit on;
        # those refusals come back quickly, while the burst is still in flight).
        level = float(min(n, ticket.load))
        if ticket.epoch != self.epoch - 1 and ticket.epoch != self.epoch:
            return
        if ticket.epoch == self.epoch - 1:
            # Sent before the last cut: that congestion was already answered, but a
            # lower refusal point from the same burst still lowers the limit.
            if self._rate_cap is not None and level < self._rate_cap:
                self._rate_cap = level
                self._set(min(self.limit, max(1.0, math.floor((level - 1) * RATE_CUT))))
            return
        self.epoch += 1
        self.cuts += 1
        # Refused again where it was refused before (a probe to that level): a limit on
        # requests in flight, and the level below it was fine; hold there, no cut.
        again = self._rate_cap is not None and level >= self._rate_cap and level > 1
        self._rate_cap = level
        if self.phase in ("startup", "search"):
            self.phase = "hold"
        self._probe = None
        self._hold_until = now + max(HOLD_SECONDS, min(retry_after or 0.0, 5.0))
        if again:
            self._set(min(self.limit, level - 1))
            return
        self._set(max(1.0, math.floor(min(self.limit, level - 1) * RATE_CUT)))

    def _end_round(self, now: float, unit: float) -> None:
        span = max(1e-6, now - self._fill_time)
        n_mean = self._area / span
        # Little's law on the window: in flight / latency, in tokens per second. (A
        # count of tokens over the window would swing with where its ends cut the
        # cohorts of answers that a server finishing requests in lockstep returns.)
        rate = n_mean * self._window_tokens / max(1e-9, self._window_seconds)
        tries = max(1, self._window_tries)
        level = Level(
            self.limit,
            rate,
            unit,
            latency=self._window_seconds / tries,
            tokens=self._window_tokens / tries,
        )
        app_limited = n_mean < 0.8 * self.limit
        if self.background:
            self._background_round(level, app_limited)
        elif (self.load_known and self.phase != "startup") or now < self._hold_until:
            self._new_round()  # the gauges steer (or a 429 hold): timings only wait
        elif app_limited:
            self._new_round()  # not enough work to fill the limit: nothing learnt
        elif self.phase == "startup":
            self._startup_round(level)
        elif self.phase == "search":
            self._search_round(level)
        else:
            self._hold_round(level)

    def _startup_round(self, level: Level) -> None:
        prev = self._prev
        self._prev = level
        if prev is None:
            self._free.append(level)
            self._set(level.limit * 8)
            return
        factor = level.limit / prev.limit
        # Elasticity of throughput in load: 1 while every try adds its share, 0 past
        # the knee (log-log, so the factor used does not matter).
        gain = math.log(max(1e-9, level.rate / prev.rate)) / math.log(factor) if factor > 1 else 0
        if gain >= KNEE_GAIN or level.latency < prev.latency + MIN_QUEUE_SECONDS:
            # Still gaining, or answers still back within milliseconds: what little
            # throughput more tries add, they cost nobody a noticeable wait.
            self._free.append(level)
            if level.limit < self.ceiling:
                factor = 8 if gain >= 0.8 else 4 if gain >= 0.6 else 2
                if self.load_known:
                    factor = min(factor, 4)  # the gauges show an overshoot, but polls lag
                self._set(level.limit * factor)
            else:
                self._enter_hold(level.limit)  # at the ceiling and still gaining
            return
        # Past the knee: it lies between the last level without a queue and this one.
        self._lo, self._hi = prev.limit, level.limit
        self._hi_rate = level.limit / level.unit
        self.phase = "search"
        guess = self._knee_guess()
        if guess is not None and self._lo < guess < self._hi:
            self._set(round(guess))  # Little's law on the line: try the knee itself
        else:
            self._bisect()

    def _knee_guess(self) -> float | None:
        """Where the no-queue line meets the saturated rate: n = rate x (c + k n)."""
        if len(self._free) < 2:
            return None
        c = self._model(0.0)
        k = self._model(1.0) - c
        denom = 1.0 - self._hi_rate * k
        return self._hi_rate * c / denom if denom > 0.05 and c > 0 else None

    def _model(self, limit: float) -> float:
        """Unit latency expected at ``limit`` with no queue at the server: a line
        through the levels startup found free (a step costs a + b x running)."""
        pts = self._free
        if len(pts) < 2:
            return pts[0].unit if pts else math.inf
        mx = sum(p.limit for p in pts) / len(pts)
        my = sum(p.unit for p in pts) / len(pts)
        sxx = sum((p.limit - mx) ** 2 for p in pts)
        slope = max(0.0, sum((p.limit - mx) * (p.unit - my) for p in pts) / sxx) if sxx else 0.0
        return my + slope * (limit - mx) + self._shift

    def _queued(self, level: Level) -> bool:
        """The try that filled the pipe waited at the server: it came back well later
        than the no-queue line says (the last one in is the first to queue)."""
        if len(self._free) < 2:
            # No line yet (one free level): queued if it gets what the saturated
            # level got, and its tries waited noticeably longer than the free one's.
            free = self._free[0].latency if self._free else 0.0
            return (
                level.limit / level.unit >= FULL * self._hi_rate
                and level.latency > free + MIN_QUEUE_SECONDS
            )
        expected = self._model(level.limit)
        return (
            level.unit > QUEUE_RISE * expected
            and (level.unit - expected) * level.tokens > MIN_QUEUE_SECONDS
        )

    def _search_round(self, level: Level) -> None:
        if self._queued(level):
            self._hi = level.limit
        else:
            self._lo = level.limit
            self._free.append(level)
        self._bisect()

    def _bisect(self) -> None:
        lo, hi = self._lo, self._hi
        if hi / lo <= 1.1 or hi - lo <= 1:
            self._enter_hold(lo)
        else:
            self._set(round(math.sqrt(lo * hi)))

    def _enter_hold(self, limit: float) -> None:
        self.phase = "hold"
        self._rounds_held = 0
        self._probe = None
        self._cuts_in_row = 0
        self._set(limit)

    def _hold_round(self, level: Level) -> None:
        probe, self._probe = self._probe, None
        if self._queued(level):
            if probe is not None:
                self._set(self._before_probe)  # the probe found the knee: back
                return
            self._cuts_in_row += 1
            if self._cuts_in_row > 3:
                # Cutting did not bring latency back: the server got slower for
                # everyone (others' load). Take this as the new normal.
                self._shift += level.unit - QUEUE_RISE * self._model(level.limit) * 0.9
                self._cuts_in_row = 0
                self._new_round()
                return
            self._set(level.limit * max(0.5, self._model(level.limit) / level.unit * QUEUE_RISE))
            return
        self._cuts_in_row = 0
        self._rounds_held += 1
        if probe is None and self._rounds_held < HOLD_ROUNDS:
            self._new_round()
            return
        self._rounds_held = 0
        target = max(level.limit + 1, level.limit * 1.05)
        if self._rate_cap is not None and target >= self._rate_cap:
            # Where the upstream refused before: go there only every third turn.
            self._cap_probes += 1
            if self._cap_probes % 3:
                self._new_round()
                return
            target = self._rate_cap
        if target > self.ceiling:
            self._new_round()
            return
        self._probe = "up"
        self._before_probe = level.limit
        self._set(target)

    # ------------------------------------------------------------ background

    def _background_step(self, ratio: float) -> float:
        """How much to raise the limit when our tries' per-token latency is ``ratio`` times
        the idle one, below the aim: half the way to where a line through (idle, 1) and
        (limit, ratio) reaches the aim (a step costs a + b x running), at most doubling,
        at least one more try. A steady +1 took most of a short batch to get there."""
        aim = BACKGROUND_AIM * self.slowdown
        extra = self.limit - IDLE_IN_FLIGHT
        if ratio <= 1.0 or extra <= 0:
            return self.limit  # no cost seen yet: double
        target = IDLE_IN_FLIGHT + (aim - 1.0) * extra / (ratio - 1.0)
        return min(self.limit, max(1.0, (target - self.limit) / 2))

    def _idle_sample(self, unit: float, now: float) -> None:
        """A try sent and answered while we had (nearly) nothing else in flight."""
        stale = now - self._idle_at > IDLE_REFRESH
        if self._idle_unit is None or stale or unit < self._idle_unit:
            self._idle_unit = unit
            self._idle_at = now
        if self._draining_from is not None:
            self._set(self._draining_from)
            self._draining_from = None

    def _background_round(self, level: Level, app_limited: bool) -> None:
        now = self.clock()
        idle = self._idle_unit
        if idle is None:
            self._new_round()
            return
        if self._draining_from is None and now - self._idle_at > IDLE_REFRESH:
            # Re-measure the server's latency with us (nearly) idle: others' load moves it.
            self._draining_from = self.limit
            self._set(1)
            return
        if self._draining_from is not None:
            self._new_round()
            return
        bound = idle * self.slowdown
        waiting = self.server_waiting if self.load_known else 0
        if level.unit > bound or (waiting or 0) > 0:
            self._set(self.limit * 0.8)
        elif level.unit < BACKGROUND_AIM * bound and not app_limited and now >= self._hold_until:
            self._set(self.limit + self._background_step(level.unit / idle))
        else:
            self._new_round()
