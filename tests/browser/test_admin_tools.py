"""Staff in a real browser (Playwright driving Debian's chromium), as they use the tools: a styled admin and a
working GraphiQL with no request leaving the machine; routes and price rules; generations (filter, cancel,
free retry); Soul IDs (no photos shown, erasure records); a manual credit grant with a reason; the curator
role kept to its pages. Every page checked is styled (admin's stylesheet loaded, the header coloured by it)
and photographed into one temporary folder (its path is printed; look at the pictures)."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote

import pytest

from apps.accounts.models import User
from apps.characters.models import Character, CharacterPhoto, ErasureRecord
from apps.credits.models import Wallet
from apps.credits.services import credits_grant
from apps.generations import services
from apps.generations.models import Generation, GenerationStatus, ModelRoute, PriceRule
from apps.jobs.lifecycle import job_event_apply
from gpu_worker import contract
from tests.browser.driver import PASSWORD, assert_styled, needs_chromium, screenshot, sign_in
from tests.fixtures.live import http_graphql
from tests.fixtures.static import needs_graphiql
from tests.graphql.generations.helpers import a_trend

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), needs_chromium]

SIGN_UP = """mutation ($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) { ... on AuthPayload { accessToken } } }"""


@pytest.fixture
def staff() -> User:
    return User.objects.create_superuser(email="ops@example.com", password=PASSWORD)


RESULT_SHOWS = """text => {
  const editor = document.querySelector('.result-window .CodeMirror');
  return editor && editor.CodeMirror.getValue().includes(text);
}"""


def _result_once(text: str):
    """GraphiQL's result pane (a CodeMirror editor), parsed, once it shows `text`."""

    def step(page) -> dict:
        page.wait_for_function(RESULT_SHOWS, arg=text)
        return json.loads(
            page.evaluate("() => document.querySelector('.result-window .CodeMirror').CodeMirror.getValue()")
        )

    return step


def _run_in_graphiql(base: str, document: str, token: str):
    """Opens GraphiQL with `document` and the bearer header (its URL parameters), runs it."""

    def step(page) -> None:
        headers = json.dumps({"Authorization": f"Bearer {token}"})
        page.goto(f"{base}/graphql?q={quote(document)}&headers={quote(headers)}")
        page.click(".graphiql-execute-button")

    return step


@needs_graphiql
def test_admin_and_graphiql_work_with_no_route_off_the_machine(asgi_server, browser, screens, staff):
    base = asgi_server.url
    browser.fresh(offline=True)

    # 1. The admin is styled from this server's static files (hashed names, cached for long).
    browser(sign_in(base, staff.email))
    browser(assert_styled)
    browser(screenshot(screens, "offline-admin-index"))

    def static_headers(page) -> dict:
        href = page.evaluate(
            "() => [...document.styleSheets].map(s => s.href).find(h => h && h.includes('/admin/css/base.'))"
        )
        response = page.request.get(href, headers={"Accept-Encoding": "gzip"})
        return {"status": response.status, **response.headers}

    served = browser(static_headers)
    assert served["status"] == 200
    assert "max-age=315360000" in served["cache-control"] and "immutable" in served["cache-control"]
    assert served["content-encoding"] == "gzip"

    # 2. "View site" is the API's landing page: GraphiQL, the schema file, health.
    def view_site(page) -> dict:
        page.click("#user-tools a[href='/']")
        page.wait_for_url(f"{base}/")
        links = page.eval_on_selector_all("#links a", "links => links.map(a => a.getAttribute('href'))")
        schema = page.request.get(f"{base}/schema.graphql")
        return {"links": links, "schema": schema.status, "sdl": schema.text()}

    landing = browser(view_site)
    browser(screenshot(screens, "offline-landing"))
    assert landing["links"] == ["/graphql", "/schema.graphql", "/healthz", "/readyz", "/admin/"]
    assert landing["schema"] == 200 and "type Subscription" in landing["sdl"]

    # 3. GraphiQL runs a query and a subscription (graphql-transport-ws, the bearer in connection_init).
    email = f"ide-{uuid.uuid4().hex[:8]}@example.com"
    signed_up = http_graphql(base, SIGN_UP, {"email": email, "password": PASSWORD})
    token = signed_up["data"]["signUp"]["accessToken"]
    browser(_run_in_graphiql(base, "{ me { email credits } }", token))
    shown = browser(_result_once(f'"email": "{email}"'))
    assert shown == {"data": {"me": {"email": email, "credits": 20}}}
    browser(screenshot(screens, "offline-graphiql-query"))

    browser(_run_in_graphiql(base, "subscription { walletUpdated { balance } }", token))
    assert browser(_result_once('"balance": 20')) == {"data": {"walletUpdated": {"balance": 20}}}
    credits_grant(user=User.objects.get(email=email), amount=5, reason="ide test")
    # The same subscription delivers the change.
    assert browser(_result_once('"balance": 25')) == {"data": {"walletUpdated": {"balance": 25}}}
    browser(screenshot(screens, "offline-graphiql-subscription"))

    # Nothing was asked of another host (a CDN): every request stayed on 127.0.0.1.
    assert browser.outside_requests == []


