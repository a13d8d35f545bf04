"""Feast definitions for the ``feast`` CLI (``feast -c feature_repo ...``): the same objects
Asgard applies, built in ``asgard_assets/features/definitions.py`` from the model contract."""

from asgard_assets.features.definitions import build

operator, operator_efficiency, operator_efficiency_predictor = build()
