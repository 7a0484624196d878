"""Experiment tracking: ``--report-to none|tensorboard|wandb|trackio|mlflow`` on every
training command, passed to ``transformers`` (``TrainingArguments.report_to``), whose
integration callbacks log the run's arguments (every hyper-parameter, the method's
included) when training begins, the logged losses, learning rate and gradient norm every
``--logging-steps``, and the final metrics (``train_loss``, ``train_runtime``, ...) when
it ends.

Every tracker writes under the run's OUT unless the user's environment says otherwise,
and none needs a network:

* ``tensorboard``: event files in ``OUT/runs`` (``TENSORBOARD_LOGGING_DIR``);
* ``mlflow``: a ``file:`` tracking store in ``OUT/mlruns`` (``MLFLOW_TRACKING_URI``);
* ``wandb``: its files in ``OUT/wandb`` (``WANDB_DIR``); offline with ``WANDB_MODE=offline``;
* ``trackio``: its local database in ``OUT/trackio`` (``TRACKIO_DIR``).

Imports no torch (the CLI checks the option before any model code loads).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from curator.errors import CuratorError

TRACKERS = ("none", "tensorboard", "wandb", "trackio", "mlflow")
#: tracker -> (modules, any of which makes it available; what to install)
PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
            "wandb": (("wandb",), "wandb"), "trackio": (("trackio",), "trackio"),
            "mlflow": (("mlflow",), "mlflow")}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_report_to(value, where: str = "--report-to") -> str:
    """The tracker name ``value`` (one of :data:`TRACKERS`), refused with a clear message
    when unknown or when its package is not installed."""
    if not isinstance(value, str) or value not in TRACKERS:
        raise CuratorError(f"{where} {value!r}: choose one of {', '.join(TRACKERS)}")
    if value != "none":
        modules, package = PACKAGES[value]
        if not any(_available(m) for m in modules):
            raise CuratorError(f"{where} {value}: the {package!r} package is not installed; "
                               f"`pip install {package}` or choose another tracker")
    return value


def tracker_env(report_to, out: str | Path) -> dict[str, str]:
    """The environment variables that point ``report_to``'s tracker into ``out``."""
    trackers = [report_to] if isinstance(report_to, str) else list(report_to or [])
    out = Path(out).resolve()
    env = {}
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = str(out / "runs")
    if "mlflow" in trackers:
        env["MLFLOW_TRACKING_URI"] = (out / "mlruns").as_uri()
        env["MLFLOW_EXPERIMENT_NAME"] = out.name
    if "wandb" in trackers:
        env["WANDB_DIR"] = str(out)
        env["WANDB_PROJECT"] = out.name
    if "trackio" in trackers:
        env["TRACKIO_DIR"] = str(out / "trackio")
    return env


@contextlib.contextmanager
def tracking(report_to, out: str | Path):
    """Within: the tracker of ``report_to`` writes into ``out`` (variables the user set
    are kept); the environment is restored afterwards. Wrap both building the trainer
    (the callbacks read some variables when created) and training."""
    env = {k: v for k, v in tracker_env(report_to, out).items() if k not in os.environ}
    for k, v in env.items():
        os.environ[k] = v
    if env.get("TENSORBOARD_LOGGING_DIR"):
        Path(env["TENSORBOARD_LOGGING_DIR"]).mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)


def tracked(job):
    """``job(..., out, config, ...)`` run within :func:`tracking` of its ``config.report_to``
    and ``out``."""
    import functools
    import inspect

    sig = inspect.signature(job)

    @functools.wraps(job)
    def run(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        with tracking(getattr(bound.arguments["config"], "report_to", "none"),
                      bound.arguments["out"]):
            return job(*args, **kwargs)

    return run
