"""Provisioning: recipes, the per-device flow, and resumable parallel batches."""

from keyfab.provision.batch import (
    Cancellation,
    Summary,
    cancel_batch,
    create_batch,
    outstanding,
    run_batch,
)
from keyfab.provision.flow import certificate_label, issue_device, write_back
from keyfab.provision.recipe import Recipe, load_recipe, parse_recipe

__all__ = [
    "Cancellation",
    "Recipe",
    "Summary",
    "cancel_batch",
    "certificate_label",
    "create_batch",
    "issue_device",
    "load_recipe",
    "outstanding",
    "parse_recipe",
    "run_batch",
    "write_back",
]
