"""The document cache: parsed and validated once while cached, bounded by bytes, honest about cost."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any, ClassVar

import strawberry
from graphql import ASTValidationRule, ValidationContext, parse
from strawberry.extensions import AddValidationRules, MaxTokensLimiter

from service.graphql_documents import TOKEN_BYTES, CachedDocument, CachedDocuments, DocumentCache, token_count


class CountingRule(ASTValidationRule):
    """Counts validations (graphql-core makes one rule instance per validation)."""

    made: ClassVar[int] = 0

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        CountingRule.made += 1


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str = "world") -> str:
        return f"hello {name}"


def schema_with(cache: DocumentCache) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=2000),
            lambda: CachedDocuments(cache),
            lambda: AddValidationRules([CountingRule]),
        ],
    )


def run(schema: strawberry.Schema, query: str) -> Any:
    return asyncio.run(schema.execute(query))


def entry(cost: int) -> CachedDocument:
    return CachedDocument(parse("{ hello }"), cost=cost)


def test_the_cache_evicts_the_least_recently_used_to_stay_within_its_bytes() -> None:
    cache = DocumentCache(max_bytes=1000)
    cache.put("a", entry(400))
    cache.put("b", entry(400))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", entry(400))
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert cache.used_bytes == 800
    cache.put("huge", entry(1001))  # over the whole budget: not kept, nothing evicted for it
    assert cache.get("huge") is None
    assert len(cache) == 2
    assert cache.used_bytes == 800


def test_a_document_is_parsed_and_validated_once_while_cached() -> None:
    cache = DocumentCache(max_bytes=1_000_000)
    schema = schema_with(cache)
    before = CountingRule.made
    for _ in range(3):
        assert run(schema, "{ hello }").data == {"hello": "hello world"}
    assert CountingRule.made == before + 1
    assert len(cache) == 1
    assert run(schema, '{ hello(name: "you") }').data == {"hello": "hello you"}
    assert CountingRule.made == before + 2
    assert len(cache) == 2


def test_documents_that_fail_to_parse_get_the_usual_error_and_are_not_cached() -> None:
    cache = DocumentCache(max_bytes=1_000_000)
    schema = schema_with(cache)
    assert [error.message for error in run(schema, "{ hello ").errors] == [
        "Syntax Error: Expected Name, found <EOF>."
    ]
    tokens = run(schema, "{ " + "hello " * 2500 + "}")
    assert "more than 2000 tokens" in tokens.errors[0].message
    assert len(cache) == 0


def test_many_large_documents_never_grow_the_cache_past_its_budget() -> None:
    cache = DocumentCache(max_bytes=300_000)
    schema = schema_with(cache)
    for number in range(40):
        padded = "{ hello }" + f"# {number} " + "x" * 20_000
        assert run(schema, padded).data == {"hello": "hello world"}
        assert cache.used_bytes <= cache.max_bytes
    assert 0 < len(cache) < 40


def test_the_cost_of_an_entry_is_close_to_the_memory_its_document_holds() -> None:
    small = ["mutation Speak($input: GenerateSpeechInput!) { generateSpeech(input: $input) { job { id } } }"]
    large = [
        "{ " + " ".join(["__typename"] * 1990) + " }",
        '{ job(id: "' + "x" * 100_000 + '") { id } }',
        "{ " + " ".join(f"a{n}: viewer {{ id name createdAt }}" for n in range(30)) + " }",
    ]
    for query in small + large:
        tracemalloc.start()
        document = parse(query)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        estimate = len(query.encode()) + TOKEN_BYTES * token_count(document)
        assert estimate >= 0.9 * held, (query[:40], held, estimate)  # never much below: the bound holds
        if query in large:  # and not far above where it matters
            assert estimate <= 1.5 * held, (query[:40], held, estimate)
