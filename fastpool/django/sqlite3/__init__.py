"""``ENGINE: "fastpool.django.sqlite3"``: Django's SQLite backend, pooled by fastpool."""
