from pathlib import Path

from strawberry.printer import print_schema

from graphql_schema.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "graphql_schema" / "schema.graphql"


def test_committed_schema_matches_the_code():
    """The apps generate their clients from the committed file: `make schema` refreshes it."""
    assert SCHEMA_FILE.read_text() == print_schema(schema), (
        "graphql_schema/schema.graphql is stale: run `make schema`"
    )
