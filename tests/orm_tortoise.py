"""tortoise-orm pointed at fastpool.asyncpg (tests/test_asyncpg_orms.py): an engine module
whose client is tortoise's own asyncpg client with its pool made by the drop-in -- the
hook tortoise has (``create_pool`` on the client, the engine named by module path) -- and
a model to run."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.backends.asyncpg.client import AsyncpgDBClient
from tortoise.models import Model

import fastpool.asyncpg


class FastpoolAsyncpgClient(AsyncpgDBClient):
    async def create_pool(self, **kwargs: Any) -> Any:
        return await fastpool.asyncpg.create_pool(None, **kwargs)


client_class = FastpoolAsyncpgClient  # what tortoise reads from an engine module


class Gadget(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)

    class Meta:
        table = "fp_tortoise_gadget"
