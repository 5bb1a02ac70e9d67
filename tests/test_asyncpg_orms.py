"""The ORMs asyncpg users run, pointed at fastpool.asyncpg through the hook each has:
piccolo (its engine's ``pool`` attribute takes a pool object) and tortoise-orm (an engine
module whose client overrides ``create_pool``; tests/orm_tortoise.py). Against the
throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("greenlet")
pytest.importorskip("asyncpg", reason="asyncpg is not installed")
import fastpool.asyncpg  # noqa: E402 - after the skip


def test_piccolo_runs_on_the_drop_in(postgres) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("piccolo")
    from piccolo.columns import Integer, Varchar
    from piccolo.engine.postgres import PostgresEngine
    from piccolo.table import Table

    engine = PostgresEngine(config={"dsn": postgres.dsn})

    class Band(Table, db=engine, tablename="fp_piccolo_band"):
        name = Varchar(length=50)
        popularity = Integer()

    async def main() -> None:
        pool = await fastpool.asyncpg.create_pool(postgres.dsn, min_size=1, max_size=4)
        engine.pool = pool  # piccolo's hook: it acquires from whatever pool is here
        try:
            await Band.create_table(if_not_exists=True)
            await Band.delete(force=True)
            await Band.insert(*[Band(name=f"b{i}", popularity=i) for i in range(10)])
            counts = await asyncio.gather(*[Band.count().where(Band.popularity >= i)
                                            for i in range(10)])
            assert counts == [10 - i for i in range(10)]
            async with engine.transaction():
                await Band.update({Band.popularity: 0}).where(Band.name == "b9")
            row = await Band.select(Band.popularity).where(Band.name == "b9").first()
            assert row == {"popularity": 0}
            assert pool.fastpool.stats().in_use == 0 and pool.get_size() <= 4
        finally:
            await Band.alter().drop_table(if_exists=True)
            await engine.close_connection_pool()
        assert pool.is_closing()

    asyncio.run(main())


def test_tortoise_runs_on_the_drop_in(postgres) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tortoise")
    from tortoise import Tortoise

    from fastpool.url import parse_url

    kw = parse_url(postgres.dsn).connect_kwargs
    config: dict[str, Any] = {
        "connections": {"default": {
            "engine": "orm_tortoise",
            "credentials": {"host": kw["host"], "port": int(kw["port"]), "user": kw["user"],
                            "password": kw["password"], "database": kw["dbname"],
                            "minsize": 1, "maxsize": 4},
        }},
        "apps": {"models": {"models": ["orm_tortoise"], "default_connection": "default"}},
    }

    async def main() -> None:
        import orm_tortoise

        await Tortoise.init(config=config)
        try:
            await Tortoise.generate_schemas(safe=True)  # the pool is made at first use
            pool = Tortoise.get_connection("default")._pool
            assert isinstance(pool, fastpool.asyncpg.Pool)
            await orm_tortoise.Gadget.all().delete()
            await asyncio.gather(*[orm_tortoise.Gadget.create(name=f"g{i}") for i in range(12)])
            assert await orm_tortoise.Gadget.filter(name__startswith="g").count() == 12
            assert pool.fastpool.stats().in_use == 0 and pool.get_size() <= 4
            await Tortoise.get_connection("default").execute_script(
                "DROP TABLE fp_tortoise_gadget")
        finally:
            await Tortoise.close_connections()

    asyncio.run(main())
