"""Lean completion (graphql_schema/lean.py) answers exactly what graphql-core's general completion answers:
the same data and the same errors at the same paths, whatever the document.

- A small schema built for the purpose, with every case the lean step handles or must hand back: attribute
  and resolver fields (with and without info), enums, custom scalars, nested lists, an interface and a
  union, a resolver that raises, a null in a non-null field, an async field, a DataLoader, a field with
  arguments, @skip/@include. Documents generated from its SDL by hypothesis-graphql run both ways.
- The project's schema: the home screen, and documents generated from the committed SDL, signed in with
  a catalogue and favorites, run both ways.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import uuid
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import pytest
import strawberry
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.execution import optimized_is_awaitable
from strawberry_django.optimizer import DjangoOptimizerExtension

from apps.accounts.models import User
from graphql_schema import lean
from graphql_schema.context import Context
from graphql_schema.lean import ParsedDocuments
from graphql_schema.schema import Executor
from graphql_schema.schema import schema as project_schema
from tests.graphql.trends.test_home_screen_queries import HOME, _screen

# --- A schema with every case ------------------------------------------------------------------------------


@strawberry.enum
class Mood(enum.Enum):
    CALM = "calm"
    LOUD = "loud"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Tag(Named):
    weight: float | None


@strawberry.type
class Person(Named):
    index: int
    mood: Mood
    nicknames: list[str | None]
    grid: list[list[int]]

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        if "infos" in info.context:
            info.context["infos"].append(info._raw_info)
        return f"{info._raw_info.parent_type.name}:{'.'.join(str(key) for key in info.path.as_list())}"

    # The resolver shapes: positional (self, parent[, info]) calls, and keyword calls for any other order.
    @strawberry.field
    def parent_name(self, root: strawberry.Parent[Person]) -> str:
        return f"{root.name} of {self.index}"

    @strawberry.field
    def parent_where(self, root: strawberry.Parent[Person], info: strawberry.Info) -> str:
        return f"{root.name} at {info.path.as_list()}"

    @strawberry.field
    def info_first(self, info: strawberry.Info, parent: strawberry.Parent[Person]) -> str:
        return f"{parent.name} at {info.path.as_list()}"

    @strawberry.field
    def parent_by_keyword(self, *, root: strawberry.Parent[Person]) -> str:
        return root.name

    @strawberry.field
    def fragile(self) -> str | None:
        if self.index % 3 == 1:
            raise ValueError(f"person {self.index} is fragile")
        return "fine"

    @strawberry.field
    def strict(self) -> str:
        return None if self.index % 4 == 2 else "ok"  # type: ignore[return-value]

    @strawberry.field
    async def later(self) -> int:
        await asyncio.sleep(0)
        return self.index * 10

    @strawberry.field
    def loaded(self, info: strawberry.Info) -> int:
        return info.context["loader"].load(self.index)

    @strawberry.field
    def greeting(self, prefix: str = "hi") -> str:
        return f"{prefix} {self.name}"

    @strawberry.field
    def friend(self) -> Person | None:
        return PEOPLE[(self.index + 1) % len(PEOPLE)] if self.index % 2 == 0 else None

    @strawberry.field
    def tags(self) -> list[Tag]:
        return [Tag(name=f"t{self.index}-{n}", weight=None if n else 0.5) for n in range(self.index % 3)]

    @strawberry.field
    def things(self) -> list[Thing]:
        return [Tag(name="tag", weight=1.0), self]


Thing = Annotated[Tag | Person, strawberry.union("Thing")]


def _person(index: int) -> Person:
    return Person(
        name=f"p{index}",
        index=index,
        mood=Mood.CALM if index % 2 else Mood.LOUD,
        nicknames=[f"n{index}", None],
        grid=[[index, index + 1], []],
    )


PEOPLE = [_person(index) for index in range(6)]


@strawberry.type
class Query:
    @strawberry.field
    def people(self) -> list[Person]:
        return PEOPLE

    @strawberry.field
    def named(self) -> list[Named]:
        return [PEOPLE[0], Tag(name="x", weight=2.0), PEOPLE[1]]

    @strawberry.field
    async def first(self) -> Person:
        return PEOPLE[0]


test_schema = strawberry.Schema(
    query=Query,
    types=[Tag, Person],
    extensions=[DjangoOptimizerExtension, ParsedDocuments],
    execution_context_class=Executor,
)


def _run(schema, query: str, context, lean_on: bool, django_settings) -> dict:
    django_settings.GRAPHQL_LEAN_COMPLETION = lean_on
    result = async_to_sync(schema.execute)(query, context_value=context())
    errors = sorted((error.message, tuple(error.path or ())) for error in result.errors or [])
    return {"data": result.data, "errors": errors}


def _test_context() -> dict:
    async def load(keys: list[int]) -> list[int]:
        return [key * 100 for key in keys]

    return {"loader": DataLoader(load_fn=load)}


def _both_ways(schema, query: str, context, django_settings) -> dict:
    general = _run(schema, query, context, False, django_settings)
    lean_way = _run(schema, query, context, True, django_settings)
    assert lean_way == general, query
    return lean_way


def _compiled_plans() -> int:
    return sum(entry[-1] is not None for entry in lean._plans.values())


def test_every_case_answers_as_the_general_way(settings):
    query = """
    query {
      people {
        __typename name index mood nicknames grid shout where fragile later loaded greeting
        hello: greeting(prefix: "hello") friend { name friend { name } } tags { name weight }
        things { __typename ... on Named { name } ... on Person { index } ... on Tag { weight } }
      }
      named { __typename name ... on Person { mood where } }
      first { name where tags { __typename name } }
    }"""
    answer = _both_ways(test_schema, query, _test_context, settings)
    assert answer["data"]["people"][0]["where"] == "Person:people.0.where"
    assert ("person 1 is fragile", ("people", 1, "fragile")) in answer["errors"]
    strict = _both_ways(test_schema, "{ people { name strict } }", _test_context, settings)
    assert strict["data"] is None  # a null in a non-null field nulls up to the non-null root field
    assert strict["errors"] == [
        ("Cannot return null for non-nullable field Person.strict.", ("people", 2, "strict"))
    ]


def test_resolvers_get_their_parent_and_info_whatever_their_parameters(settings):
    lean._plans.clear()
    lean._failures.clear()
    query = "{ people { parentName parentWhere infoFirst parentByKeyword friend { parentWhere } } }"
    answer = _both_ways(test_schema, query, _test_context, settings)
    assert answer["data"]["people"][2] == {
        "parentName": "p2 of 2",
        "parentWhere": "p2 at ['people', 2, 'parentWhere']",
        "infoFirst": "p2 at ['people', 2, 'infoFirst']",
        "parentByKeyword": "p2",
        "friend": {"parentWhere": "p3 at ['people', 2, 'friend', 'parentWhere']"},
    }
    assert not lean._failures and _compiled_plans() == 1


def test_selections_without_exceptions_are_compiled_and_used(settings):
    lean._plans.clear()
    query = "{ first { name shout where mood grid nicknames tags { name weight } things { __typename } } }"
    answer = _both_ways(test_schema, query, _test_context, settings)
    assert answer["errors"] == []
    assert _compiled_plans() >= 1


def test_skip_and_include_follow_the_variables(settings):
    query = "query ($yes: Boolean!) { people { name mood @include(if: $yes) shout @skip(if: $yes) } }"
    for yes in (True, False):
        settings.GRAPHQL_LEAN_COMPLETION = True
        result = async_to_sync(test_schema.execute)(query, variable_values={"yes": yes}, context_value={})
        assert not result.errors
        person = result.data["people"][0]
        assert ("mood" in person) is yes and ("shout" in person) is not yes


def test_an_awaitable_value_leaves_the_selection_to_the_general_way(settings):
    lean._plans.clear()
    query = "{ people { name loaded } }"
    first = _both_ways(test_schema, query, _test_context, settings)
    assert [person["loaded"] for person in first["data"]["people"]] == [i * 100 for i in range(6)]
    assert _compiled_plans() == 0  # the DataLoader's future was seen once: not tried again
    assert _both_ways(test_schema, query, _test_context, settings) == first


def test_a_selection_that_keeps_failing_is_left_to_the_general_way(settings):
    lean._plans.clear()
    query = "{ people { name fragile } }"
    answers = [_both_ways(test_schema, query, _test_context, settings) for _ in range(4)]
    assert all(answer == answers[0] for answer in answers)
    assert ("person 1 is fragile", ("people", 1, "fragile")) in answers[0]["errors"]
    assert _compiled_plans() == 0  # each gave up three times: none is tried again


TEST_SDL = str(test_schema)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
@given(data=st.data())
def test_generated_documents_answer_as_the_general_way(data):
    from django.conf import settings as django_settings

    query = data.draw(from_schema(TEST_SDL))
    before = django_settings.GRAPHQL_LEAN_COMPLETION
    try:
        _both_ways(test_schema, query, _test_context, django_settings)
    finally:
        django_settings.GRAPHQL_LEAN_COMPLETION = before


# --- The fast paths, and the values each must hand back to the general way --------------------------------


class Shout(str):
    """A str subclass: String returns it as it is; the exact-type check leaves it to the coercion."""


class Mark(IntEnum):
    ONE = 1


class Refused(Exception):  # noqa: N818
    """An exception held as a value: graphql-core raises it instead of coercing it with str()."""


class Labelled:
    def __str__(self) -> str:
        return "labelled"


class Soon:
    """Stands for a coroutine that returns `value`, made anew for each execution (one is awaited once)."""

    def __init__(self, value) -> None:
        self.value = value


async def _soon(value):
    return value


class Later:
    """An awaitable that is not a coroutine: String's coercion would write it out with str()."""

    def __init__(self, value) -> None:
        self.value = value

    def __await__(self):
        return _soon(self.value).__await__()