def test_staff_edit_a_route_and_price_rules_and_see_why_a_value_is_refused(
    asgi_server, browser, screens, staff, shipped_routes
):
    base = asgi_server.url
    route = shipped_routes["tiny-wan"]
    browser.fresh()
    browser(sign_in(base, staff.email, f"/admin/generations/modelroute/{route.pk}/change/"))
    browser(assert_styled)

    def save_route(width: str, steps: str):
        def step(page) -> str:
            page.fill("#id_width", width)
            page.fill("#id_steps", steps)
            page.click("input[name=_continue]")
            page.wait_for_load_state()
            errors = page.locator(".errorlist")
            return errors.first.inner_text() if errors.count() else page.locator(".messagelist").inner_text()

        return step

    # 1. A width the model cannot render is refused, with the rule; nothing changes.
    error = browser(save_route("33", "7"))
    assert "A multiple of 16 for tiny-wan." in error
    browser(assert_styled)
    browser(screenshot(screens, "route-refused"))
    assert ModelRoute.objects.get(pk=route.pk).steps == route.steps
    # 2. A valid edit is saved.
    assert "was changed successfully" in browser(save_route(str(route.width), "7"))
    assert ModelRoute.objects.get(pk=route.pk).steps == 7

    def add_rule(multiplier: str):
        def step(page) -> str:
            page.goto(f"{base}/admin/generations/pricerule/add/")
            page.select_option("#id_route", label="tiny-wan")
            page.select_option("#id_quality", "STANDARD")
            page.fill("#id_multiplier", multiplier)
            page.fill("#id_note", "launch week")
            page.click("input[name=_save]")
            page.wait_for_load_state()
            errors = page.locator(".errornote, .errorlist")
            return errors.all_inner_texts() if errors.count() else [page.locator(".messagelist").inner_text()]

        return step

    # 3. A price rule out of range, then a valid one, then a second one for the same case.
    assert "less than or equal to 100" in " ".join(browser(add_rule("150")))
    browser(screenshot(screens, "price-rule-refused"))
    assert not PriceRule.objects.exists()
    assert "was added successfully" in " ".join(browser(add_rule("1.5")))
    browser(assert_styled)
    browser(screenshot(screens, "price-rules"))
    clash = " ".join(browser(add_rule("2")))
    assert "An enabled rule for the same route, tier and duration exists: edit that one." in clash
    assert list(PriceRule.objects.values_list("multiplier", "note")) == [(1.5, "launch week")]


def _wait_for(read, timeout: float = 30):
    """What `read` returns once it is something: the grant is applied by a backend worker thread."""
    deadline = time.monotonic() + timeout
    while (found := read()) is None:
        assert time.monotonic() < deadline, "the backend worker did not apply it"
        time.sleep(0.1)
    return found


def _generation(user: User) -> Generation:
    trend = a_trend(requires="NONE", price_standard=4)
    request = services.GenerationRequest(trend_slug=trend.slug, idempotency_key=str(uuid.uuid4()))
    return services.generation_create(user=user, request=request)


