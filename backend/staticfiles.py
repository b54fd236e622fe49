"""Static files: GraphiQL's scripts and styles, taken from the npm packages in tools/graphiql, and the
middleware that serves every static file (ServeStatic's, answering 404 for a missing file in DEBUG too).

`npm ci --prefix tools/graphiql` (run by `make run` and `make test`) installs the pinned packages; this
finder hands `collectstatic` only the few built files the IDE page loads (backend/templates/graphql/
graphiql.html), under `static/graphiql/`, instead of the whole node_modules folder. A missing package is
reported by `manage.py check` (backend.W001), not discovered as a blank IDE page.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Warning as CheckWarning
from django.core.files.storage import FileSystemStorage
from django.http import Http404, HttpRequest, HttpResponseBase
from servestatic import utils as servestatic_utils
from servestatic.middleware import ServeStaticMiddleware
from servestatic.responders import MissingFileError

# static name (under graphiql/) -> file inside node_modules. Source maps go along because the minified
# files name them, and the hashed-names storage rewrites (so needs) every file a script or style names.
GRAPHIQL_FILES = {
    "react.production.min.js": "react/umd/react.production.min.js",
    "react-dom.production.min.js": "react-dom/umd/react-dom.production.min.js",
    "js.cookie.min.js": "js-cookie/dist/js.cookie.min.js",
    "graphiql.min.js": "graphiql/graphiql.min.js",
    "graphiql.min.js.map": "graphiql/graphiql.min.js.map",
    "graphiql.min.css": "graphiql/graphiql.min.css",
    "graphiql.min.css.map": "graphiql/graphiql.min.css.map",
    "plugin-explorer.umd.js": "@graphiql/plugin-explorer/dist/index.umd.js",
    "plugin-explorer.css": "@graphiql/plugin-explorer/dist/style.css",
}
PREFIX = "graphiql"


class _GraphiQLFiles(FileSystemStorage):
    """node_modules seen as a storage of just those files, by their static names; collectstatic puts
    them under `prefix`."""

    prefix = PREFIX

    def __init__(self) -> None:
        super().__init__(location=str(settings.GRAPHIQL_PACKAGES_DIR))

    def path(self, name: str) -> str:
        return super().path(GRAPHIQL_FILES.get(name, name))


def _missing() -> list[str]:
    storage = _GraphiQLFiles()
    return [storage.path(name) for name in GRAPHIQL_FILES if not Path(storage.path(name)).is_file()]


class GraphiQLFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        storage = _GraphiQLFiles()
        self.storages = {storage.location: storage}  # as Django's finders: where it looks (DEBUG says)

    def check(self, **kwargs) -> list[CheckWarning]:
        missing = _missing()
        if not missing or not settings.GRAPHQL_IDE:
            return []
        return [
            CheckWarning(
                f"GraphiQL's files are not installed ({len(missing)} missing, e.g. {missing[0]}).",
                hint="Run `npm ci --prefix tools/graphiql` (make run does), then collectstatic.",
                id="backend.W001",
            )
        ]

    def find(self, path: str, find_all: bool = False, **kwargs):
        name = path.removeprefix(PREFIX + "/")
        found = None
        if path.startswith(PREFIX + "/") and name in GRAPHIQL_FILES:
            candidate = _GraphiQLFiles().path(name)
            found = candidate if Path(candidate).is_file() else None
        if found is None:
            # [] like Django's own finders: a None here reaches `finders.find` as a match ([None]), which
            # ServeStatic's look-up of files added since start-up (DEBUG) then takes for a path.
            return []
        return [found] if find_all else found

    def list(self, ignore_patterns):
        storage = _GraphiQLFiles()
        for name in GRAPHIQL_FILES:
            if Path(storage.path(name)).is_file():
                yield name, storage


# ServeStatic reads a file in 8 KiB blocks, one thread hop each: a 3.4 MiB script (GraphiQL) costs 420 hops
# and about 100 ms of server CPU. 256 KiB blocks keep memory bounded per download (a block, not the file)
# at a fraction of the CPU (bench/static_files.py). Read by each response when it starts.
servestatic_utils.ASGI_BLOCK_SIZE = 256 * 1024


class StaticFilesMiddleware(ServeStaticMiddleware):
    """ServeStatic's async middleware, with a missing file under STATIC_URL a 404 in DEBUG as in
    production: ServeStatic raises there (a 500) to list the folders it searched; the 404 page says it."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return await super().__call__(request)
        except MissingFileError as missing:
            raise Http404(str(missing)) from missing
