"""fastpool under `mypy --strict`: the stubs and hints a typed codebase sees."""

from __future__ import annotations

import fastpool


def names_after(db: fastpool.Pool, first_id: int) -> list[str]:
    rows: fastpool.Rows = db.query("SELECT id, name FROM user WHERE id > ?", (first_id,))
    return [str(name) for _id, name in rows]


def rename(db: fastpool.Pool, user_id: int, name: str) -> int:
    with db.transaction() as tx:
        result: fastpool.Result = tx.execute("UPDATE user SET name = ? WHERE id = ?", (name, user_id))
        count: int = result.rowcount
    return count


def main() -> None:
    with fastpool.open("sqlite://:memory:", max_open=2, timeout=1.0) as db:
        db.execute("CREATE TABLE user (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO user (name) VALUES (?)", ("ada",))
        row = db.query_row("SELECT COUNT(*) FROM user")
        assert row is not None and row[0] == 1
        with db.query("SELECT name FROM user", stream=True) as rows:
            first = rows.fetchone()
        assert first == ("ada",)
        with db.conn() as c:
            cur = c.cursor()
            cur.execute("SELECT 1")
        stats: fastpool.Stats = db.stats()
        print(names_after(db, 0), rename(db, 1, "grace"), stats.open, stats.in_use)


if __name__ == "__main__":
    main()
