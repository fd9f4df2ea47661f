"""How a session tells a worker where it is and who it is: environment variables.

The worker removes every one of them at start, so that the session's secret never reaches
user code or the processes it starts.
"""

from __future__ import annotations

ADDRESS = "REMOTEFN_ADDRESS"  # the session's ZeroMQ endpoint
KEY = "REMOTEFN_KEY"  # the session's secret, hex
SERVER_KEY = "REMOTEFN_SERVER_KEY"  # the CURVE public key of the session's sockets (Z85)
WORKER = "REMOTEFN_WORKER"  # the worker's identity
CPUS = "REMOTEFN_CPUS"  # CPUs of the worker (ranks x threads per rank): its nested sessions' share
RANKS = "REMOTEFN_RANKS"  # MPI ranks the launcher starts
GPUS = "REMOTEFN_GPUS"  # GPU ids per rank: "0,1;2,3"
PMI = "REMOTEFN_PMI"  # the PMI mode the launcher was asked for, for error messages
STATUS_FD = "REMOTEFN_STATUS_FD"  # where a worker writes the ids of finished calls
CONNECTION_FD = "REMOTEFN_CONNECTION_FD"  # a socket pair to the session, instead of ZeroMQ
MEASURE_MEMORY = "REMOTEFN_MEASURE_MEMORY"  # "1": measure each call's peak memory
NESTED = "REMOTEFN_NESTED"  # "flux": the worker runs in its own Flux instance
