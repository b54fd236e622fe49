"""Lean completion: a query's selection below a field, compiled once per document into plain Python steps.

graphql-core completes every field of every object the general way: it looks the field up, builds a
resolve info, runs the schema's per-field middleware, Strawberry's resolver wrapper and argument handling,
then dispatches on the field's type to complete the value. That costs about 10 us per field on this
machine; the home screen is about 1,100 fields, so without its response cache GraphQL cost half again what
a plain Django view building the same dicts costs (issue 13, `bench/trends_home.py`).

Here the selection under a field (its type and field nodes) is compiled once, the first time a document
runs, into nested closures that read each field and complete its value directly: an attribute read for a
field Strawberry resolves by attribute, a direct call of a resolver that takes only its parent and info,
a scalar's `coerce_output_value`, `is_type_of` / `resolve_type` where the types have them, and a resolve
info only for the fields whose resolver or type asks for one. The plans are kept per document (documents
are parsed once per text, `ParsedDocuments`), keyed by the field nodes' identity.

Each step does what graphql-core would with the fewest calls that give the same answer: a built-in
scalar's value of exactly its type is returned as the coercion would return it; a relay node's `id`, when
it is Strawberry's own over the default `resolve_id`, is the string `Node._id` and the ID scalar make,
without the GlobalID or an info; resolve infos are made from the execution's first (`lean_resolve_info`),
paths only where something below reads them; resolvers of the usual shapes are called positionally. A
home screen's 97 cards complete in about 1 ms of CPU this way (2 ms before these, 23 ms the general way).

A selection is compiled only when nothing in it depends on the request beyond its values:
- an operation that is a query, on a schema without exception handlers, whose only per-field middleware is
  strawberry-django's optimizer (it acts on querysets and managers only: a field whose value is one is
  left to the general way), and whose `is_awaitable` is graphql-core's or Strawberry's (what they say of
  plain values is taken as known);
- no directives anywhere in the selection (no @skip/@include/@defer/@stream: what is selected does not
  depend on variables) and no arguments on any field below the compiled one;
- every field either resolved by attribute (`is_basic_field`) or by a synchronous resolver without
  arguments or field extensions, on Strawberry's own field class (not a subclass with its own
  `get_result`, like strawberry-django's).

Anything unexpected while completing (a value that is awaitable, a queryset, an exception, a null in a
non-null position, an `is_type_of` that says no) abandons the lean step, and graphql-core completes the
same value the general way from the start, reporting errors with their paths as it always does. So results
and errors are graphql-core's own; only the cost differs. A selection whose values turn out awaitable (a
DataLoader) is not tried again, nor one that gave up three times (its resolvers ran twice those times).
`GRAPHQL_LEAN_COMPLETION=0` turns the whole thing off.
"""

from __future__ import annotations

import base64
import inspect
import operator
import threading
import uuid
from collections.abc import Callable, Iterator
from math import isfinite
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.manager import BaseManager
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import collect_subfields
from graphql.pyutils import Path
from graphql.pyutils import is_awaitable as default_is_awaitable
from graphql.type.scalars import (
    GRAPHQL_MAX_INT,
    GRAPHQL_MIN_INT,
    serialize_boolean,
    serialize_float,
    serialize_id,
    serialize_int,
    serialize_string,
)
from strawberry import relay
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info
from strawberry_django.optimizer import DjangoOptimizerExtension

# A step completes one value: step(executor, value, path, info) -> the completed value.
Step = Callable[[Any, Any, Any, Any], Any]


class _Abandon(Exception):  # noqa: N818 (control flow, never an error shown to anyone)
    """The lean step cannot complete this value; the general way does."""


class _Awaitable(_Abandon):
    """A value was awaitable: this selection is left to the general way from now on."""


class _Compiled(NamedTuple):
    step: Step
    needs_info: bool  # whether the step reads the resolve info of the field whose value it completes
    needs_path: bool  # whether the step reads the path (it builds resolve infos below it)


_MAX_PLANS = 2048
_plans: dict[tuple, tuple[Any, ...]] = {}  # key -> (nodes kept alive so their ids stay theirs, plan or None)
_plans_lock = threading.Lock()
_failures: dict[tuple, int] = {}  # plan key -> how many times its plan gave up (kept with the plan)
_MAX_FAILURES = 3
# Values the general way treats specially: the optimizer's querysets and managers, and an exception returned.
_GENERAL_WAY = (QuerySet, BaseManager, Exception)
# Values of these exact types are none of those, and not awaitable to either is_awaitable below.
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, list, tuple, dict})
_KNOWN_IS_AWAITABLE = (optimized_is_awaitable, default_is_awaitable)
_NOT_COMPILED = None


