"""Fuzzing: hypothesis generates hostile datasets (Blender/nerfstudio transforms.json, COLMAP
binary models, LLFF poses_bounds.npy, npz scenes), .ply files, camera paths and run configs
(:mod:`tests.fuzz_cases`); each must load or be refused on one line naming the file, within a
memory bound and without writing files. ``FIELDFORGE_FUZZ=long`` runs the longer profile
(``benchmarks/reliability.py`` reports its counts)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz_cases import FAMILIES, check

settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_inputs_load_or_are_refused_on_one_line(family):
    @settings(settings.get_profile(os.environ.get("FIELDFORGE_FUZZ", "ci")))
    @given(FAMILIES[family][0])
    def one(drawn):
        check(family, drawn)

    one()