def _fail(generation: Generation) -> None:
    job_event_apply(
        message=contract.JobEvent(
            job_id=str(generation.pk),
            sequence=1,
            kind="failed",
            attempt=1,
            reason_code=contract.BAD_INPUT,
            message="the input image cannot be read",
        ).to_message()
    )


def test_staff_filter_cancel_and_retry_generations_for_free(
    asgi_server, browser, screens, staff, settings, shipped_routes
):
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    base = asgi_server.url
    owner = User.objects.create_user(email="maker@example.com", password=PASSWORD)
    credits_grant(user=owner, amount=50, reason="test")
    queued, failing = _generation(owner), _generation(owner)
    _fail(failing)
    assert Wallet.objects.get(user=owner).held == 4  # the queued one's hold; the failed one released
    browser.fresh()
    listing = "/admin/generations/generation/"
    browser(sign_in(base, staff.email, listing))

    def rows(page) -> list[str]:
        return page.locator("#result_list tbody tr input[name=_selected_action]").evaluate_all(
            "boxes => boxes.map(b => b.value)"
        )

    # 1. Filter by state.
    def filter_failed(page) -> None:
        page.click("#changelist-filter a[href*='state=FAILED']")
        page.wait_for_url("**state=FAILED**")

    browser(filter_failed)
    assert browser(rows) == [str(failing.pk)]
    browser(assert_styled)
    browser(screenshot(screens, "generations-failed"))

    def act(action: str, pk):
        def step(page) -> str:
            page.goto(f"{base}{listing}")
            page.check(f'input[name=_selected_action][value="{pk}"]')
            page.select_option("select[name=action]", action)
            page.click("button[name=index]")
            page.wait_for_load_state()
            return page.locator(".messagelist").inner_text()

        return step

    # 2. Cancel the queued one: its credits are released.
    assert "1 generation(s) canceled." in browser(act("cancel_generations", queued.pk))
    assert Generation.objects.get(pk=queued.pk).status == GenerationStatus.CANCELED
    # 3. Retry the failed one, free: queued again with no new hold.
    assert "1 generation(s) queued again." in browser(act("retry_generations", failing.pk))
    retried = Generation.objects.get(pk=failing.pk)
    assert (retried.status, retried.attempt) == (GenerationStatus.QUEUED, 2)
    wallet = Wallet.objects.get(user=owner)
    assert (wallet.balance, wallet.held) == (50, 0)
    browser(assert_styled)
    browser(screenshot(screens, "generations-after-actions"))


def test_staff_see_soul_ids_without_photos_and_the_erasure_records(asgi_server, browser, screens, staff):
    base = asgi_server.url
    owner = User.objects.create_user(email="soul@example.com", password=PASSWORD)
    character = Character.objects.create(
        owner=owner, name="Weekend me", status="READY", lora_key=f"characters/{owner.pk}/lora.safetensors"
    )
    keys = []
    for n in range(3):
        key = f"characters/{owner.pk}/{character.pk}/photos/{n}"
        keys += [f"{key}/original.jpg", f"{key}/clean.jpg", f"{key}/crop.jpg"]
        CharacterPhoto.objects.create(
            character=character,
            upload_key=keys[-3],
            clean_key=keys[-2],
            crop_key=keys[-1],
            status="ACCEPTED",
            face_hash="abcdef0123456789",
        )
    erasure = ErasureRecord.objects.create(
        user_ref=owner.pk,
        character_ref=uuid.uuid4(),
        trigger="USER_REQUEST",
        status="DONE",
        artifacts=[{"kind": "photos", "location": "s3", "result": "deleted", "removed": 9}],
    )
    browser.fresh()
    browser(sign_in(base, staff.email, f"/admin/characters/character/{character.pk}/change/"))

    def page_facts(page) -> dict:
        html = page.content()
        return {
            "images": page.locator("#content img").count(),
            "keys": [key for key in keys if key in html],
            "hash": "abcdef0123456789" in html,
            "text": page.locator("#content").inner_text(),
        }

    facts = browser(page_facts)
    assert facts["images"] == 0 and facts["keys"] == [] and not facts["hash"]
    assert "Weekend me" in facts["text"]
    browser(assert_styled)
    browser(screenshot(screens, "soul-id"))

    def erasures(page) -> str:
        page.goto(f"{base}/admin/characters/erasurerecord/")
        return page.locator("#result_list").inner_text()

    listed = browser(erasures)
    assert str(erasure.character_ref) in listed and "USER_REQUEST" in listed
    browser(assert_styled)
    browser(screenshot(screens, "erasure-records"))


