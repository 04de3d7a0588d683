"""The memorisation sampler's older public spelling (MemorisationSample, memorisation_samples) still
imports but warns; the names that import without a warning are the -z- ones (issue 25)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import forgetless.data
from forgetless.data import corrupt


@pytest.mark.parametrize(("old", "new"), [("MemorisationSample", "MemorizationSample"),
                                          ("memorisation_samples", "memorization_samples")])
def test_the_old_spelling_warns_and_is_the_new_object(old, new):
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use {new}"):
        alias = getattr(corrupt, old)
    assert alias is getattr(corrupt, new)
    with pytest.warns(DeprecationWarning):  # every use warns, not only the first
        getattr(corrupt, old)
    # The package re-exports the old name (the module warns when the package first reads it), but
    # not in __all__, so `from forgetless.data import *` stays quiet.
    forgetless.data.__dict__.pop(old, None)
    with pytest.warns(DeprecationWarning):
        assert getattr(forgetless.data, old) is getattr(corrupt, new)
    assert old not in forgetless.data.__all__ and new in forgetless.data.__all__


def test_the_new_names_do_not_warn_and_the_alias_samples_the_same():
    tokens = np.arange(64 * 8) % 50
    out, mask = corrupt.corrupt_blocks(tokens, 64, p=0.5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = corrupt.memorization_samples(out, mask, 64, pairs=[(8, 4)], n=5, seed=0)
    with pytest.warns(DeprecationWarning):
        old = corrupt.memorisation_samples(out, mask, 64, pairs=[(8, 4)], n=5, seed=0)
    for key in new:
        assert isinstance(new[key], corrupt.MemorizationSample)
        np.testing.assert_array_equal(new[key].prompts, old[key].prompts)
        np.testing.assert_array_equal(new[key].targets, old[key].targets)
    # A missing name is still an AttributeError, not a silent alias.
    with pytest.raises(AttributeError):
        corrupt.memorisation_sample  # noqa: B018