class LeanCompletion:
    """A graphql-core ExecutionContext mixin: `complete_value` runs the compiled plan where there is one."""

    _lean: bool | None = None

    def complete_value(self, return_type, field_details_list, info, path, result, position_context):
        if result is not None and (self._lean if self._lean is not None else self._lean_decide()):
            key = (return_type, *(details.node for details in field_details_list))
            key = tuple(map(id, key))
            entry = _plans.get(key)
            if entry is None:  # a scalar's completion is cheap already: plans are for selections
                plan = (
                    _compile(self, return_type, field_details_list) if _has_selection(return_type) else None
                )
                entry = _plan_store(key, field_details_list, return_type, plan)
            plan = entry[-1]
            if plan is not None:
                try:
                    return plan.step(self, result, path, info)
                except Exception as exc:  # noqa: BLE001 (the general way below completes it, reporting any error)
                    _plan_failed(key, field_details_list, return_type, at_once=isinstance(exc, _Awaitable))
        return super().complete_value(return_type, field_details_list, info, path, result, position_context)

    def _lean_decide(self) -> bool:
        strawberry_schema = getattr(self.schema, "_strawberry_schema", None)
        middlewares = self.middleware_manager.middlewares if self.middleware_manager else ()
        self._lean = bool(
            settings.GRAPHQL_LEAN_COMPLETION
            and self.operation.operation == OperationType.QUERY
            and strawberry_schema is not None
            and not getattr(strawberry_schema.schema_converter, "_exception_handler_specs", ())
            and all(isinstance(middleware, DjangoOptimizerExtension) for middleware in middlewares)
            and self.is_awaitable in _KNOWN_IS_AWAITABLE
        )
        return self._lean

    _lean_info_parts: tuple | None = None  # (the info class, its values after the path) once known

    def lean_resolve_info(self, head: tuple, field_def, nodes, parent_type, path):
        """`build_resolve_info(field_def, nodes, parent_type, path)`, whose `head` is (field name, nodes,
        return type, parent type). Strawberry's builds a named tuple of those, the path, and ten values that
        are the same for every field of an execution (the schema, the context...): once one is built, the
        others are that tuple with another head and path, made without the named tuple's `__new__` and ten
        attribute reads (a fifth of the cost of a field with a resolver that takes an info)."""
        parts = self._lean_info_parts
        if parts is not None:
            info_class, per_execution = parts
            return tuple.__new__(info_class, head + (path,) + per_execution)
        info = self.build_resolve_info(field_def, nodes, parent_type, path)
        if (
            type(self).build_resolve_info is StrawberryGraphQLCoreExecutionContext.build_resolve_info
            and getattr(type(info), "_fields", None) == _RESOLVE_INFO_FIELDS
            and all(mine is theirs for mine, theirs in zip((*head, path), info, strict=False))
        ):
            self._lean_info_parts = (type(info), tuple(info[len(head) + 1 :]))
        return info


# Strawberry's resolve info, field by field (`StrawberryGraphQLCoreExecutionContext.build_resolve_info`): the
# field's own four, the path, then the execution's.
_RESOLVE_INFO_FIELDS = (
    "field_name",
    "field_nodes",
    "return_type",
    "parent_type",
    "path",
    "schema",
    "fragments",
    "root_value",
    "operation",
    "variable_values",
    "context",
    "is_awaitable",
    "abort_signal",
    "async_helpers",
    "operation_extensions",
)


def _plan_failed(key: tuple, field_details_list, return_type, *, at_once: bool) -> None:
    """A plan that could not complete its value: the general way redoes that part, so a selection that keeps
    failing (an error every time, or awaitable values) is left to the general way after a few tries."""
    failures = _failures.get(key, 0) + 1
    _failures[key] = failures
    if at_once or failures >= _MAX_FAILURES:
        _plan_store(key, field_details_list, return_type, _NOT_COMPILED)


def _plan_store(key: tuple, field_details_list, return_type, plan: _Compiled | None) -> tuple:
    entry = (return_type, [details.node for details in field_details_list], plan)
    with _plans_lock:
        _plans[key] = entry
        while len(_plans) > _MAX_PLANS:
            _failures.pop(evicted := next(iter(_plans)), None)
            del _plans[evicted]
    return entry


