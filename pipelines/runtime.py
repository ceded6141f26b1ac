"""What every Ray job of this package shares: starting Ray, shipping code, the error contract.

The build and batch inference both connect with :func:`init_ray` (and end with
:func:`shutdown_ray`, see :func:`ray_of_this_command`), record an error a
stage raised on purpose as one readable line (:func:`describe_error`), and tell a full
disk (a problem of the machine: stop, a rerun resumes) from a bad input (recorded on the
clip or job: go on) with :func:`is_disk_full`. :func:`by_value` sends a function's code
to the workers with the object that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray import cloudpickle

from aniportrait.media.download import DownloadError
from aniportrait.media.probe import MediaError


def init_ray(address: str | None) -> None:
    """Connect to ``address`` or start a local Ray; quiet Ray Data's own progress bars.

    With ``address`` (``auto``, ``host:6379`` or ``ray://host:10001``) no runtime_env is
    sent: every node must have this package and ffmpeg installed (the same image), and
    the work directory must be a filesystem every node and this driver see, or an object
    store URI (see :mod:`pipelines.build.workarea`). Errors
    raised in workers (e.g. :class:`~aniportrait.storage.OutputError` from a shard
    upload) reach the driver as their own type, not wrapped by Ray Data.
    """
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=True,
                 logging_level=logging.WARNING, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.raise_original_map_exception = True
    # That exception is the report: Ray Data's console copy of its stack trace would bury
    # the one-line message the CLI prints (ray-data.log in the session keeps it).
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and _below_error not in handler.filters:
            handler.addFilter(_below_error)


def shutdown_ray() -> None:
    """``ray.shutdown()``, about a second sooner when this process started the Ray.

    Ray (2.60) stops the GCS before the autoscaler's monitor process, whose SIGTERM handler
    then waits on the stopped GCS until Ray kills it one second later. Killing the monitor
    first (Ray's own ``Node.kill_monitor``, as Ray would a second later) leaves nothing to
    wait for. Connected to a running cluster, this process owns no processes: nothing is
    killed and Ray only disconnects. Calling it explicitly also skips the half second the
    exit hook sleeps for log lines that the build does not forward (``log_to_driver=False``).
    """
    node = getattr(ray._private.worker, "_global_node", None)  # connected only: a node without processes
    if node is not None and hasattr(node, "kill_monitor"):
        node.kill_monitor(check_alive=False)
    ray.shutdown()


@contextlib.contextmanager
def ray_of_this_command() -> Iterator[None]:
    """End with :func:`shutdown_ray` a Ray that was started or connected inside the block;
    leave alone one that was up before it (a notebook's, a test session's)."""
    up_before = ray.is_initialized()
    try:
        yield
    finally:
        if not up_before:
            shutdown_ray()


class _ByValue:
    """A function that pickles with its code (see :func:`by_value`); calls go to the function."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        module = inspect.getmodule(self.fn)
        # cloudpickle already sends ``__main__`` and registered modules by value; any other
        # module is registered for this one call only.
        register = (module is not None and module.__name__ != "__main__"
                    and module.__name__ not in cloudpickle.list_registry_pickle_by_value())
        if register:
            cloudpickle.register_pickle_by_value(module)
        try:
            data = cloudpickle.dumps(self.fn)
        finally:
            if register:
                cloudpickle.unregister_pickle_by_value(module)
        return pickle.loads, (data,)


def by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, pickled with its code instead of as a reference to its module.

    A Ray worker imports the module of every function a pickle references by name; a
    function whose module only the driver can import (a test module pytest put on the
    driver's path, a notebook's helper file) must travel by value instead. The rest of
    its module that it uses travels with it; other modules (numpy, this package) are
    imported in the worker as usual. Unpickled, it is the plain function.
    """
    return _ByValue(fn)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def describe_error(exc: BaseException) -> str:
    """A one-line, readable reason for the manifest (no traceback).

    Errors the stages raise on purpose speak for themselves; anything else (a bug) is
    prefixed with its exception type.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if text and isinstance(exc, (MediaError, DownloadError, ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text or 'no message'}"


#: errno values of a full disk, an exhausted quota and the file-size limit (RLIMIT_FSIZE).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: How ffmpeg's messages (``MediaError``) name the same errors.
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says there is no room to write: a problem of the machine, not of a clip."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    return isinstance(exc, MediaError) and any(text in str(exc) for text in DISK_FULL_TEXTS)
