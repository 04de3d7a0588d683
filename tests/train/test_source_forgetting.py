"""Forgetting per source of the held-out data: each source's windows hold only its own tokens."""

from types import SimpleNamespace

import numpy as np

from forgetless.train.evaluate import source_batches


class _Data(SimpleNamespace):
    def documents(self, split):
        return self.starts, self.ids, self.names


def test_windows_come_only_from_their_source():
    # Five documents; code tokens are < 100, prose tokens >= 100, so a window's origin is visible.
    docs = [np.arange(0, 40), np.arange(100, 150), np.arange(40, 90), np.arange(150, 230), np.arange(90, 99)]
    ids = np.array([0, 1, 0, 1, 0])
    val = np.concatenate(docs)
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    data = _Data(val=val, starts=starts, ids=ids, names=["code", "prose"])
    out = source_batches(data, seq_len=8, n_tokens=64, batch_size=4)
    assert set(out) == {"code", "prose"}
    for name, batches in out.items():
        code = name == "code"
        for x, y in batches:
            assert ((x < 100) == code).all() and ((y < 100) == code).all()
            # Targets are the next token of the source's own joined stream (brute force).
            stream = np.concatenate([d for d, i in zip(docs, ids, strict=True) if (i == 0) == code])
            for row_x, row_y in zip(x.numpy(), y.numpy(), strict=True):
                at = int(np.flatnonzero(stream == row_x[0])[0])
                assert (stream[at:at + 8] == row_x).all() and (stream[at + 1:at + 9] == row_y).all()


def test_one_source_gives_no_breakdown():
    data = _Data(val=np.arange(50), starts=np.array([0]), ids=np.array([0]), names=["code"])
    assert source_batches(data, 8, 32, 4) == {}