@strawberry.type
class Leaves:
    text: str | None = None
    ident: strawberry.ID | None = None
    count: int | None = None
    ratio: float | None = None
    flag: bool | None = None


# Each case: (the leaves' values, whether lean completion answers it itself: values it returns as they are or
# coerces; the others, errors or awaitables, are answered the general way).
LEAF_CASES = {
    "as they are": (
        [dict(text="a", ident="b", count=7, ratio=0.5, flag=True), dict(count=-(2**31), ratio=-0.0)],
        True,
    ),
    "coerced": (
        [
            dict(text=Shout("s"), ident=12, count=True, ratio=3, flag=0),
            dict(text=True, ident=3.0, count=Mark.ONE, ratio=Decimal("2.5"), flag=2.0),
            dict(text=Labelled(), ident=Labelled(), count=2.0, ratio=True, flag=Decimal(0)),
            dict(text=4.0, count=2**31 - 1, ratio=1e308, flag=False),
        ],
        True,
    ),
    "int out of range": ([dict(count=2**31)], False),
    "int below range": ([dict(count=-(2**31) - 1)], False),
    "float not finite": ([dict(ratio=float("nan")), dict(ratio=float("inf"))], False),
    "float not an int": ([dict(count=1.5)], False),
    "float not an id": ([dict(ident=1.5)], False),
    "text of a list": ([dict(text=["x"])], False),
    "an exception held": ([dict(text=Refused("refused text")), dict(ident=Refused("refused id"))], False),
    "an awaitable held": ([dict(text=Soon("later"), count=Soon(3))], False),
    "an awaitable object held": ([dict(text=Later("later"), ident=Later("id"))], False),
}


