"""Exit 0 when the PostgreSQL and Redis given on the command line answer, 1 otherwise."""

import sys
from urllib.parse import urlparse

import psycopg
import redis


def main(database_url: str, redis_url: str) -> int:
    try:
        # The server must answer; the database itself may not exist yet (pytest-django creates test_<name>).
        url = database_url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        print(f"service check failed ({urlparse(database_url).hostname}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
