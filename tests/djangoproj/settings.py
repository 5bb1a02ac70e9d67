"""Settings from the environment: FASTPOOL_DJANGO_ENGINE (fastpool.django.mysql,
fastpool.django.postgresql or fastpool.django.sqlite3, or Django's own for comparison),
FASTPOOL_DJANGO_DSN for MySQL and PostgreSQL,
FASTPOOL_DJANGO_SQLITE for the SQLite file, FASTPOOL_DJANGO_POOL (a JSON dict, or "off")."""

import json
import os

from fastpool.url import parse_url

ENGINE = os.environ.get("FASTPOOL_DJANGO_ENGINE", "fastpool.django.sqlite3")
POOL = os.environ.get("FASTPOOL_DJANGO_POOL", '{"max_open": 4, "timeout": 10}')

if "mysql" in ENGINE:
    kw = parse_url(os.environ["FASTPOOL_DJANGO_DSN"]).connect_kwargs
    database = {
        "ENGINE": ENGINE, "NAME": kw.get("database", "fastpool_test"), "USER": kw.get("user", ""),
        "PASSWORD": kw.get("password", ""), "HOST": kw.get("host", "127.0.0.1"),
        "PORT": kw.get("port", 3306), "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": os.environ.get("FASTPOOL_DJANGO_TEST_DB", "test_fastpool_django")},
    }
elif "postgresql" in ENGINE:
    kw = parse_url(os.environ["FASTPOOL_DJANGO_DSN"]).connect_kwargs
    database = {
        "ENGINE": ENGINE, "NAME": kw.get("dbname", "fastpool_test"), "USER": kw.get("user", ""),
        "PASSWORD": kw.get("password", ""), "HOST": kw.get("host", "127.0.0.1"),
        "PORT": kw.get("port", 5432), "OPTIONS": {},
        "TEST": {"NAME": os.environ.get("FASTPOOL_DJANGO_TEST_DB", "test_fastpool_django")},
    }
else:
    database = {"ENGINE": ENGINE, "NAME": os.environ.get("FASTPOOL_DJANGO_SQLITE", "db.sqlite3"),
                "OPTIONS": {},
                "TEST": {"NAME": os.environ.get("FASTPOOL_DJANGO_SQLITE", "db.sqlite3") + "-test"}}
if POOL != "off" and ENGINE.startswith("fastpool."):
    database["OPTIONS"]["pool"] = json.loads(POOL)
if ENGINE.startswith("dj_db_conn_pool."):
    # django-db-connection-pool (SQLAlchemy's QueuePool), sized like fastpool's max_open.
    size = json.loads(POOL).get("max_open", 4) if POOL != "off" else 4
    database["POOL_OPTIONS"] = {"POOL_SIZE": size, "MAX_OVERFLOW": 0, "TIMEOUT": 30}
database["CONN_MAX_AGE"] = int(os.environ.get("FASTPOOL_DJANGO_CONN_MAX_AGE", "0"))

DATABASES = {"default": database}
SECRET_KEY = "fastpool-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
ROOT_URLCONF = "urls"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"
