"""What a GraphQL operation may cost, worked out before it runs, and the extension that refuses too much.

Each object the operation may return costs 1; a field declared expensive (``metadata={COST: n}``, e.g.
a signed downloadUrl) costs n each time it resolves; other scalars are free. A list multiplies what is
selected under it by its size: its `first` argument (a literal or a variable), else the `first` of
the connection it sits directly in (edges, nodes), else LIST_SIZE. Introspection is free: the schema's
size and the introspection depth rule bound it. @skip and @include are not evaluated (both branches
count), so the cost is an upper bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_composite_type,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import DocumentNode
from strawberry.extensions import SchemaExtension

COST = "cost"
"""The metadata key of a field's cost per resolution: ``@strawberry.field(metadata={COST: 10})``."""
LIST_SIZE = 20
"""What a list whose size the query does not set counts as (the default page size)."""
CODE = "QUERY_TOO_COSTLY"
STRAWBERRY_DEFINITION = "strawberry-definition"


def operation_cost(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any]
) -> int | None:
    """The cost of the document's operation; None when it cannot be known before execution (no such
    operation, or variables that do not fit: execution refuses those with its own errors)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    root = schema.get_root_type(operation.operation)
    coerced = get_variable_values(schema, operation.variable_definitions or (), dict(variables))
    if root is None or isinstance(coerced, list):
        return None
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    return _Costing(schema, fragments, coerced).selection(root, operation.selection_set, count=1, page=None)


class _Costing:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: VariableValues,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def selection(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode, *, count: int, page: int | None
    ) -> int:
        """The cost of selection_set on `count` objects of type parent; page: the `first` of the
        connection these fields belong to, if they do."""
        total = 0
        for parent_type, node in self._fields(parent, selection_set):
            field = parent_type.fields.get(node.name.value)
            if field is None:  # __typename, __schema, __type: introspection is free
                continue
            first = self._first(field, node)
            is_list = isinstance(get_nullable_type(field.type), GraphQLList)
            size = max(first if first is not None else page if page is not None else LIST_SIZE, 0)
            instances = count * size if is_list else count
            named = get_named_type(field.type)
            definition = field.extensions.get(STRAWBERRY_DEFINITION)
            metadata = getattr(definition, "metadata", None) or {}
            total += instances * int(metadata.get(COST, 1 if is_composite_type(named) else 0))
            if node.selection_set is not None and isinstance(named, GraphQLObjectType):
                inner_page = None if is_list else first  # a connection's `first` sizes its lists
                total += self.selection(named, node.selection_set, count=instances, page=inner_page)
        return total

    def _first(self, field: GraphQLField, node: FieldNode) -> int | None:
        """The field's `first` argument, from a literal, a variable or its default; None if it has none."""
        if "first" not in field.args:
            return None
        first = get_argument_values(field, node, self.variables).get("first")
        return first if isinstance(first, int) else None

    def _fields(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode
    ) -> Iterator[tuple[GraphQLObjectType, FieldNode]]:
        """The field nodes of selection_set with the type each is selected on, through fragments."""
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                yield parent, node
                continue
            if isinstance(node, FragmentSpreadNode):
                fragment = self.fragments.get(node.name.value)
                if fragment is None:
                    continue
                condition, inner = fragment.type_condition.name.value, fragment.selection_set
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else parent.name
                inner = node.selection_set
            else:
                continue
            target = self.schema.get_type(condition)
            yield from self._fields(target if isinstance(target, GraphQLObjectType) else parent, inner)


class CostLimit(SchemaExtension):
    """Refuse an operation that costs more than max_cost before it runs: QUERY_TOO_COSTLY, with the
    cost and the limit in the message and in extensions (cost, maxCost)."""

    def __init__(self, max_cost: int) -> None:
        self.max_cost = max_cost

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        operation = context.graphql_document
        assert operation is not None  # execution follows parsing and validation
        cost = operation_cost(
            context.schema._schema, operation, context.operation_name, context.variables or {}
        )
        if cost is not None and cost > self.max_cost:
            raise GraphQLError(
                f"this query may cost {cost}, over the limit of {self.max_cost}: ask for fewer items "
                "(first), fewer aliases or fewer expensive fields (downloadUrl)",
                extensions={"code": CODE, "cost": cost, "maxCost": self.max_cost},
            )
        yield
