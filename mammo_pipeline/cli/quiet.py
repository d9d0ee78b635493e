"""TensorFlow without its start-up noise in the ``mammo`` command.

``TF_CPP_MIN_LOG_LEVEL`` alone does not silence TensorFlow 2.21's import: the absl line
"All log messages before absl::InitializeLog() is called are written to STDERR" and the
oneDNN "custom operations are on" line are written by C++ code before any log level is read
(measured: ``TF_CPP_MIN_LOG_LEVEL=3``, ``GRPC_VERBOSITY=ERROR`` and ``GLOG_minloglevel=3``
each leave both lines). So the command sets the level (for the messages after the import)
and imports TensorFlow once with file descriptor 2 pointed at a temporary file; what was
written there is replayed only if the import fails. A variable the user set wins, so
``TF_CPP_MIN_LOG_LEVEL=0 mammo train ...`` still shows everything.
"""

from __future__ import annotations

import os
import sys
import tempfile

#: TensorFlow's C++ log level for the command: errors that matter reach Python as exceptions.
TF_LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}


def quiet_tensorflow_env() -> None:
    """Set TensorFlow's log-level variables for this process, unless the user set them."""
    for key, value in TF_LOG_ENV.items():
        os.environ.setdefault(key, value)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines muted (replayed if the import fails)."""
    if "tensorflow" in sys.modules:
        return
    quiet_tensorflow_env()
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":  # the user asked for everything
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
