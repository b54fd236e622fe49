"""Production refuses to start with an unsafe setting, and its schema hides itself.

Settings are read once, at import, so each environment runs in a fresh subprocess with APP_ENV=production:
`manage.py check --deploy` (what a deploy pipeline runs) and `import backend.asgi` (what uvicorn does at
start-up). Both run at the same time per case to keep the suite quick. Nothing here connects to PostgreSQL or
Redis: the URLs only have to be there.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def _safe_env(tmp_path: Path) -> dict[str, str]:
    env = {
        # A clean environment: nothing from the developer's shell (DEBUG, emulator hosts, ...) leaks in.
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "VAR_DIR": str(tmp_path / "var"),
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(60)[:60],
        "DEBUG": "0",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/test",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "x",
        "ALLOWED_HOSTS": "api.example.com",
        "FIREBASE_CREDENTIALS": str(tmp_path / "service-account.json"),
        "C2PA_SIGN_CERT": str(tmp_path / "c2pa-chain.pem"),
        "C2PA_SIGN_KEY": str(tmp_path / "c2pa-key.pem"),
        # collectstatic's output (the session's, tests/fixtures/static.py), as a deploy's image build has.
        "STATIC_ROOT": str(settings.STATIC_ROOT),
        "MODERATION_IMAGE_MODEL": "moderation/image-classifier",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    assert len(env["SECRET_KEY"]) == 60
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=TIMEOUT)
    return process.returncode, output


def _deploy_check_and_asgi_import(env: dict[str, str]) -> tuple[tuple[int, str], tuple[int, str]]:
    check = _start(["manage.py", "check", "--deploy"], env)
    asgi = _start(["-c", "import backend.asgi as m; print(type(m.application).__name__)"], env)
    return _finish(check), _finish(asgi)


def test_the_safe_production_environment_passes_the_deploy_check_and_starts(tmp_path):
    (check_rc, check_out), (asgi_rc, asgi_out) = _deploy_check_and_asgi_import(_safe_env(tmp_path))
    # Django's own deploy warnings may print; errors are what stop a deploy.
    assert check_rc == 0, check_out
    assert "backend.E0" not in check_out
    assert asgi_rc == 0, asgi_out
    assert asgi_out.strip().splitlines()[-1] == "Lifespan"


def test_image_moderation_may_be_turned_off_in_production_only_explicitly(tmp_path):
    env = _safe_env(tmp_path)
    del env["MODERATION_IMAGE_MODEL"]
    env["MODERATION_IMAGES_DISABLED"] = "1"
    check = _finish(_start(["manage.py", "check", "--deploy"], env))
    assert check[0] == 0, check[1]
    assert "backend.E020" not in check[1]


UNSAFE = [
    pytest.param({"DEBUG": "1"}, "backend.E001", id="debug-on"),
    pytest.param({"SECRET_KEY": None}, "backend.E002", id="default-secret-key"),
    pytest.param({"SECRET_KEY": "short-but-not-default"}, "backend.E002", id="short-secret-key"),
    pytest.param({"GRAPHQL_IDE": "1"}, "backend.E003", id="graphiql-on"),
    pytest.param({"GRAPHQL_INTROSPECTION": "1"}, "backend.E004", id="introspection-on"),
    pytest.param({"FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"}, "backend.E005", id="firebase-emulator"),
    pytest.param({"DATABASE_URL": None}, "backend.E006", id="sqlite"),
    pytest.param({"REDIS_URL": None}, "backend.E007", id="in-process-broker"),
    pytest.param({"ALLOWED_HOSTS": "*"}, "backend.E008", id="wildcard-hosts"),
    pytest.param({"STORAGE_BACKEND": None}, "backend.E009", id="local-media-folder"),
    pytest.param({"BENCH_ENDPOINTS": "1"}, "backend.E010", id="bench-endpoints"),
    pytest.param({"FIREBASE_CREDENTIALS": None}, "backend.E011", id="console-push"),
    pytest.param({"PUSH_BACKEND": "console"}, "backend.E011", id="console-push-forced"),
    pytest.param({"PURCHASES_LOCAL_TEST_STORE": "1"}, "backend.E012", id="local-test-store"),
    pytest.param(
        {"APPLE_BUNDLE_ID": "com.example.app", "APPLE_ROOT_CERTIFICATES": "/etc/apple-root.cer"},
        "backend.E013",
        id="apple-without-app-id",
    ),
    pytest.param({"GOOGLE_PLAY_PACKAGE_NAME": "com.example.app"}, "backend.E014", id="play-push-unchecked"),
    pytest.param({"C2PA_SIGN_KEY": None}, "backend.E015", id="no-c2pa-signing-key"),
    pytest.param({"STATIC_ROOT": "/nonexistent/static"}, "backend.E016", id="collectstatic-not-run"),
    pytest.param({"MODERATION_IMAGE_MODEL": None}, "backend.E020", id="no-image-classifier"),
    pytest.param({"METRICS_TOKEN": None}, "backend.E021", id="metrics-unprotected"),
    pytest.param({"METRICS_TOKEN": "short"}, "backend.E021", id="metrics-short-token"),
    pytest.param({"WEBHOOKS_ALLOW_LOOPBACK": "1"}, "backend.E022", id="loopback-webhooks"),
    pytest.param({"IMAGE_URL_ALLOW_LOOPBACK": "1"}, "backend.E023", id="loopback-image-urls"),
]


def test_labels_disabled_on_purpose_pass_the_deploy_check_without_signing_material(tmp_path):
    env = _safe_env(tmp_path)
    del env["C2PA_SIGN_CERT"], env["C2PA_SIGN_KEY"]
    env["C2PA_DISABLED"] = "1"

    (check_rc, check_out), _ = _deploy_check_and_asgi_import(env)

    assert check_rc == 0, check_out
    assert "backend.E0" not in check_out


@pytest.mark.parametrize(("change", "error_id"), UNSAFE)
def test_an_unsafe_setting_fails_the_deploy_check_and_refuses_to_start(tmp_path, change, error_id):
    env = _safe_env(tmp_path)
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value

    (check_rc, check_out), (asgi_rc, asgi_out) = _deploy_check_and_asgi_import(env)

    assert check_rc != 0, check_out
    assert f"({error_id})" in check_out or f"{error_id}:" in check_out, check_out
    # Only the changed setting is at fault.
    assert check_out.count("backend.E0") == 1, check_out
    assert asgi_rc != 0, asgi_out
    assert "django.core.exceptions.ImproperlyConfigured: refusing to start in production" in asgi_out
    assert f"{error_id}:" in asgi_out
    assert "Lifespan" not in asgi_out


# The production schema, through the real URLconf and middleware (Django's test client, no server).
SCHEMA_PROBE = textwrap.dedent(
    """
    import json
    import django

    django.setup()
    from django.test import Client

    client = Client(HTTP_HOST="api.example.com")


    def post(query, variables=None):
        response = client.post(
            "/graphql",
            json.dumps({"query": query, "variables": variables or {}}),
            content_type="application/json",
            secure=True,
        )
        return {"status": response.status_code, "body": response.json()}


    results = {
        "schema": post("{ __schema { queryType { name } } }"),
        "type": post('{ __type(name: "User") { fields { name } } }'),
        "typename": post("{ __typename }"),
        "field": post("{ mee { email } }"),
        "argument": post('mutation { signUp(inptu: {email: "a@x.com", password: "b"}) { __typename } }'),
        "type_name": post("query ($p: Platfrm) { __typename }"),
        "enum": post(
            'mutation { registerDevice(input: {token: "t", platform: IOSS, appVersion: "1"}) { __typename } }'
        ),
    }

    import apps.accounts.services

    def explode(**kwargs):
        raise RuntimeError("secret internals")

    apps.accounts.services.user_sign_up = explode
    results["bug"] = post('mutation { signUp(input: {email: "a@x.com", password: "b"}) { __typename } }')

    ide = client.get("/graphql", HTTP_ACCEPT="text/html", secure=True)
    results["graphiql"] = {"status": ide.status_code, "body": ide.content.decode(errors="replace")[:2000]}
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def production_schema(tmp_path_factory) -> dict:
    env = _safe_env(tmp_path_factory.mktemp("production"))
    returncode, output = _finish(_start(["-c", SCHEMA_PROBE], env))
    assert returncode == 0, output
    line = next(line for line in output.splitlines() if line.startswith("RESULTS "))
    return json.loads(line.removeprefix("RESULTS "))