def _compile(executor, type_, field_details_list) -> _Compiled | None:
    if is_leaf_type(_named(type_)) and not is_list_type(_nullable(type_)):
        return _leaf(type_)
    if is_non_null_type(type_) and is_object_type(type_.of_type):
        return _object(executor, type_.of_type, field_details_list, non_null=True)
    if is_non_null_type(type_):
        return _non_null(_compile(executor, type_.of_type, field_details_list))
    if is_list_type(type_):
        return _list(_compile(executor, type_.of_type, field_details_list))
    if is_abstract_type(type_):
        return _abstract(executor, type_, field_details_list)
    if is_object_type(type_):
        return _object(executor, type_, field_details_list)
    return None


def _non_null(inner: _Compiled | None) -> _Compiled | None:
    if inner is None:
        return None
    complete = inner.step

    def non_null(executor, value, path, info):
        completed = complete(executor, value, path, info) if value is not None else None
        if completed is None:
            raise _Abandon
        return completed

    return inner._replace(step=non_null)


def _list(inner: _Compiled | None) -> _Compiled | None:
    if inner is None:
        return None
    complete = inner.step
    needs_path = inner.needs_path

    def list_(executor, value, path, info):
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            raise _Abandon
        if not needs_path:
            return [complete(executor, item, None, info) for item in value]
        return [complete(executor, item, _path(path, index, None), info) for index, item in enumerate(value)]

    return inner._replace(step=list_)


def _path(prev, key, typename) -> Path:
    """Path(prev, key, typename), the same named tuple, made without its generated `__new__` (half the cost;
    a home screen makes three hundred)."""
    return tuple.__new__(Path, (prev, key, typename))


def _leaf(type_) -> _Compiled:
    """A scalar or enum, nullable or not (`_leaf_completer`)."""
    complete = _leaf_completer(type_)
    return _Compiled(lambda executor, value, path, info: complete(value), False, False)


def _abstract(executor, type_, field_details_list) -> _Compiled:
    by_runtime_type: dict[str, _Compiled | None] = {}

    def abstract(executor, value, path, info):
        if value is None:
            return None
        name = (type_.resolve_type or executor.type_resolver)(value, info, type_)
        if not isinstance(name, str):
            _discard(name)
            raise _Abandon
        try:
            compiled = by_runtime_type[name]
        except KeyError:
            runtime_type = executor.schema.get_type(name)
            valid = is_object_type(runtime_type) and executor.schema.is_sub_type(type_, runtime_type)
            compiled = _object(executor, runtime_type, field_details_list) if valid else None
            by_runtime_type[name] = compiled
        if compiled is None:
            raise _Abandon
        return compiled.step(executor, value, path, info)

    return _Compiled(abstract, True, True)  # the runtime types' fields are compiled when first seen


def _object(executor, type_, field_details_list, non_null: bool = False) -> _Compiled | None:
    """An object's selection; `non_null` for a non-null position (the object's own completion is never
    null: only a null value is refused)."""
    if any(_has_directives(details.node.selection_set, executor) for details in field_details_list):
        return None
    collected = collect_subfields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        executor.operation,
        type_,
        field_details_list,
        executor.hide_suggestions,
    )
    if collected.new_defer_usages or collected.forbidden_directive_instances:
        return None
    # Each field as (key, kind, a, b, as_is), in the order of the answer's keys:
    # _CONSTANT: `a` is the value (__typename);
    # _PLAIN_LEAF: an attribute read into a scalar or enum: b(a(source)), no path or info, or the value read
    #             itself where its type is `as_is` (`_RETURNED_AS_IS`: the check without b's call);
    # _FIELD: a(executor, source, path) completes it (`_field`).
    fields: list[tuple] = []
    for key, sub_details in collected.grouped_field_set.items():
        if any(
            details.defer_usage is not None
            or details.fragment_variable_values is not None
            or details.node.arguments
            for details in sub_details
        ):
            return None
        name = sub_details[0].node.name.value
        if name == "__typename":
            fields.append((key, _CONSTANT, type_.name, None, None))
            continue
        field_def = executor.schema.get_field(type_, name)
        if field_def is None:
            continue  # graphql-core leaves it out (validation refuses unknown fields before this)
        read = _reader(field_def, type_, executor.schema._strawberry_schema.config.info_class)
        if read is None:
            return None
        read_fn, read_needs_info, by_attribute = read
        leaf = _leaf_completer(field_def.type)
        if by_attribute and leaf is not None:
            fields.append((key, _PLAIN_LEAF, read_fn, leaf, _as_is_type(field_def.type)))
            continue
        completed = _compile(executor, field_def.type, sub_details)
        if completed is None:
            return None
        field = _field(type_, key, field_def, [details.node for details in sub_details], read, completed)
        fields.append((key, _FIELD, field, None, None))
    is_type_of = type_.is_type_of
    needs_path = any(kind is _FIELD and a.needs_path for _, kind, a, _, _ in fields)
    fields = [(key, kind, a.step if kind is _FIELD else a, b, as_is) for key, kind, a, b, as_is in fields]

    def object_(executor, value, path, info):
        if value is None:
            if non_null:
                raise _Abandon
            return None
        if is_type_of is not None:
            verdict = is_type_of(value, info)
            if verdict is not True:
                _discard(verdict)
                raise _Abandon
        out = {}
        for key, kind, a, b, as_is in fields:
            if kind is _PLAIN_LEAF:
                got = a(value)
                out[key] = got if type(got) is as_is else b(got)
            elif kind is _CONSTANT:
                out[key] = a
            else:
                out[key] = a(executor, value, path)
        return out

    return _Compiled(object_, is_type_of is not None, needs_path)


