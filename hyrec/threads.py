"""One BLAS thread per process unless the user chose a number.

On small hosts a multi-threaded BLAS spins on cores that other requests (or implicit's and torch's
own threads) need: a 10k x 384 product took 18 ms instead of 1.5 ms on the 2-core project machine.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

#: Environment variables that set a BLAS thread count; when one is set, the user's choice wins.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas() -> None:
    """Limit BLAS to one thread in this process, unless a BLAS thread variable is set."""
    if not any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        threadpool_limits(1, "blas")