@strawberry.type
class Badge(relay.Node):
    code: relay.NodeID[str]
    label: str

    @classmethod
    def is_type_of(cls, obj, info) -> bool:
        return isinstance(obj, cls | BadgeRow)


class BadgeRow:
    """Not a Node, like a Django row handed to a Node type: `Node._id` asks the parent type how to read it."""

    def __init__(self, code, label: str) -> None:
        self.code, self.label = code, label


class OddBadge(Badge):
    """A node of a class with its own resolve_id: `Node._id` asks the node's class."""

    @classmethod
    def resolve_id(cls, root, *, info):
        return f"odd-{root.code}"


@strawberry.type
class Ticket(relay.Node):
    """Its own resolve_id: not the default, never compiled to the string."""

    number: relay.NodeID[int]

    @classmethod
    def resolve_id(cls, root, *, info):
        return f"no-{root.number}"


BADGE_CASES = {
    "nodes": ([Badge(code="a", label="A"), Badge(code="b:c", label="B")], True),
    "rows": ([BadgeRow("x", "X"), BadgeRow(5, "five"), BadgeRow(uuid.UUID(int=7), "uuid")], True),
    "a node with its own resolve_id": ([Badge(code="a", label="A"), OddBadge(code="o", label="O")], False),
    "a null id": ([BadgeRow("x", "X"), BadgeRow(None, "none")], False),
    "an awaitable id": ([BadgeRow(Soon("later"), "later")], False),
}


@strawberry.type
class Spot:
    """Neither an interface's nor a union's: no is_type_of, so completing it needs no info, but its `where`
    needs one, with the path down to it."""

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        return ".".join(str(key) for key in info.path.as_list())


@strawberry.type
class Holder:
    pal: Person | None  # an attribute read, not a resolver
    spots: list[Spot] = strawberry.field(default_factory=lambda: [Spot(), Spot()])
    home: Spot = strawberry.field(default_factory=Spot)


