"""Single-machine DDP that listens on the loopback interface only.

torch's rendezvous store (``TCPStore``) binds its server to every interface, so a multi-process run on
one machine (``trainer.devices=2 trainer.strategy=ddp``, CPU or GPU) would accept connections from the
network, where loopback is enough. :class:`LocalDDPStrategy` is Lightning's ``DDPStrategy`` whose rank 0
creates the store on a socket bound to 127.0.0.1 (torch's ``master_listen_fd``) and whose gloo pairs use
the loopback device; runs over several nodes (or launched by torchrun or SLURM, which bring their own
store) are Lightning's own strategy unchanged.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
from lightning.pytorch.strategies import DDPStrategy

LOOPBACK = "127.0.0.1"
#: the sockets rank 0's stores serve from (closing one would cut its store off)
_LISTEN_SOCKETS: list[socket.socket] = []


def loopback_store(port: int, rank: int, world_size: int, timeout: datetime.timedelta) -> torch.distributed.TCPStore:
    """A ``TCPStore`` on 127.0.0.1:``port``: rank 0 serves it from a socket bound to loopback only."""
    if rank != 0:
        return torch.distributed.TCPStore(LOOPBACK, port, world_size, False, timeout)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(128)
    store = torch.distributed.TCPStore(LOOPBACK, port, world_size, True, timeout, master_listen_fd=sock.fileno())
    _LISTEN_SOCKETS.append(sock)  # the store serves from this socket: it must stay open as long as the process
    return store


def launched_externally() -> bool:
    """Whether torchrun or SLURM started the processes (they bring the rendezvous)."""
    return any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_PROCID"))


class LocalDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose rendezvous and gloo traffic stay on loopback when every process is on this
    machine (one node, not launched by torchrun or SLURM)."""

    def setup_distributed(self) -> None:  # noqa: D102
        if self.num_nodes == 1 and not launched_externally() and not torch.distributed.is_initialized():
            self.set_world_ranks()
            env = self.cluster_environment
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
            store = loopback_store(env.main_port, env.global_rank(), env.world_size(), self._timeout)
            torch.distributed.init_process_group(
                self._get_process_group_backend(), store=store, rank=env.global_rank(), world_size=env.world_size(),
                timeout=self._timeout,
            )
        super().setup_distributed()  # the rest of Lightning's set-up (it skips an initialised process group)


def strategy_for(name, num_nodes: int):
    """``trainer.strategy``: ``ddp`` / ``ddp_spawn`` on one node become :class:`LocalDDPStrategy`; any other
    value (and every multi-node run) is passed to Lightning as it is."""
    if num_nodes == 1 and not launched_externally() and name in ("ddp", "ddp_spawn"):
        return LocalDDPStrategy(start_method="spawn" if name == "ddp_spawn" else "popen")
    return name
