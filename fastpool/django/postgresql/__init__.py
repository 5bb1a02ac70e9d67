"""Django's PostgreSQL backend (psycopg 3) with fastpool underneath: see fastpool.django."""
