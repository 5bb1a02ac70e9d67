"""A FastAPI app on fastpool.asyncpg: the pool opened in the app's lifespan and closed when
the app stops, a pooled statement per request, and the pool's counts on /stats.

    DATABASE_URL=postgresql://app:pw@localhost/shop uvicorn examples.fastapi_asyncpg:app

Code written for asyncpg's pool moves over by changing one import: ``asyncpg.create_pool``
becomes ``fastpool.asyncpg.create_pool``, with the same arguments.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request

import fastpool.asyncpg

DSN = os.environ.get("DATABASE_URL", "postgresql://app:pw@localhost/shop")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Opened on the app's event loop (the pool binds to the loop that first uses it).
    async with fastpool.asyncpg.create_pool(DSN, min_size=1, max_size=10) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/double/{n}")
async def double(n: int, request: Request) -> dict[str, Any]:
    return {"n": n, "double": await request.app.state.pool.fetchval("SELECT $1::int * 2", n)}


@app.get("/in-transaction/{n}")
async def in_transaction(n: int, request: Request) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as con, con.transaction():
        return {"n": n, "squared": await con.fetchval("SELECT $1::int * $1::int", n)}


@app.get("/stats")
async def stats(request: Request) -> dict[str, int]:
    s = request.app.state.pool.fastpool.stats()
    return {"open": s.open, "in_use": s.in_use, "idle": s.idle, "leaks_reclaimed": s.leaks_reclaimed}
