"""The prediction API: FastAPI `/predict` on raw transactions, with online features computed by
the same definitions as training (`fraud.features`), a prediction log and late-label feedback.

Imports `fraud` only, never `pipelines`.
"""
