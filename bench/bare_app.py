"""The production app plus a bare strawberry endpoint at /bare, for bench/enqueue.py's baseline.

`/bare` answers `mutation { ping }` with a constant: no auth, no database, no extensions, so it
measures what uvicorn + FastAPI + the app's middleware + strawberry cost on their own, in the same
server processes as /graphql. Serve with `uvicorn bench.bare_app:create --factory --workers N`.
"""

from __future__ import annotations

import strawberry
from fastapi import FastAPI
from strawberry.fastapi import GraphQLRouter

from service.app import create_app


@strawberry.type
class Query:
    @strawberry.field
    def ok(self) -> bool:
        return True


@strawberry.type
class Mutation:
    @strawberry.mutation
    def ping(self) -> int:
        return 1


bare_schema = strawberry.Schema(query=Query, mutation=Mutation)


def create() -> FastAPI:
    """service.app.create_app() with the bare schema mounted at /bare."""
    app = create_app()
    app.include_router(GraphQLRouter[object, None](bare_schema), prefix="/bare")
    return app