def _messages(result: dict) -> list[str]:
    assert result["status"] == 200
    assert result["body"].get("data") is None, result
    return [error["message"] for error in result["body"]["errors"]]


@pytest.mark.parametrize(("case", "field"), [("schema", "__schema"), ("type", "__type")])
def test_production_refuses_introspection(production_schema, case, field):
    errors = production_schema[case]["body"]["errors"]
    assert errors[0]["message"] == (
        f"GraphQL introspection has been disabled, but the requested query contained the field '{field}'."
    )
    assert {error["extensions"]["code"] for error in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert production_schema[case]["body"]["data"] is None
    # `__typename` is not introspection of the schema and keeps working (clients add it everywhere).
    assert production_schema["typename"]["body"] == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("field", "Cannot query field 'mee' on type 'Query'."),
        ("argument", "Unknown argument 'inptu' on field 'Mutation.signUp'."),
        ("type_name", "Unknown type 'Platfrm'."),
        ("enum", "Value 'IOSS' does not exist in 'Platform' enum."),
    ],
)
def test_production_gives_no_suggestions_that_would_reveal_the_schema(production_schema, case, message):
    messages = _messages(production_schema[case])
    assert message in messages
    assert not [m for m in messages if "Did you mean" in m], messages


def test_production_masks_bugs(production_schema):
    body = production_schema["bug"]["body"]
    assert body["errors"][0]["message"] == "Unexpected error."
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret internals" not in json.dumps(body)


def test_production_does_not_serve_graphiql(production_schema):
    page = production_schema["graphiql"]
    assert page["status"] == 404
    assert "graphiql" not in page["body"].lower()