_PLAIN_LEAF, _CONSTANT, _FIELD = "plain leaf", "constant", "field"


class _Field(NamedTuple):
    step: Callable[[Any, Any, Any], Any]  # step(executor, source, the parent's path) -> the completed value
    needs_path: bool


def _field(parent_type, key: str, field_def, nodes: list, read: tuple, completed: _Compiled) -> _Field:
    """One field of an object that is not a plain leaf: its value read, handed back to the general way
    where graphql-core would treat it specially (an awaitable, an exception, a queryset), completed under
    its own path and resolve info where the read or the completion reads them."""
    read_fn, read_needs_info, by_attribute = read
    complete = completed.step
    needs_info = read_needs_info or completed.needs_info
    needs_path = needs_info or completed.needs_path
    parent_name = parent_type.name
    info_head = (nodes[0].name.value, nodes, field_def.type, parent_type)

    def field(executor, source, path):
        field_path = _path(path, key, parent_name) if needs_path else None
        info = (
            executor.lean_resolve_info(info_head, field_def, nodes, parent_type, field_path)
            if needs_info
            else None
        )
        got = read_fn(source) if by_attribute else read_fn(source, info)
        if type(got) not in _PLAIN_TYPES:
            if isinstance(got, _GENERAL_WAY):
                raise _Abandon
            if executor.is_awaitable(got):
                if not by_attribute:  # the general way calls the resolver again; an attribute is read again
                    _discard(got)
                raise _Awaitable
        return complete(executor, got, field_path, info)

    return _Field(field, needs_path)


def _leaf_completer(type_) -> Callable[[Any], Any] | None:
    """complete(value) for a scalar or enum field, nullable or not; None for any other type."""
    non_null = is_non_null_type(type_)
    leaf_type = type_.of_type if non_null else type_
    if not is_leaf_type(leaf_type):
        return None
    coerce = leaf_type.coerce_output_value

    def leaf(value):
        if value is None:
            if non_null:
                raise _Abandon
            return None
        if isinstance(value, Exception):  # graphql-core raises it (complete_value) rather than coerce it
            raise _Abandon
        if default_is_awaitable(value):  # graphql-core awaits it (a plain leaf is an attribute: not closed)
            raise _Awaitable
        completed = coerce(value)
        if completed is None or completed is Undefined:
            raise _Abandon
        return completed

    return _as_is_first(coerce, leaf)


# graphql-core's own coercions of String, ID and Boolean return a value of exactly this type unchanged.
_RETURNED_AS_IS = ((serialize_string, str), (serialize_id, str), (serialize_boolean, bool))


def _as_is_type(type_) -> type | None:
    """The type whose values the leaf type's coercion returns unchanged (`_RETURNED_AS_IS`), if any."""
    return _returned_as_is(_named(type_).coerce_output_value)


def _returned_as_is(coerce) -> type | None:
    return next((as_is for function, as_is in _RETURNED_AS_IS if function is coerce), None)


