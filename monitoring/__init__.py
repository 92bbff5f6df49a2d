"""Monitoring: drift and performance checks on the prediction log and late labels, Evidently
reports and dashboards, and the retraining trigger.

Imports `fraud` only (the prediction log through `fraud.predictions`, the champion and its
reference data through `fraud.registry`); it starts retraining only through a Prefect flow run,
never by importing `pipelines`. Every check reads frames in one layout (`frames.py`).
"""
