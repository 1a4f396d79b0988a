"""One thread: the machine's cores are shared, and tiny networks only lose time to thread hand-offs."""
import torch

torch.set_num_threads(1)
