"""Suite-wide settings: one torch thread per test process.

The suite runs on 2-core CI machines where tests also start subprocesses (DDP workers, sender and
receiver); torch's default of one thread per core oversubscribes the CPU and makes every test slower.
Results do not depend on the thread count (the DDP equality test compares at a stated tolerance).
"""

import torch

torch.set_num_threads(1)
