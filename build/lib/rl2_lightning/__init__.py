"""rl2-lightning: RL² (Duan et al. 2016) with TorchRL and PyTorch Lightning."""

__version__ = "0.1.0"
