"""Settings of the local teacher server: latency, faults, rate limits, what it answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from curator.errors import CuratorError

# Faults a request can be answered with. 'ok' is a normal answer.
FAULTS = ("ok", "429", "500", "503", "hang", "drop", "malformed", "length",
          "content_filter", "echo_key", "trickle")
# Faults for items inside a batch.
BATCH_FAULTS = ("ok", "error", "expired")


def parse_fault_rates(specs: list[str]) -> dict[str, float]:
    """``["429=0.2", "hang=0.01"]`` (the ``--fault`` option) -> ``{"429": 0.2, "hang": 0.01}``;
    names and ranges are checked by :meth:`ServerConfig.validate`."""
    rates: dict[str, float] = {}
    for spec in specs:
        name, sep, rate = spec.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            rates[name.strip()] = float(rate)
        except ValueError:
            raise CuratorError(f"--fault {spec!r}: expected NAME=RATE, e.g. 429=0.2") from None
    return rates


@dataclass
class ServerConfig:
    # fixed latency of every answer, plus uniform jitter in [0, latency_jitter_ms]
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # probability of each fault per request (names from FAULTS)
    fault_rates: dict[str, float] = field(default_factory=dict)
    # faults for the next requests, in order, before the rates apply (for tests)
    fault_sequence: list[str] = field(default_factory=list)
    retry_after_s: float = 1.0         # sent with every 429
    hang_s: float = 30.0               # a 'hang' answers only after this long
    trickle_s: float = 1.0             # a 'trickle' sends its answer one byte per this long
    # rate limits the server enforces (429 beyond them), per rate_window_s
    rpm: int | None = None
    input_tpm: int | None = None
    output_tpm: int | None = None
    rate_window_s: float = 60.0
    # what it answers
    replay: list[str] = field(default_factory=list)   # TDG-format files
    script: list[str] = field(default_factory=list)   # texts when nothing is recorded
    pad_tokens: int = 0                # pad scripted texts to about this many tokens
    n_max: int = 128                   # most choices per request (1: no `n` support)
    # a programmatic teacher instead of replay/script: 'synthetic' answers the problems of
    # `curator load synthetic` with its error model (error_rate: its share of wrong
    # rationales over a problem set with uniform levels; drawn from seed)
    teacher: str | None = None
    error_rate: float = 0.0
    # batches: seconds from submission to the end of processing, and item faults
    batch_delay_s: float = 0.5
    batch_item_faults: list[str] = field(default_factory=list)
    batch_item_error_rate: float = 0.0
    seed: int = 0
    log_path: str | None = None        # JSONL request log, one line per request
    require_key: str | None = None     # answer 401 to any other key

    def validate(self) -> "ServerConfig":
        for name, rate in self.fault_rates.items():
            if name not in FAULTS:
                raise CuratorError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
            if not 0.0 <= rate <= 1.0:
                raise CuratorError(f"fault rate for {name} must be within [0, 1], got {rate}")
        if sum(self.fault_rates.values()) > 1.0 + 1e-9:
            raise CuratorError("fault rates add up to more than 1")
        for name in self.fault_sequence:
            if name not in FAULTS:
                raise CuratorError(f"unknown fault {name!r} in fault_sequence")
        for name in self.batch_item_faults:
            if name not in BATCH_FAULTS:
                raise CuratorError(f"unknown batch item fault {name!r}; known: "
                                   f"{', '.join(BATCH_FAULTS)}")
        if not self.trickle_s > 0:
            raise CuratorError("trickle_s must be positive")
        if self.teacher not in (None, "synthetic"):
            raise CuratorError(f"unknown teacher {self.teacher!r}; known: synthetic")
        if not 0.0 <= self.error_rate <= 1.0:
            raise CuratorError(f"error rate must be within [0, 1], got {self.error_rate}")
        if self.teacher is not None and (self.replay or self.script):
            raise CuratorError("--teacher answers every prompt itself: give no --replay "
                               "or --script with it")
        if self.rate_window_s <= 0:
            raise CuratorError("rate_window_s must be positive")
        return self

    def update(self, changes: dict) -> None:
        names = {f.name for f in fields(self)}
        for k, v in changes.items():
            if k not in names:
                raise CuratorError(f"unknown server setting {k!r}")
            setattr(self, k, v)
        self.validate()

    def as_dict(self) -> dict:
        return asdict(self)
