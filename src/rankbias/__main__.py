"""`python -m rankbias <step>`. A training job catches its stop signals before anything else is
imported: importing torch and loading data take seconds, and a preemption may come at any moment.
Its first log line says the handlers are in place (the tests wait for it)."""

import os
import sys

if sys.argv[1:2] == ["train"]:
    from rankbias import stop_signals

    stop_signals.catch()
    print(
        f"rankbias train (pid {os.getpid()}): stop signals caught; SIGTERM or SIGUSR1 ends the "
        "job with exit code 128 + signal",
        flush=True,
    )

from rankbias.cli import main  # noqa: E402

main()
