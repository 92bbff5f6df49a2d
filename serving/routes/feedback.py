"""`POST /feedback`: late fraud labels, for the online features and the prediction log."""

from __future__ import annotations

import datetime as dt
import logging

from fastapi import APIRouter, HTTPException, Request

from fraud.predictions import FeedbackRow
from serving.degradation import BackendUnavailableError
from serving.deps import RuntimeDep
from serving.json_io import parse_json_body
from serving.openapi import BODY_ERROR_RESPONSES, json_request_body
from serving.schemas import Feedback, FeedbackResponse

router = APIRouter()
log = logging.getLogger("serving")


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    # Parsed like the scoring bodies (serving.json_io): JSON only, validated from the bytes.
    openapi_extra=json_request_body(Feedback),
    responses=BODY_ERROR_RESPONSES,
)
async def feedback(request: Request, rt: RuntimeDep) -> FeedbackResponse:
    """Record a late fraud label; terminal risk uses it once older than the delay."""
    fb = await parse_json_body(request, Feedback)
    _, state = rt.require_model()
    try:
        seen = state.add_label(fb.TRANSACTION_ID, fb.is_fraud)
    except BackendUnavailableError as e:
        log.error("%s", e)
        raise HTTPException(
            503, detail=f"the {e.backend} {e.state}, so the label was not recorded: retry"
        ) from e
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    known = fb.known_at or now  # naive UTC already (the model's validator)
    try:
        rt.log.log_feedback(
            [FeedbackRow(fb.TRANSACTION_ID, int(fb.is_fraud), known.isoformat(), now.isoformat())]
        )
    except Exception as e:
        log.error("prediction log: feedback not written: %s", e)
        rt.log_failure = f"{type(e).__name__}: {e}"
        raise HTTPException(
            503,
            detail="the prediction log is unavailable, so the label was not logged (the online "
            "features have it): retry",
        ) from e
    return FeedbackResponse(
        TRANSACTION_ID=fb.TRANSACTION_ID,
        recorded=True,
        seen_by_this_service=seen,
    )
