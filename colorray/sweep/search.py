"""Optuna's TPE for Ray Tune without repeated configurations.

On a discrete space (choices, small integer ranges) TPE proposes points it has already tried:
on a 12-point space, 2 of 8 trials of the search-efficiency benchmark repeated an earlier
trial (docs/benchmarks.md), so a quarter of the sweep's compute re-measured a known point.
Asking TPE again does not help (with the same history it proposes the same best guess), so
`DistinctOptunaSearch` replaces a repeat by a random point not tried yet: the repeat is told
to the study as failed (TPE learns nothing from failed trials) and the point is redrawn by
Optuna's random sampler, up to `MAX_DRAWS` times; only a space with every point tried gets a
repeat. Continuous knobs practically never repeat, so for them this changes nothing.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

MAX_DRAWS = 64


class DistinctOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if not self._tried(self._ot_trials[trial_id]):
            return config
        study = self._ot_study
        sampler = study.sampler
        # Seeded by the study's length, so a sweep with the same history draws the same points.
        study.sampler = optuna.samplers.RandomSampler(seed=len(study.get_trials(deepcopy=False)))
        try:
            for _ in range(MAX_DRAWS):
                study.tell(self._ot_trials.pop(trial_id), state=TrialState.FAIL)
                config = super().suggest(trial_id)
                if not self._tried(self._ot_trials[trial_id]):
                    break
        finally:
            study.sampler = sampler
        return config

    def _tried(self, drawn) -> bool:
        """Whether another trial (running or finished, not a discarded repeat) has these values."""
        return any(t.number != drawn.number and t.state != TrialState.FAIL and t.params == drawn.params
                   for t in self._ot_study.get_trials(deepcopy=False))
