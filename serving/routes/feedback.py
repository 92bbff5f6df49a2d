"""`POST /feedback`: late fraud labels, for the online features and the prediction log."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from fraud.predictions import FeedbackRow
from serving.deps import RuntimeDep
from serving.schemas import Feedback, FeedbackResponse

router = APIRouter()


@router.post("/feedback", response_model=FeedbackResponse)
async def feedback(fb: Feedback, rt: RuntimeDep) -> FeedbackResponse:
    """Record a late fraud label; terminal risk uses it once older than the delay."""
    _, state = rt.require_model()
    seen = state.add_label(fb.TRANSACTION_ID, fb.is_fraud)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    known = fb.known_at or now  # naive UTC already (the model's validator)
    rt.log.log_feedback(
        [FeedbackRow(fb.TRANSACTION_ID, int(fb.is_fraud), known.isoformat(), now.isoformat())]
    )
    return FeedbackResponse(
        TRANSACTION_ID=fb.TRANSACTION_ID,
        recorded=True,
        seen_by_this_service=seen,
    )
