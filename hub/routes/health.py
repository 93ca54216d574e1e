"""``GET /healthz``: whether the hub answers and its database works, for load balancers, compose and systemd."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

import pairio

from ..deps import Ctx
from ..openapi import ErrorBody

router = APIRouter()


class Health(BaseModel):
    status: str
    version: str


@router.get(
    "/healthz", response_model=Health, tags=["health"],
    responses={503: {"model": ErrorBody, "description": "the hub runs, but its database does not answer (the detail says why)"}},
)
def healthz(ctx: Ctx) -> object:
    """200 when the hub answers and its database runs a query; 503 otherwise. No key needed; nothing private."""
    try:
        with ctx.read_transaction() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        return JSONResponse({"detail": f"the hub's database does not answer: {type(e).__name__}"}, status_code=503)
    return Health(status="ok", version=pairio.__version__)