@strawberry.type
class FastQuery:
    @strawberry.field
    def leaves(self, case: str) -> list[Leaves]:
        return [Leaves(**values) for values in _fresh(LEAF_CASES[case][0])]

    @strawberry.field
    def badges(self, case: str) -> list[Badge]:
        return _fresh(BADGE_CASES[case][0], "code")

    @strawberry.field
    def tickets(self) -> list[Ticket]:
        return [Ticket(number=1), Ticket(number=2)]

    @strawberry.field
    def holders(self) -> list[Holder]:
        return [Holder(pal=PEOPLE[0]), Holder(pal=_soon(PEOPLE[1])), Holder(pal=None)]  # type: ignore[arg-type]

    @strawberry.field
    def spotted(self) -> list[Holder]:
        return [Holder(pal=None) for _ in range(3)]

    @strawberry.field
    def homeless(self) -> list[Holder | None]:
        return [Holder(pal=None), Holder(pal=None, home=None)]  # type: ignore[arg-type]

    @strawberry.field
    def people(self) -> list[Person]:
        return PEOPLE


def _fresh(cases: list, attribute: str | None = None) -> list:
    """The cases' values (dicts, or objects' `attribute`) with a new coroutine for each `Soon`."""

    def renewed(value):
        return _soon(value.value) if isinstance(value, Soon) else value

    if attribute is None:
        return [{key: renewed(value) for key, value in case.items()} for case in cases]
    fresh = []
    for item in cases:
        item = copy.copy(item)
        setattr(item, attribute, renewed(getattr(item, attribute)))
        fresh.append(item)
    return fresh


fast_schema = strawberry.Schema(
    query=FastQuery,
    types=[Badge, Ticket],
    extensions=[DjangoOptimizerExtension, ParsedDocuments],
    execution_context_class=Executor,
)


@pytest.mark.parametrize("case", list(LEAF_CASES))
def test_leaves_answer_as_the_general_way(settings, case):
    lean._plans.clear()
    lean._failures.clear()
    query = f'{{ leaves(case: "{case}") {{ text ident count ratio flag }} }}'
    _both_ways(fast_schema, query, dict, settings)
    answered_lean = LEAF_CASES[case][1]
    assert (not lean._failures and _compiled_plans() == 1) is answered_lean


def test_leaves_returned_as_they_are_keep_their_values(settings):
    answer = _both_ways(
        fast_schema, '{ leaves(case: "as they are") { text count ratio flag } }', dict, settings
    )
    assert answer["data"]["leaves"] == [
        {"text": "a", "count": 7, "ratio": 0.5, "flag": True},
        {"text": None, "count": -(2**31), "ratio": -0.0, "flag": None},
    ]


@pytest.mark.parametrize("case", list(BADGE_CASES))
def test_relay_ids_answer_as_the_general_way(settings, case):
    lean._plans.clear()
    lean._failures.clear()
    answer = _both_ways(fast_schema, f'{{ badges(case: "{case}") {{ id label }} }}', dict, settings)
    answered_lean = BADGE_CASES[case][1]
    assert (not lean._failures and _compiled_plans() == 1) is answered_lean
    if case == "rows":
        ids = [badge["id"] for badge in answer["data"]["badges"]]
        assert ids == [relay.to_base64("Badge", code) for code in ("x", 5, uuid.UUID(int=7))]


def test_a_type_with_its_own_resolve_id_calls_it(settings):
    lean._plans.clear()
    lean._failures.clear()
    answer = _both_ways(fast_schema, "{ tickets { id } }", dict, settings)
    assert answer["data"]["tickets"] == [{"id": relay.to_base64("Ticket", f"no-{n}")} for n in (1, 2)]
    assert not lean._failures and _compiled_plans() == 1  # compiled: its resolver called as Strawberry does


def test_an_awaitable_attribute_is_awaited_by_the_general_way(settings):
    lean._plans.clear()
    answer = _both_ways(fast_schema, "{ holders { pal { name } } }", dict, settings)
    assert answer["data"]["holders"] == [{"pal": {"name": "p0"}}, {"pal": {"name": "p1"}}, {"pal": None}]


def test_a_resolver_below_fields_without_infos_sees_its_path(settings):
    answer = _both_ways(fast_schema, "{ spotted { spots { where } } }", dict, settings)
    assert answer["data"]["spotted"][2]["spots"][1]["where"] == "spotted.2.spots.1.where"


