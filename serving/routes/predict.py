"""`POST /predict` and `POST /predict/batch`: score raw transactions.

`POST /predict` without a query string is answered before FastAPI by
`serving.middleware.FastPredict`; this route answers everything else sent there (invalid
bodies, `?explain=...`), with the same scoring."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from fraud.schema import TransactionRecord
from serving.deps import RuntimeDep
from serving.json_io import json_response, parse_json_body
from serving.openapi import BODY_ERROR_RESPONSES, json_request_body
from serving.runtime import gc_paused
from serving.schemas import BatchRequest, BatchResponse, Prediction
from serving.scoring import score_transactions

router = APIRouter()


@router.post(
    "/predict",
    response_model=Prediction,
    response_model_exclude_none=True,
    # The body is parsed in the endpoint (below); its schema is registered by serving.openapi.
    openapi_extra=json_request_body(TransactionRecord),
    responses=BODY_ERROR_RESPONSES,
)
async def predict(
    request: Request, rt: RuntimeDep, explain: Annotated[bool, Query()] = False
) -> Prediction:
    """Score one raw transaction."""
    tx = await parse_json_body(request, TransactionRecord)
    explain = explain or rt.settings.contributions_by_default
    return json_response((await score_transactions(rt, [tx], explain))[0])  # type: ignore[return-value]


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    openapi_extra=json_request_body(BatchRequest),
    responses=BODY_ERROR_RESPONSES,
)
async def predict_batch(
    request: Request, rt: RuntimeDep, explain: Annotated[bool, Query()] = False
) -> BatchResponse:
    """Score up to FRAUD_MAX_BATCH transactions (default 1000), in the order given."""
    await request.body()  # the upload first (kept by the request): no pause while it comes
    with gc_paused():
        batch = await parse_json_body(request, BatchRequest)
        max_batch = rt.settings.max_batch
        if len(batch.transactions) > max_batch:
            raise HTTPException(
                413,
                detail=f"at most {max_batch} transactions per batch, got {len(batch.transactions)}",
            )
        explain = explain or rt.settings.contributions_by_default
        predictions = await score_transactions(rt, batch.transactions, explain)
        return json_response({"predictions": predictions})  # type: ignore[return-value]