def _as_is_first(coerce, leaf: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`leaf` behind a check for the values graphql-core's built-in coercions return unchanged: a str for
    String or ID, a bool for Boolean, an int in the 32-bit range for Int, a finite float for Float (each
    exactly that type: a subclass, an enum or a numpy number goes the full way). The check costs a tenth of
    the coercion's isinstance chain, and most leaves on a screen are such values."""
    as_is = _returned_as_is(coerce)
    if as_is is not None:

        def exact_type(value):
            return value if type(value) is as_is else leaf(value)

        return exact_type
    if coerce is serialize_int:

        def int_in_range(value):
            if type(value) is int and GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT:
                return value
            return leaf(value)

        return int_in_range
    if coerce is serialize_float:

        def finite_float(value):
            return value if type(value) is float and isfinite(value) else leaf(value)

        return finite_float
    return leaf


def _reader(field_def, parent_type, info_class) -> tuple[Callable[..., Any], bool, bool] | None:
    """How to read the field's value from its parent: (read, whether it needs the info, whether it is an
    attribute read: read(source), else read(source, info)), or None when only Strawberry's general resolver
    path reads it correctly. A relay node's `id` counts as an attribute read (`_relay_id`)."""
    field = field_def.extensions.get("strawberry-definition")
    if (
        not isinstance(field, StrawberryField)
        or type(field).get_result is not StrawberryField.get_result
        or field.extensions
        or field_def.args
    ):
        return None
    resolver = field.base_resolver
    if resolver is None:
        if not getattr(field_def.resolve, "_is_default", False):
            return None
        if field.default_resolver is getattr:
            return operator.attrgetter(field.python_name), False, True
        default_resolver, python_name = field.default_resolver, field.python_name
        return (lambda source: default_resolver(source, python_name)), False, True
    if resolver.is_async or resolver.arguments or inspect.isasyncgenfunction(resolver.wrapped_func):
        return None
    relay_id = _relay_id(field_def, resolver, parent_type)
    if relay_id is not None:
        return relay_id, False, True
    return _resolver_call(field, resolver, info_class)


_NODE_ID_RESOLVER = relay.Node.__dict__["_id"].__func__
# Exact types of ids that are neither coroutines nor generators and have no `__await__`: what
# `inspect.isawaitable` says of them without asking (its last check is an ABC's, a third of an id's cost).
_NOT_AWAITABLE_IDS = frozenset({str, int, uuid.UUID})
# The Node class methods `Node._id` reads the id through: a class that overrides one goes the general way.
_NODE_ID_METHODS = ("resolve_id", "resolve_id_attr", "resolve_typename")


def _relay_id(field_def, resolver, parent_type) -> Callable[[Any], str] | None:
    """read(source) -> the string graphql-core answers for a relay node's `id` when it is Strawberry's own
    `Node._id` over the default `resolve_id`, `resolve_id_attr` and `resolve_typename`: the base64 of
    "<type name>:<str(the NodeID attribute)>", as `Node._id` builds a GlobalID and the ID scalar completes it
    with `str`. Without the info, the GlobalID and the resolver call: a third of a home screen card's cost.
    A source that is itself a node of a class with its own methods, a null id or an awaitable one: the
    general way (it answers that id, or the resolver's error)."""
    if getattr(resolver.wrapped_func, "__func__", None) is not _NODE_ID_RESOLVER:
        return None
    if _named(field_def.type).coerce_output_value is not serialize_id:
        return None
    definition = parent_type.extensions.get("strawberry-definition")
    origin_id_attr = _default_node_id_attr(getattr(definition, "origin", None))
    if origin_id_attr is None:
        return None
    type_name = parent_type.name  # what the default resolve_typename reads: the field path's type name
    id_attr_by_class: dict[type, str | None] = {}

    def relay_id(source):
        # Node._id: a node's own class decides how its id is read, anything else the parent type's.
        if isinstance(source, relay.Node):
            node_class = source.__class__
            if node_class not in id_attr_by_class:
                id_attr_by_class[node_class] = _default_node_id_attr(node_class)
            id_attr = id_attr_by_class[node_class]
            if id_attr is None:
                raise _Abandon
        else:
            id_attr = origin_id_attr
        node_id = getattr(source, id_attr)
        if node_id is None:
            raise _Abandon
        if type(node_id) not in _NOT_AWAITABLE_IDS and inspect.isawaitable(node_id):
            raise _Awaitable  # not closed: the general way reads the same attribute and awaits it
        return base64.b64encode(f"{type_name}:{str(node_id)}".encode()).decode()

    return relay_id


def _default_node_id_attr(cls) -> str | None:
    """The attribute Strawberry's default `resolve_id` reads a node's id from, for a Node class that keeps
    the default methods `Node._id` calls; None for any other class."""
    if not (isinstance(cls, type) and issubclass(cls, relay.Node)):
        return None
    for name in _NODE_ID_METHODS:
        default = getattr(relay.Node, name).__func__
        if getattr(getattr(cls, name, None), "__func__", None) is not default:
            return None
    try:
        return cls.resolve_id_attr()
    except Exception:  # noqa: BLE001 (no NodeID, or two: the general way raises Strawberry's error)
        return None


def _resolver_call(field, resolver, info_class) -> tuple[Callable[[Any, Any], Any], bool, bool]:
    """The resolver called as Strawberry calls it (`get_arguments`): the parent as `self`, as its root or
    parent parameter, and Strawberry's Info wrapping graphql-core's where it asks for one. The usual shapes,
    `def f(self, root: Parent)` and `def f(self, root: Parent, info: Info)`, are called with positional
    arguments, which bind to the same parameters (a third of the call's cost is the keywords)."""
    func = resolver.wrapped_func
    with_self = resolver.self_parameter is not None
    parent_names = tuple(
        dict.fromkeys(p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None)
    )
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    shape = _positional_shape(func, resolver)
    if shape == ("self", "parent"):

        def call(source, info):
            return func(source, source)

    elif shape == ("self", "parent", "info") and info_class is Info:

        def call(source, info):
            return func(source, source, Info(info, field))

    else:

        def call(source, info):
            kwargs = dict.fromkeys(parent_names, source)
            if info_name is not None:
                kwargs[info_name] = info_class(_raw_info=info, _field=field)
            return func(source, **kwargs) if with_self else func(**kwargs)

    return call, info_name is not None, False


def _positional_shape(func, resolver) -> tuple[str, ...] | None:
    """What the function's parameters are, in order ("self", "parent", "info"), when each is an ordinary
    positional-or-keyword one Strawberry fills; None otherwise (keyword-only ones, anything else)."""
    roles = {
        parameter.name: role
        for role, parameter in (
            ("self", resolver.self_parameter),
            ("parent", resolver.parent_parameter),
            ("parent", resolver.root_parameter),
            ("info", resolver.info_parameter),
        )
        if parameter is not None
    }
    try:
        parameters = inspect.signature(func, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is not p.POSITIONAL_OR_KEYWORD or p.name not in roles for p in parameters):
        return None
    return tuple(roles[p.name] for p in parameters)


def _has_directives(selection_set: SelectionSetNode | None, executor, seen: set | None = None) -> bool:
    seen = set() if seen is None else seen
    for node in _selections(selection_set):
        if node.directives:
            return True
        if isinstance(node, FieldNode | InlineFragmentNode):
            if _has_directives(node.selection_set, executor, seen):
                return True
        elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
            seen.add(node.name.value)
            fragment = executor.fragments.get(node.name.value)
            definition = getattr(fragment, "definition", fragment)
            if definition is None or definition.directives:
                return True
            if _has_directives(definition.selection_set, executor, seen):
                return True
    return False


def _selections(selection_set: SelectionSetNode | None) -> Iterator[Any]:
    return iter(selection_set.selections) if selection_set is not None else iter(())


def _has_selection(type_) -> bool:
    return not is_leaf_type(_named(type_))


def _nullable(type_):
    return type_.of_type if is_non_null_type(type_) else type_


def _named(type_):
    while hasattr(type_, "of_type"):
        type_ = type_.of_type
    return type_


def _discard(value: Any) -> None:
    if inspect.iscoroutine(value):
        value.close()


class ParsedDocuments(SchemaExtension):
    """Parses each distinct document text once per process: the parse is skipped (about 0.3 ms for a
    home screen; 0.2-0.3 ms of a createGeneration) and the document's nodes stay the same objects, which the
    lean plans are keyed by. graphql-core never changes a document, so requests share it. A text that fails
    to parse is parsed again (and fails again, answered by Strawberry). The parse options (the token limit)
    are part of the key."""

    MAX_DOCUMENTS = 512
    _documents: dict[tuple, Any] = {}
    _lock = threading.Lock()

    def on_parse(self):
        context = self.execution_context
        key = (context.query, tuple(sorted(context.parse_options.items())))
        known = self._documents.get(key) if context.graphql_document is None and context.query else None
        if known is not None:
            context.graphql_document = known
        yield
        if known is None and context.graphql_document is not None and context.query:
            with self._lock:
                self._documents[key] = context.graphql_document
                while len(self._documents) > self.MAX_DOCUMENTS:
                    del self._documents[next(iter(self._documents))]
