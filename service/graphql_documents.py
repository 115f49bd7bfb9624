"""Parsed and validated GraphQL documents, cached within a byte budget.

Clients send the same few documents, so each is parsed and validated once. The cache is keyed by a
SHA-256 of the document's text (not the text itself) and bounded by the memory its documents hold,
estimated from their size and token count, so neither many documents nor large ones can grow it
past its budget. (The transports refuse documents over MAX_QUERY_BYTES before they get here:
service.graphql_decoding.)
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

TOKEN_BYTES = 600
"""Memory a parsed document holds per token beside its text (measured: 430-610 bytes; AST nodes,
tokens and locations)."""

Rules = tuple[type[ASTValidationRule], ...]


@dataclass(slots=True)
class CachedDocument:
    document: DocumentNode
    cost: int
    """Estimated bytes held: the text plus TOKEN_BYTES per token."""
    validated: tuple[Rules, list[GraphQLError]] | None = None
    """The validation rules it was checked with and the errors found (None: not validated yet)."""


class DocumentCache:
    """A least-recently-used map of documents whose estimated costs add up to at most max_bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[Hashable, CachedDocument] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> CachedDocument | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: CachedDocument) -> None:
        """Keep entry, evicting the least recently used until the budget holds (one over budget is
        not kept at all)."""
        if entry.cost > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.used_bytes -= previous.cost
            self._entries[key] = entry
            self.used_bytes += entry.cost
            while self.used_bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.used_bytes -= evicted.cost


def token_count(document: DocumentNode) -> int:
    """How many tokens the parser made (the document keeps them all, linked from its location)."""
    token = document.loc.start_token if document.loc is not None else None
    count = 0
    while token is not None:
        count += 1
        token = token.next
    return count


class CachedDocuments(SchemaExtension):
    """Parse and validate through a DocumentCache.

    Takes the place of strawberry's ParserCache and ValidationCache, which key by the full text and
    bound only the number of entries, and which raise a syntax error from their hook: over a
    WebSocket that escapes strawberry's error handling and is logged as a fault.
    """

    def __init__(self, cache: DocumentCache) -> None:
        super().__init__()
        self.cache = cache
        self.entry: CachedDocument | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        text = (context.query or "").encode("utf-8", "surrogatepass")
        key = (hashlib.sha256(text).digest(), tuple(sorted(context.parse_options.items())))
        entry = self.cache.get(key)
        if entry is None:
            try:
                document = parse(context.query or "", **context.parse_options)
            except Exception:  # strawberry parses it again and reports the error, on every transport
                yield
                return
            entry = CachedDocument(document, cost=len(text) + TOKEN_BYTES * token_count(document))
            self.cache.put(key, entry)
        self.entry = entry
        context.graphql_document = entry.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        entry = self.entry
        if entry is not None and context.graphql_document is entry.document:
            rules = context.validation_rules
            if entry.validated is None or entry.validated[0] != rules:
                entry.validated = (rules, validate_document(context.schema._schema, entry.document, rules))
            context.pre_execution_errors = list(entry.validated[1])
        yield
