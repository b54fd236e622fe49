from tests.graphql.generations.helpers import shipped_routes  # noqa: F401
from tests.graphql.storage.conftest import local_storage  # noqa: F401