def test_staff_grant_credits_with_a_reason(asgi_server, django_worker, browser, screens, staff):
    base = asgi_server.url
    owner = User.objects.create_user(email="grant@example.com", password=PASSWORD)
    credits_grant(user=owner, amount=20, reason="welcome")
    wallet = Wallet.objects.get(user=owner)
    browser.fresh()
    browser(sign_in(base, staff.email, "/admin/credits/wallet/"))

    def grant(amount: str, reason: str):
        def step(page) -> str:
            page.goto(f"{base}/admin/credits/wallet/")
            page.check(f'input[name=_selected_action][value="{wallet.pk}"]')
            page.select_option("select[name=action]", "grant_credits")
            page.click("button[name=index]")
            page.wait_for_selector("#id_amount")
            page.fill("#id_amount", amount)
            page.fill("#id_reason", reason)
            page.click("input[name=apply]")
            page.wait_for_load_state()
            refused = page.locator("#id_amount:invalid")
            if refused.count():  # the browser itself refuses the form (min="1") and says why
                return refused.evaluate("field => field.validationMessage")
            return page.locator(".messagelist").inner_text()

        return step

    # 1. A grant of nothing is refused on the form; nothing is granted.
    assert "must be greater than or equal to 1" in browser(grant("0", "goodwill"))
    assert browser(lambda page: page.locator("#user-tools").count()) == 1  # a full admin page
    browser(assert_styled)
    browser(screenshot(screens, "grant-refused"))
    assert Wallet.objects.get(pk=wallet.pk).balance == 20
    # 2. A grant with a reason lands in the ledger with that reason.
    assert "Granting credits to 1 users." in browser(grant("15", "sorry for the outage"))
    entry = _wait_for(lambda: wallet.entries.filter(reason="sorry for the outage").first())
    assert (entry.amount, Wallet.objects.get(pk=wallet.pk).balance) == (15, 35)  # 20 welcome + 15

    def ledger(page) -> str:
        page.goto(f"{base}/admin/credits/wallet/{wallet.pk}/change/")
        return page.locator("#content").inner_text()

    assert "sorry for the outage" in browser(ledger)
    browser(assert_styled)
    browser(screenshot(screens, "wallet-ledger"))


def test_a_curator_sees_the_trend_tools_only_in_their_own_time_zone(asgi_server, browser, screens, curator):
    base = asgi_server.url
    browser.fresh(timezone_id="Asia/Tokyo")
    browser(sign_in(base, curator.email))
    browser(lambda page: page.goto(f"{base}/admin/"))  # the zone cookie is set by the first admin page

    def index(page) -> dict:
        return {
            "zone": page.locator("#staff-time-zone").inner_text(),
            "apps": page.locator("#content-main .module caption").all_inner_texts(),
        }

    seen = browser(index)
    assert seen["zone"] == "Asia/Tokyo"
    assert [name.strip().lower() for name in seen["apps"]] == ["trends and home screen"]
    browser(assert_styled)
    browser(screenshot(screens, "curator-index"))

    def status(path: str):
        return lambda page: page.goto(f"{base}{path}").status

    for path in (
        "/admin/credits/wallet/",
        "/admin/generations/generation/",
        "/admin/generations/modelroute/",
        "/admin/characters/character/",
        "/admin/accounts/user/",
    ):
        assert browser(status(path)) == 403, path
    assert browser(status("/admin/trends/trend/")) == 200
