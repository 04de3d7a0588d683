"""Run several pretraining configs in one torchrun job (one process group, imports paid once).

    torchrun --nproc-per-node 2 tests/train/_distributed_runs.py a.yaml b.yaml ...
"""

import sys

from forgetless.train import PretrainConfig, pretrain

for path in sys.argv[1:]:
    pretrain(PretrainConfig.from_yaml(path))