def test_a_null_object_in_a_non_null_field_is_the_general_way_s_error(settings):
    answer = _both_ways(fast_schema, "{ homeless { home { where } } }", dict, settings)
    assert answer["data"]["homeless"] == [{"home": {"where": "homeless.0.home.where"}}, None]
    assert answer["errors"] == [
        ("Cannot return null for non-nullable field Holder.home.", ("homeless", 1, "home"))
    ]


class OwnAwaitable(Executor):
    """Its own is_awaitable: what lean completion takes as known of plain values may not hold."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.is_awaitable = lambda value: optimized_is_awaitable(value)


def test_an_executor_with_its_own_is_awaitable_completes_the_general_way(settings):
    lean._plans.clear()
    schema = strawberry.Schema(query=FastQuery, execution_context_class=OwnAwaitable)
    answer = _both_ways(
        schema, "{ people { name friend { name } } spotted { spots { where } } }", dict, settings
    )
    assert answer["errors"] == [] and answer["data"]["people"][0]["friend"] == {"name": "p1"}
    assert lean._plans == {}


# What a resolver sees of its info, but the execution's own objects (compared by identity below).
_PER_EXECUTION = ("context", "async_helpers")


def _infos_seen(schema, settings, lean_on: bool) -> tuple[list, dict]:
    settings.GRAPHQL_LEAN_COMPLETION = lean_on
    context = {"infos": []}
    query = "{ people { where friend { where } } }"
    result = async_to_sync(schema.execute)(query, context_value=context)
    assert not result.errors
    return context["infos"], context


class InfoSpy(Executor):
    """Builds each resolve info its own way: lean completion must ask it for every one."""

    def build_resolve_info(self, field_def, field_nodes, parent_type, path):
        info = super().build_resolve_info(field_def, field_nodes, parent_type, path)
        return info._replace(root_value=("built by the spy", path.as_list()))


@pytest.mark.parametrize("executor", [Executor, InfoSpy])
def test_resolvers_see_the_infos_graphql_core_builds(settings, executor):
    lean._plans.clear()
    schema = strawberry.Schema(
        query=FastQuery, extensions=[ParsedDocuments], execution_context_class=executor
    )
    general, general_context = _infos_seen(schema, settings, False)
    lean_way, lean_context = _infos_seen(schema, settings, True)
    assert _compiled_plans() >= 1
    assert len(lean_way) == len(general) == 9  # six people, three friends
    for mine, theirs in zip(lean_way, general, strict=True):
        assert type(mine) is type(theirs)
        for name in type(mine)._fields:
            if name == "context":
                assert getattr(mine, name) is lean_context and getattr(theirs, name) is general_context
            elif name == "async_helpers":
                assert type(getattr(mine, name)) is type(getattr(theirs, name))
            else:
                assert getattr(mine, name) == getattr(theirs, name), name


# --- The project's schema ----------------------------------------------------------------------------------

SDL = (Path(__file__).resolve().parents[2] / "graphql_schema" / "schema.graphql").read_text()
# The home screen as the benchmark reads it, and the cards' favorites flag too (an async field: that
# selection is left to the general way, the rest of the screen is compiled).
LEAN_HOME = (
    HOME.replace("query ($platform: Platform!, $appVersion: String!)", "query")
    .replace("$platform", "IOS")
    .replace("$appVersion", '"2.0"')
)


@pytest.fixture
def catalogue(settings):
    settings.TRENDS_SCREEN_CACHE_SECONDS = 0
    _screen(40)
    return User.objects.create_user(email="lean@example.com", password="x" * 12)


def _project_context(user):
    return lambda: Context(user=user)


@pytest.mark.django_db
def test_the_home_screen_answers_as_the_general_way(settings, catalogue):
    lean._plans.clear()
    for user in (None, catalogue):
        for query in (LEAN_HOME, LEAN_HOME.replace("viewerHasFavorited", "")):
            answer = _both_ways(project_schema, query, _project_context(user), settings)
            assert answer["errors"] == []
            sections = answer["data"]["homeScreen"]["sections"]
            assert sum(len(section.get("trends", [])) for section in sections) > 40
    assert _compiled_plans() >= 1


_project_examples = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.mark.django_db
def test_generated_project_documents_answer_as_the_general_way(settings, catalogue):
    @_project_examples
    @given(data=st.data())
    def check(data):
        query = data.draw(from_schema(SDL, fields=["homeScreen", "trends", "trend", "me", "wallet", "node"]))
        _both_ways(project_schema, query, _project_context(catalogue), settings)

    check()
